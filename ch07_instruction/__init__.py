"""Chapter 7, instruction fine-tuning: the data and prompt styles, batches with masked targets, batched KV-cache generation, offline scores and an optional judge."""
from . import instruction as _instruction
from .instruction import *  # noqa: F401,F403

__all__ = [*_instruction.__all__]
