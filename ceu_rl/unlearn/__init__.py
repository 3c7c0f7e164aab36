"""Unlearning with any objective of `ceu_rl.objectives` (GA, GradDiff, NPO, SimNPO, CE-U, CE-U+retain, KL, IdkDPO,
CE-U-IdkDPO, WGA, WTNPO, SatImp, UNDIAL, RMU), optionally sharpness-aware or weight-averaged (`sam`); UNDO after any of them
(`undo`: noise a copy of the unlearned model, then distil the unlearned model into it)."""

from .unlearn_config import OBJECTIVES, UnlearnConfig
from .undo import DistillDataset, UndoTrainer, shrink_and_perturb
from .undo_config import UndoConfig
from .unlearn_trainer import UnlearnTrainer

__all__ = ["OBJECTIVES", "DistillDataset", "UndoConfig", "UndoTrainer", "UnlearnConfig", "UnlearnTrainer",
           "shrink_and_perturb"]
