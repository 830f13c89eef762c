"""Appendix A, PyTorch in one sitting: device choice, an MLP, toy data and a training loop."""
from .pytorch_basics import *  # noqa: F401,F403
from .pytorch_basics import __all__  # noqa: F401
