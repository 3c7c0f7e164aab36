"""Drop-in TRL trainers: change one import, keep everything else of TRL."""

from .ceu_dpo_config import CEUDPOConfig
from .ceu_dpo_trainer import CEUDPOTrainer
from .ceu_grpo_config import CEUGRPOConfig
from .ceu_grpo_trainer import CEUGRPOTrainer

__all__ = ["CEUDPOConfig", "CEUDPOTrainer", "CEUGRPOConfig", "CEUGRPOTrainer"]
