"""UNDO on mini-TOFU (issue 32): unlearned teachers at their operating points (and the full model), noised copies
distilled with forward KL on the retain model's own training data, judged by utility, forget prob and the attack
study's relearning protocol, against compute as a fraction of the retain model's (docs/undo/README.md)."""

import logging

logging.getLogger("vllm").setLevel(logging.ERROR)  # as experiments.attacks: before anything imports TRL
