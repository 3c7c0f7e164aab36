"""One seam for every CE-U counterpart: a per-token log-prob with the same value and a reweighted gradient.

Each CE-U counterpart so far (CE-U-DPO's rejected tokens, CE-U-GRPO's negative-advantage tokens) keeps a method's
loss and only changes the gradient of log pi on the tokens being pushed down: w * grad log pi, w = p / (1 - p) for
CE-U (or a variant's weight). Feeding `reweighted_logprobs(l, w)` to an unchanged TRL loss body does exactly that.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_same_shape
from .linear_ce_u import linear_ce_u_loss
from .logprob_form import _MIN_ONE_MINUS_P

# CE-U-GRPO's choices of what negative-advantage tokens get (see `negative_token_weight` and CEUGRPOConfig).
NEGATIVE_OBJECTIVES = ("pg", "ceu_full", "ceu_min", "ceu_prefix", "ceu_mix")


def reweighted_logprobs(logprobs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""sg(l) + w (l - sg(l)): the value of `logprobs` (bit for bit) whose gradient is `weight` * grad l.

    Any loss f(l) computed from it has the value f(l) and the gradient f'(l) w grad l. With w = p / (1 - p) on a
    token pushed down by gradient ascent (f' > 0 on log pi in the loss), the push becomes CE-U's: grad -log(1 - p) =
    w grad log p (CE-U paper, arXiv 2503.01224, Sec. 5). `weight` is treated as a constant; w = 1 leaves a token
    as it is.
    """
    check_same_shape("weight", weight, "logprobs", logprobs)
    frozen = logprobs.detach()
    return frozen + weight.detach().to(logprobs.dtype) * (logprobs - frozen)


def ce_u_weight(logprobs: torch.Tensor, min_one_minus_p: float | None = None) -> torch.Tensor:
    r"""w = p / (1 - p) per token from log p (no gradient): CE-U's gradient is w grad log p.

    1 - p is -expm1(log p), floored at 1e-6 (float32) / 1e-12 (float64) as in `ce_u_loss_from_logprobs`, so w is
    capped (~1e6 in float32) instead of inf when log p rounds to 0. Returned in the dtype of `logprobs`.
    """
    cdtype = torch.float64 if logprobs.dtype == torch.float64 else torch.float32
    floor = _MIN_ONE_MINUS_P[cdtype] if min_one_minus_p is None else float(min_one_minus_p)
    with torch.no_grad():
        logp = logprobs.detach().to(cdtype).clamp(max=0.0)
        return (torch.exp(logp) / (-torch.expm1(logp)).clamp(min=floor)).to(logprobs.dtype)


