"""`python -m ch06_classification`: fine-tune a classifier and classify texts (see ch06_classification/cli.py and --help)."""
from ch06_classification.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
