"""Chapter 3: causal self-attention and multi-head attention (see ch03.ipynb)."""
from .attention import *  # noqa: F401,F403
from .attention import __all__  # noqa: F401
