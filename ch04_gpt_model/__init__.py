"""Chapter 4, implementing a GPT model: GPTConfig, the GPT-2 building blocks, GPTModel, generation and a KV cache."""
from .gpt_model import *  # noqa: F401,F403
from .gpt_model import __all__  # noqa: F401
