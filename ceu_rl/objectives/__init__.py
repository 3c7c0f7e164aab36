"""Pure loss functions: CE-U, the unified CE/CE-U loss, the unlearning baselines and CE-U's siblings (WGA, WTNPO,
SatImp, UNDIAL, RMU), forward-KL distillation (UNDO). No trainer code here."""

from .distillation import forward_kl_loss
from .dpo_weights import dpo_positive_penalty, rejected_ce_u_mask, rejected_token_weight, shared_prefix_mask
from .exact_weights import label_log_odds, log_one_minus_p
from .linear_ce_u import linear_ce_u_loss, linear_unified_loss_and_logprobs
from .logprob_form import ce_u_loss_from_logprobs, unified_cross_entropy_from_logprobs
from .policy_gradient_losses import ceu_grpo_token_loss, grpo_token_loss
from .preference_losses import ceu_dpo_loss, dpo_loss
from .reweighted_logprobs import (
    ce_u_token_mask,
    ce_u_weight,
    divergence_from_positives,
    exact_ce_u_logprobs,
    negative_token_weight,
    reweighted_logprobs,
)
from .sequence_losses import npo_loss, simnpo_loss
from .sibling_losses import (
    rmu_activation_loss,
    rmu_control_vector,
    satimp_loss,
    satimp_weight,
    undial_loss,
    wga_loss,
    wga_weight,
    wtnpo_loss,
)
from .token_losses import ce_u_loss, gradient_ascent_loss, reference_kl_loss, unified_cross_entropy
from .token_weights import (
    advantage_reweighting_weight,
    ceu_mix_weight,
    clip_cov_weight,
    positive_token_weight,
    shared_negative_token_weight,
    sibling_negative_weight,
)

__all__ = [
    "advantage_reweighting_weight",
    "ce_u_loss",
    "ce_u_loss_from_logprobs",
    "ce_u_token_mask",
    "ce_u_weight",
    "ceu_dpo_loss",
    "ceu_grpo_token_loss",
    "ceu_mix_weight",
    "clip_cov_weight",
    "divergence_from_positives",
    "dpo_loss",
    "dpo_positive_penalty",
    "exact_ce_u_logprobs",
    "forward_kl_loss",
    "gradient_ascent_loss",
    "grpo_token_loss",
    "label_log_odds",
    "linear_ce_u_loss",
    "linear_unified_loss_and_logprobs",
    "log_one_minus_p",
    "negative_token_weight",
    "npo_loss",
    "positive_token_weight",
    "reference_kl_loss",
    "rejected_ce_u_mask",
    "rejected_token_weight",
    "reweighted_logprobs",
    "rmu_activation_loss",
    "rmu_control_vector",
    "satimp_loss",
    "satimp_weight",
    "shared_negative_token_weight",
    "shared_prefix_mask",
    "sibling_negative_weight",
    "simnpo_loss",
    "undial_loss",
    "unified_cross_entropy",
    "unified_cross_entropy_from_logprobs",
    "wga_loss",
    "wga_weight",
    "wtnpo_loss",
]
