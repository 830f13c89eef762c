"""`python -m ch07_instruction`: fine-tune, answer, evaluate and chat (see ch07_instruction/cli.py and --help)."""
from ch07_instruction.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
