"""Drop-in TRL trainers: change one import, keep everything else of TRL."""

from .ceu_dpo_config import CEUDPOConfig
from .ceu_dpo_trainer import CEUDPOTrainer

__all__ = ["CEUDPOConfig", "CEUDPOTrainer"]
