"""Mini-TOFU: finetune a tiny Llama on TOFU, unlearn it with every objective over seeds and learning rates, evaluate
with the TOFU metrics along the way, and report mean / sd / per seed with the forget-quality vs utility picture."""

import logging

# TRL imports vLLM when it is installed, and vLLM warns at import time (e.g. "Triton is installed, but ..."): one
# line per job on the terminal needs its logger quiet before anything imports it. This package's __init__ runs
# first in the main process and in every spawned worker (they import experiments.mini_tofu.jobs).
logging.getLogger("vllm").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # peft imports it: its CPU backend warns about `kernels`

from .config import MATCHED_LR, OBJECTIVES, MiniTofuConfig, full_preset, main_preset  # noqa: E402
from .run import run  # noqa: E402

__all__ = ["MATCHED_LR", "OBJECTIVES", "MiniTofuConfig", "full_preset", "main_preset", "run"]
