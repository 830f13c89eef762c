"""`python -m ch05_pretraining`: pretrain a GPT model on a text file (see ch05_pretraining/cli.py and --help)."""
from ch05_pretraining.cli import exit_process, main

if __name__ == "__main__":
    exit_process(main())
