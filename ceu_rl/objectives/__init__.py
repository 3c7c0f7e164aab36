"""Pure loss functions: CE-U, the unified CE/CE-U loss, and the unlearning baselines. No trainer code here."""

from .exact_weights import log_one_minus_p
from .linear_ce_u import linear_ce_u_loss
from .logprob_form import ce_u_loss_from_logprobs, unified_cross_entropy_from_logprobs
from .policy_gradient_losses import ceu_grpo_token_loss, grpo_token_loss
from .preference_losses import ceu_dpo_loss, dpo_loss
from .reweighted_logprobs import (
    ce_u_weight,
    divergence_from_positives,
    exact_ce_u_logprobs,
    negative_token_weight,
    reweighted_logprobs,
)
from .sequence_losses import npo_loss, simnpo_loss
from .token_losses import ce_u_loss, gradient_ascent_loss, reference_kl_loss, unified_cross_entropy

__all__ = [
    "ce_u_loss",
    "ce_u_loss_from_logprobs",
    "ce_u_weight",
    "ceu_dpo_loss",
    "ceu_grpo_token_loss",
    "divergence_from_positives",
    "dpo_loss",
    "exact_ce_u_logprobs",
    "gradient_ascent_loss",
    "grpo_token_loss",
    "linear_ce_u_loss",
    "log_one_minus_p",
    "negative_token_weight",
    "npo_loss",
    "reference_kl_loss",
    "reweighted_logprobs",
    "simnpo_loss",
    "unified_cross_entropy",
    "unified_cross_entropy_from_logprobs",
]
