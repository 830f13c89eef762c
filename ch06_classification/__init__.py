"""Chapter 6, fine-tuning for classification: the SMS spam data, a class head, pooling, the classifier's loss and accuracy, and LoRA."""
from . import classification as _classification
from . import lora as _lora
from .classification import *  # noqa: F401,F403
from .lora import *  # noqa: F401,F403

__all__ = [*_classification.__all__, *_lora.__all__]
