"""The attack study (issue 24): mini-TOFU's unlearned models at their operating points, re-judged by open-unlearning's
privacy metrics, leak@k, relearning and quantization, 5 seeds, the full and retain models as reference points."""

import logging

logging.getLogger("vllm").setLevel(logging.ERROR)  # as experiments.mini_tofu: before anything imports TRL
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
