"""Chapter 5, pretraining: losses, the training loop, decoding, checkpoints, the fast path, and OpenAI's GPT-2 weights."""
from .gpt2_weights import *  # noqa: F401,F403
from .gpt2_weights import __all__ as _weights_all
from .pretraining import *  # noqa: F401,F403
from .pretraining import __all__ as _pretraining_all

__all__ = [*_pretraining_all, *_weights_all]
