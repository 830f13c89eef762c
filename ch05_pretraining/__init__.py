"""Chapter 5, pretraining: load OpenAI's GPT-2 weights into GPTModel and save models in the same format."""
from .gpt2_weights import *  # noqa: F401,F403
from .gpt2_weights import __all__  # noqa: F401
