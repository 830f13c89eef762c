"""Chapter 7, instruction fine-tuning: the data and prompt styles, batches with masked targets, batched KV-cache generation, offline scores, an optional judge, and preference tuning (DPO)."""
from . import dpo as _dpo
from . import instruction as _instruction
from .dpo import *  # noqa: F401,F403
from .instruction import *  # noqa: F401,F403

__all__ = [*_instruction.__all__, *_dpo.__all__]
