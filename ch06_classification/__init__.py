"""Chapter 6, fine-tuning for classification: the SMS spam data, a class head, pooling, and the classifier's loss and accuracy."""
from .classification import *  # noqa: F401,F403
from .classification import __all__  # noqa: F401
