"""TOFU on a real pretrained model (SmolLM2-135M-Instruct from `ceu_rl.models`), sized for a CPU: finetune it on 6
TOFU authors, unlearn forget01's two with the library's objectives over seeds, evaluate with TOFU's metrics."""

import logging

logging.getLogger("vllm").setLevel(logging.ERROR)  # as experiments.mini_tofu: one line per job
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
