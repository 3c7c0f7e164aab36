"""CE-U from per-token log-prob and entropy: what TRL's fused LM head returns, with no B x T x V logits."""

from __future__ import annotations

import torch

from ._checks import check_reduction, check_same_shape, reduce

# Floor on 1 - p_y (so a cap on the weight w = p/(1 - p)) per compute dtype; see the docstring.
_MIN_ONE_MINUS_P = {torch.float32: 1e-6, torch.float64: 1e-12}


def ce_u_loss_from_logprobs(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    min_one_minus_p: float | None = None,
) -> torch.Tensor:
    r"""CE-U per token from log p_y (with gradient) and the entropy H of p (treated as a constant).

    With p = p_y, q_k = p_k / (1 - p) for k != y:

        value     CE(q, p) = (H + p log p) / (1 - p)
        gradient  w * grad(log p),  w = p / (1 - p) held constant,

    which on the logits is w (e_y - p) = p (e_y - q), the same as `ce_u_loss` (CE-U paper, arXiv 2503.01224). 1 - p is
    computed as -expm1(log p) and floored at ``min_one_minus_p`` (default 1e-6 in float32, 1e-12 in float64), so w is
    capped at about 1/min_one_minus_p and nothing becomes inf when log p rounds to 0.

    Precision (float32): log p itself carries an absolute error of about 1e-5 at V = 32k (the rounding of the
    log-sum-exp), and both w and the value divide by 1 - p, so their relative error is about 1e-5 / (1 - p): measured
    ~3% at 1 - p = 1e-3 and ~13% at 1 - p = 1e-5. These confident tokens are where CE-U's weight is largest. In
    float64 the two forms agree to ~1e-10 wherever p < 1 - 1e-6. Use `ce_u_loss` on full logits where exactness at
    p -> 1 matters more than memory; bf16/fp16 inputs are computed in float32.

    Args:
        logprobs: log p_y per token, any shape, differentiable.
        entropy: entropy of the next-token distribution, same shape (its gradient is not used).
        mask: bool tensor of the same shape, True where the token counts (default: all).
        reduction, num_items_in_batch: as in `ce_u_loss`.
    """
    check_reduction(reduction)
    if not isinstance(logprobs, torch.Tensor) or not logprobs.is_floating_point():
        raise ValueError("logprobs must be a floating-point tensor of per-token log-probabilities.")
    check_same_shape("entropy", entropy, "logprobs", logprobs)
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    check_same_shape("mask", mask, "logprobs", logprobs)
    mask = mask.to(torch.bool)

    cdtype = torch.float64 if logprobs.dtype == torch.float64 else torch.float32
    logp = logprobs.to(cdtype)
    floor = _MIN_ONE_MINUS_P[cdtype] if min_one_minus_p is None else float(min_one_minus_p)
    with torch.no_grad():
        _check_logprobs_and_entropy(logp, entropy, mask)
        logp_c = logp.clamp(max=0.0)
        p = torch.exp(logp_c)
        one_minus_p = (-torch.expm1(logp_c)).clamp(min=floor)
        weight = p / one_minus_p
        # H + p log p = -sum_{k != y} p_k log p_k >= 0; rounding can make it slightly negative
        value = (entropy.to(cdtype) + p * logp_c).clamp(min=0.0) / one_minus_p
    # value + w * (log p - sg(log p)): forward gives the value, backward gives w * grad(log p)
    per_token = value + weight * (logp - logp.detach())
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    return reduce(per_token, mask, reduction, num_items_in_batch)


def _check_logprobs_and_entropy(logp: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor) -> None:
    """NaN in, NaN out would be silent here (the value is built from clamped copies): name the bad input instead.
    Only valid (masked-in) positions are checked, so padding may hold anything."""
    def first(bad):
        return tuple(int(i) for i in bad.nonzero()[0].tolist())

    bad = mask & torch.isnan(logp)
    if bool(bad.any()):
        raise ValueError(f"logprobs is NaN at valid position {first(bad)}: the model's forward produced NaN (e.g. an "
                         "fp16 overflow, or a diverged run); mask padding out with `mask` rather than filling it with "
                         "NaN.")
    bad = mask & (logp > 1e-4)
    if bool(bad.any()):
        raise ValueError(f"logprobs must be <= 0 (log-probabilities), got {logp[bad][0].item():.4g} at valid position "
                         f"{first(bad)}: pass log p(token) (e.g. log_softmax(logits).gather(...)), not logits or p.")
    bad = mask & ~torch.isfinite(entropy)
    if bool(bad.any()):
        raise ValueError(f"entropy is {entropy[bad][0].item()} at valid position {first(bad)}: pass the entropy of the "
                         "next-token distribution (finite, >= 0) at every position that `mask` counts.")


def unified_cross_entropy_from_logprobs(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    unlearn_mask: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""`unified_cross_entropy` from per-token log p_y and entropy: -log p_y (CE) where ``unlearn_mask`` is False,
    CE-U (as `ce_u_loss_from_logprobs`, same precision notes) where True. One loss for learning and unlearning."""
    check_reduction(reduction)
    check_same_shape("unlearn_mask", unlearn_mask, "logprobs", logprobs)
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    check_same_shape("mask", mask, "logprobs", logprobs)
    mask = mask.to(torch.bool)
    unlearn_mask = unlearn_mask.to(torch.bool)
    ceu = ce_u_loss_from_logprobs(logprobs, entropy, mask & unlearn_mask, reduction="none")
    cdtype = ceu.dtype
    ce = torch.where(mask & ~unlearn_mask, -logprobs.to(cdtype), torch.zeros_like(ceu))
    return reduce(torch.where(unlearn_mask, ceu, ce), mask, reduction, num_items_in_batch)
