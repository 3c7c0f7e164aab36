"""Pure loss functions: CE-U, the unified CE/CE-U loss, and the unlearning baselines. No trainer code here."""

from .logprob_form import ce_u_loss_from_logprobs
from .sequence_losses import npo_loss, simnpo_loss
from .token_losses import ce_u_loss, gradient_ascent_loss, unified_cross_entropy

__all__ = [
    "ce_u_loss",
    "ce_u_loss_from_logprobs",
    "gradient_ascent_loss",
    "npo_loss",
    "simnpo_loss",
    "unified_cross_entropy",
]
