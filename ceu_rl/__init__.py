"""ceu-rl: RL-alignment and unlearning objectives built on CE-U (Cross Entropy Unlearning), for TRL."""

from __future__ import annotations

import importlib

from .objectives import (
    ce_u_loss,
    ce_u_loss_from_logprobs,
    gradient_ascent_loss,
    linear_ce_u_loss,
    npo_loss,
    simnpo_loss,
    unified_cross_entropy,
)

__version__ = "0.2.0.dev0"  # the one place: pyproject.toml reads it, CITATION.cff and CHANGELOG.md follow (tested)

# Trainers import TRL (seconds): loaded on first use, so `import ceu_rl` for the objectives stays light.
_LAZY = {
    "CEUDPOConfig": "ceu_rl.trainers",
    "CEUDPOTrainer": "ceu_rl.trainers",
    "CEUGRPOConfig": "ceu_rl.trainers",
    "CEUGRPOTrainer": "ceu_rl.trainers",
    "UnlearnConfig": "ceu_rl.unlearn",
    "UnlearnTrainer": "ceu_rl.unlearn",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ceu_rl' has no attribute {name!r}")


__all__ = [
    "ce_u_loss",
    "ce_u_loss_from_logprobs",
    "gradient_ascent_loss",
    "linear_ce_u_loss",
    "npo_loss",
    "simnpo_loss",
    "unified_cross_entropy",
    *_LAZY,
]
