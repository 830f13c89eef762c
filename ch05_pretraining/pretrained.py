"""load_pretrained: OpenAI's GPT-2 weights, else the chapter-5 substitute model. (Being moved here from cli.py.)"""
from ch05_pretraining.cli import load_pretrained  # noqa: F401  (temporary: the move to this module is in progress)
