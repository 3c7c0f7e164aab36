"""Mini-TOFU: finetune a tiny Llama on TOFU, unlearn it with every objective over seeds and learning rates, evaluate
with the TOFU metrics along the way, and report mean / sd / per seed with the forget-quality vs utility picture."""

from .config import MATCHED_LR, OBJECTIVES, MiniTofuConfig, full_preset, main_preset
from .run import run

__all__ = ["MATCHED_LR", "OBJECTIVES", "MiniTofuConfig", "full_preset", "main_preset", "run"]
