"""GRPO's per-token clipped surrogate and its CE-U counterpart (inputs: per-token log-probs, no logits)."""

from __future__ import annotations

import torch

from ._checks import check_same_shape
from .logprob_form import ce_u_loss_from_logprobs


def _ratio(logprobs, old_logprobs):
    return torch.exp(logprobs - old_logprobs.detach())


def grpo_token_loss(logprobs, old_logprobs, advantages, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                    delta: float | None = None) -> torch.Tensor:
    r"""Per-token GRPO/PPO surrogate, as TRL computes it: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A),
    r = exp(log pi - log pi_old), r capped at `delta` when set (two-sided clipping). Shao et al., "DeepSeekMath"
    (arXiv 2402.03300). `advantages` broadcast over tokens ((B, 1) or (B, T)). Returns (B, T), not aggregated.

    For A < 0 its gradient, where not clipped (r >= 1 - eps_low, and r <= delta), is |A| r grad log pi(token):
    gradient ascent on the sampled token.
    """
    ratio = _ratio(logprobs, old_logprobs)
    if delta is not None:
        ratio = torch.clamp(ratio, max=delta)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    return -torch.min(ratio * advantages, clipped * advantages)


def ceu_grpo_token_loss(logprobs, entropy, old_logprobs, advantages, epsilon_low: float = 0.2,
                        epsilon_high: float = 0.2, delta: float | None = None) -> torch.Tensor:
    r"""CE-U-GRPO per token: TRL's surrogate where A >= 0; where A < 0

        |A| sg(r) 1[r >= 1 - eps_low] CE-U(token)        (with `delta`: 1[1 - eps_low <= r <= delta])

    the indicator being the region where the clipped surrogate has a gradient. The gradient ascent |A| r grad log pi
    becomes |A| r w grad log pi with w = p/(1 - p) held constant (CE-U from log-prob and entropy; CE-U paper,
    arXiv 2503.01224, Sec. 5). Returns (B, T), not aggregated. `CEUGRPOTrainer` gets the same gradient by feeding
    `reweighted_logprobs` to TRL's loss body (`negative_objective="ceu_full"`); this value form is for analysis.
    """
    check_same_shape("entropy", entropy, "logprobs", logprobs)
    advantages = torch.as_tensor(advantages, dtype=logprobs.dtype, device=logprobs.device).expand_as(logprobs)
    positive = grpo_token_loss(logprobs, old_logprobs, advantages, epsilon_low, epsilon_high, delta)
    with torch.no_grad():
        ratio = _ratio(logprobs, old_logprobs)
        active = ratio >= 1 - epsilon_low
        if delta is not None:
            active &= ratio <= delta
        weight = advantages.abs() * ratio * active
    ceu = ce_u_loss_from_logprobs(logprobs, entropy.detach(), reduction="none")
    return torch.where(advantages < 0, weight * ceu, positive)