def exact_ce_u_logprobs(logprobs: torch.Tensor, ce_u_mask: torch.Tensor, hidden: torch.Tensor,
                        head_weight: torch.Tensor, labels: torch.Tensor, head_bias: torch.Tensor | None = None,
                        temperature: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    r"""`logprobs` (value bit for bit) whose gradient on the `ce_u_mask` tokens is scale * CE-U's, computed exactly.

    `reweighted_logprobs(l, w)` gives w grad l, and grad l comes from TRL's fused head, whose backward forms the
    label's logit gradient as 1 - exp(l) in float32: its error ~ err(l) / (1 - p) relative is the same as that of
    w = p / -expm1(l), so an exact w alone does not make the product exact (measured: at 1 - p = 1e-6 both are off by
    ~100%). Here the gradient on the masked tokens comes from `linear_ce_u_loss` instead (masked log-sum-exp, logit
    gradient p - q = w (e_y - p) exactly): sg(l) + scale (c - sg(c)), c = CE-U of those tokens' logits
    (hidden @ head_weight.T + head_bias) / temperature. Elsewhere l is returned unchanged. Cost: one chunked head
    forward and backward over the masked tokens only.

    hidden: the (..., H) hidden states that produced `logprobs` (in the autograd graph), labels: the scored tokens.
    """
    check_same_shape("ce_u_mask", ce_u_mask, "logprobs", logprobs)
    check_same_shape("labels", labels, "logprobs", logprobs)
    mask = ce_u_mask.bool()
    if not bool(mask.any()):
        return logprobs
    ceu = linear_ce_u_loss(hidden[mask] * (1.0 / temperature), head_weight, labels[mask],
                           bias=None if head_bias is None else head_bias * (1.0 / temperature), reduction="none")
    carrier = torch.zeros(logprobs.shape, dtype=ceu.dtype, device=ceu.device).masked_scatter(mask, ceu - ceu.detach())
    return torch.where(mask, logprobs.detach() + (scale * carrier).to(logprobs.dtype), logprobs)


def divergence_from_positives(completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                              advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""Per completion: the first position where it differs from every positive-advantage completion of its group.

    Completions come in groups of `group_size` consecutive rows (TRL's GRPO layout before shuffling). For row i,
    d_i = max over rows j of i's group with A_j > 0 of the length of the common prefix of i and j (counting positions
    where both are unpadded and equal): tokens t < d_i of completion i are shared, context and token, with some
    positive completion; t >= d_i are its own. 0 when the group has no positive completion. Returns (B,) long.
    """
    if completion_ids.dim() != 2 or completion_ids.shape != completion_mask.shape:
        raise ValueError(f"completion_ids {tuple(completion_ids.shape)} and completion_mask "
                         f"{tuple(completion_mask.shape)} must both be (B, T).")
    batch, length = completion_ids.shape
    if group_size < 1 or batch % group_size:
        raise ValueError(f"group_size={group_size} must divide the batch size {batch} (num_generations).")
    advantages = advantages.reshape(batch, -1)[:, 0]  # (B,) or (B, T) with one value per completion
    ids = completion_ids.reshape(-1, group_size, 1, length)
    valid = completion_mask.bool().reshape(-1, group_size, 1, length)
    same = (ids == ids.transpose(1, 2)) & valid & valid.transpose(1, 2)  # (groups, i, j, T)
    common_prefix = same.long().cumprod(dim=-1).sum(dim=-1)  # (groups, i, j)
    positive = (advantages > 0).reshape(-1, 1, group_size)
    return torch.where(positive, common_prefix, torch.zeros_like(common_prefix)).amax(dim=-1).reshape(batch)


def negative_token_weight(objective: str, logprobs: torch.Tensor, advantages: torch.Tensor,
                          divergence_index: torch.Tensor | None = None, ceu_mix_lambda: float = 0.5) -> torch.Tensor:
    r"""Gradient weight w per token for CE-U-GRPO's `negative_objective` (1 where A >= 0; no gradient).

    On tokens of negative-advantage completions (A < 0), with p = exp(log pi(token)):

        "pg"          w = 1                      TRL's policy gradient: logit push (1 - p)
        "ceu_full"    w = p / (1 - p)            CE-U: logit push p
        "ceu_min"     w = min(1, p / (1 - p))    logit push min(p, 1 - p): CE-U below p = 1/2, PG above
        "ceu_prefix"  w = 1 for t < d, p / (1 - p) for t >= d,  d = `divergence_from_positives` of the completion
        "ceu_mix"     w = (1 - lambda) + lambda p / (1 - p),  lambda = `ceu_mix_lambda` in [0, 1] (`ceu_mix_weight`)

    (the logit push is the size of the gradient on the token's own logit, |A| r times it.)
    """
    if objective not in NEGATIVE_OBJECTIVES:
        raise ValueError(f"negative_objective={objective!r}: use one of {NEGATIVE_OBJECTIVES}.")
    advantages = torch.as_tensor(advantages, device=logprobs.device).expand_as(logprobs)
    if objective == "pg":
        return torch.ones_like(logprobs)
    if objective == "ceu_mix":
        from .token_weights import ceu_mix_weight

        return torch.where(advantages < 0, ceu_mix_weight(logprobs, ceu_mix_lambda), torch.ones_like(logprobs))
    weight = ce_u_weight(logprobs)
    if objective == "ceu_min":
        weight = weight.clamp(max=1.0)
    elif objective == "ceu_prefix":
        if divergence_index is None:
            raise ValueError("negative_objective='ceu_prefix' needs divergence_index (divergence_from_positives).")
        position = torch.arange(logprobs.shape[-1], device=logprobs.device)
        weight = torch.where(position < divergence_index.reshape(-1, 1), torch.ones_like(weight), weight)
    return torch.where(advantages < 0, weight, torch.ones_like(weight))


def ce_u_token_mask(objective: str, logprobs: torch.Tensor, advantages: torch.Tensor,
                    divergence_index: torch.Tensor | None = None) -> torch.Tensor:
    """Where `negative_token_weight(objective, ...)` is CE-U's p / (1 - p) (bool, logprobs' shape): A < 0 and, for
    "ceu_min", p < 1/2 (w < 1), for "ceu_prefix", t >= d. All False for "pg". Not defined for "ceu_mix" (a blend,
    not CE-U's weight on any token)."""
    if objective not in NEGATIVE_OBJECTIVES or objective == "ceu_mix":
        raise ValueError(f"negative_objective={objective!r}: use one of {NEGATIVE_OBJECTIVES[:-1]}.")
    negative = torch.as_tensor(advantages, device=logprobs.device).expand_as(logprobs) < 0
    if objective == "pg":
        return torch.zeros_like(negative)
    if objective == "ceu_min":
        return negative & (logprobs.detach() < -math.log(2.0))
    if objective == "ceu_prefix":
        if divergence_index is None:
            raise ValueError("negative_objective='ceu_prefix' needs divergence_index (divergence_from_positives).")
        position = torch.arange(logprobs.shape[-1], device=logprobs.device)
        return negative & (position >= divergence_index.reshape(-1, 1))
    return negative
