"""Chapter 5, pretraining: losses, the training loop, decoding, checkpoints, the fast path, faster-training levers, and OpenAI's GPT-2 weights."""
from .fast_training import *  # noqa: F401,F403
from .fast_training import __all__ as _fast_all
from .gpt2_weights import *  # noqa: F401,F403
from .gpt2_weights import __all__ as _weights_all
from .pretraining import *  # noqa: F401,F403
from .pretraining import __all__ as _pretraining_all
from .train_loop import *  # noqa: F401,F403
from .train_loop import __all__ as _loop_all

__all__ = [*_pretraining_all, *_loop_all, *_fast_all, *_weights_all]
