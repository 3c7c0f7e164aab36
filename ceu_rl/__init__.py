"""ceu-rl: RL-alignment and unlearning objectives built on CE-U (Cross Entropy Unlearning), for TRL."""

__version__ = "0.1.0"

from .objectives import (  # noqa: E402
    ce_u_loss,
    ce_u_loss_from_logprobs,
    gradient_ascent_loss,
    npo_loss,
    simnpo_loss,
    unified_cross_entropy,
)

__all__ = [
    "ce_u_loss",
    "ce_u_loss_from_logprobs",
    "gradient_ascent_loss",
    "npo_loss",
    "simnpo_loss",
    "unified_cross_entropy",
]
