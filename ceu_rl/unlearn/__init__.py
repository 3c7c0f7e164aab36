"""Unlearning with any objective of `ceu_rl.objectives` (GA, GradDiff, NPO, SimNPO, CE-U, CE-U+retain, KL, IdkDPO,
CE-U-IdkDPO, WGA, WTNPO, SatImp, UNDIAL, RMU), optionally sharpness-aware or weight-averaged (`sam`)."""

from .unlearn_config import OBJECTIVES, UnlearnConfig
from .unlearn_trainer import UnlearnTrainer

__all__ = ["OBJECTIVES", "UnlearnConfig", "UnlearnTrainer"]
