"""CE-U's siblings: unlearning objectives built on the same per-token observation (WGA, WTNPO, SatImp, UNDIAL) and
the representation-level RMU. Pure functions on per-token log-probs, logits or activations; no trainer code.

All token-level members but UNDIAL with a frozen teacher are gradient ascent with a per-token weight w(p) held
constant: loss w log p_y, logit gradient w (e_y - p), push on the label's logit w (1 - p_y). The weight is what
differs: WGA p^beta, SatImp p^beta1 (1 - p)^beta2, WTNPO 2 p^(beta + alpha) / (p^beta + p_ref^beta), CE-U
p / (1 - p) (analysis/DERIVATIONS.md, Sec. 10). Means are over valid (mask True) tokens, as in the papers.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_logits_labels, check_reduction, check_same_shape, reduce


def _check_min(name: str, value: float, minimum: float = 0.0, what: str = "") -> None:
    if not float(value) >= minimum:
        raise ValueError(f"{name}={value} is out of range: use a value >= {minimum}{what}.")


def _logprob_inputs(logprobs: torch.Tensor, mask: torch.Tensor | None, name: str = "logprobs"):
    if not isinstance(logprobs, torch.Tensor) or not logprobs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of per-token log-probabilities (log p of the label).")
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    check_same_shape("mask", mask, name, logprobs)
    return mask.to(torch.bool)


def _weighted_log_p(logprobs, weight, mask, reduction, num_items_in_batch):
    """sum or mean over valid tokens of sg(w) log p: gradient ascent with the per-token weight w."""
    check_reduction(reduction)
    per_token = weight.detach().to(logprobs.dtype) * logprobs
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    return reduce(per_token, mask, reduction, num_items_in_batch)


def wga_weight(logprobs: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    r"""WGA's per-token weight w = p^beta = exp(beta log p) (no gradient). beta >= 0; 0 gives w = 1 (GA)."""
    _check_min("beta", beta, what=" (WGA's exponent: 0 is gradient ascent, 1 open-unlearning's default)")
    with torch.no_grad():
        return torch.exp(beta * logprobs.detach().clamp(max=0.0))


def satimp_weight(logprobs: torch.Tensor, beta1: float = 5.0, beta2: float = 1.0) -> torch.Tensor:
    r"""SatImp's per-token weight w = p^beta1 (1 - p)^beta2 (no gradient), 1 - p as -expm1(log p) (no cancellation).
    beta1, beta2 >= 0."""
    _check_min("beta1", beta1, what=" (SatImp's saturation exponent, 5 in the paper's code and open-unlearning)")
    _check_min("beta2", beta2, what=" (SatImp's importance exponent: open-unlearning 1, the authors' README 0.1)")
    with torch.no_grad():
        logp = logprobs.detach().clamp(max=0.0)
        return torch.exp(beta1 * logp) * (-torch.expm1(logp)) ** beta2


def wga_loss(logprobs: torch.Tensor, mask: torch.Tensor | None = None, beta: float = 1.0, reduction: str = "mean",
             num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    r"""Weighted Gradient Ascent: mean over valid tokens of sg(p^beta) log p_y (minimised: pushes p_y down).

    The logit gradient is p^beta (e_y - p): gradient ascent's times p^beta, a push p^beta (1 - p_y) on the label,
    which removes GA's "inverse confidence" term (grad log p = grad p / p) at beta = 1 (gradient of p itself).
    Wang, Zhou, Zhou, Shin, Han, Weinberger, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
    Beyond" (ICLR 2025, arXiv 2502.19301); formula as in the authors' code (tmlr-group/G-effect) and open-unlearning's
    `compute_wga_loss` (beta 1.0 in its WGA.yaml; the authors' code defaults to 5). ``logprobs``: log p_y per token
    with gradient (any shape), ``mask``: valid tokens (default all); reduction as in `ce_u_loss`.
    """
    mask = _logprob_inputs(logprobs, mask)
    return _weighted_log_p(logprobs, wga_weight(logprobs, beta), mask, reduction, num_items_in_batch)


def satimp_loss(logprobs: torch.Tensor, mask: torch.Tensor | None = None, beta1: float = 5.0, beta2: float = 1.0,
                reduction: str = "mean", num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    r"""SatImp: mean over valid tokens of sg(p^beta1 (1 - p)^beta2) log p_y.

    Logit gradient p^beta1 (1 - p)^beta2 (e_y - p), label push p^beta1 (1 - p)^(1 + beta2): "saturation" (p^beta1,
    low weight on tokens already unlikely) times "importance" ((1 - p)^beta2). Yang, Wang, Huang, Liu, Zhang, Han,
    "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning" (ICML 2025, arXiv 2505.11953); formula as in
    the authors' code (tmlr-group/SatImp, `satimp`) and open-unlearning's `compute_satimp_loss`. Defaults beta1 = 5,
    beta2 = 1 (open-unlearning's SatImp.yaml); the authors' README recommends beta2 = 0.1.
    """
    mask = _logprob_inputs(logprobs, mask)
    return _weighted_log_p(logprobs, satimp_weight(logprobs, beta1, beta2), mask, reduction, num_items_in_batch)


def wtnpo_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor | None = None,
               beta: float = 4.0, alpha: float = 1.5, reduction: str = "mean",
               num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    r"""Weighted token-wise NPO: mean over valid tokens of sg(w) log p_y, w = 2 p^(beta + alpha) / (p^beta +
    p_ref^beta), p_ref the frozen reference model's probability of the same token.

    alpha = 0 is TNPO (NPO's weight 2 pi^beta / (pi^beta + pi_ref^beta) per token instead of per sequence); alpha
    adds WGA's p^alpha. Same paper as `wga_loss` (arXiv 2502.19301); formula and defaults (beta 4, alpha 1.5) from
    the authors' code (tmlr-group/G-effect, `wtnpo_*`), computed in log space (their +1e-5 in the denominator is
    dropped: w stays finite as both probabilities -> 0). ``ref_logprobs``: the reference's log p_y (no gradient).
    """
    mask = _logprob_inputs(logprobs, mask)
    check_same_shape("ref_logprobs", ref_logprobs, "logprobs", logprobs)
    _check_min("beta", beta, what=" (WTNPO's NPO temperature, 4 in the authors' code)")
    _check_min("alpha", alpha, what=" (WTNPO's extra exponent, 1.5 in the authors' code; 0 is TNPO)")
    with torch.no_grad():
        logp = logprobs.detach().clamp(max=0.0).to(torch.float64)
        ref = ref_logprobs.detach().clamp(max=0.0).to(torch.float64)
        weight = torch.exp(math.log(2.0) + (beta + alpha) * logp - torch.logaddexp(beta * logp, beta * ref))
    return _weighted_log_p(logprobs, weight, mask, reduction, num_items_in_batch)


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float = 10.0,
                ignore_index: int = -100, reduction: str = "mean",
                num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    r"""UNDIAL: self-distillation to the frozen teacher's distribution with the label's logit lowered by beta.

    Per valid position, target t = softmax(sg(z_ref) - beta e_y) and loss CE(t, p) = -sum_k t_k log p_k; logit
    gradient p - t. With the current model as teacher (z_ref = z, the first step) t_y = p_y e^-beta / (1 - s p_y),
    s = 1 - e^-beta, and the gradient is p_y (1 - p_y) s / (1 - s p_y) (e_y - q): CE-U's direction, CE-U's push p_y
    until 1 - p_y ~ e^-beta; beta = inf gives t = the teacher without y, i.e. CE-U with the frozen model as teacher
    (`ce_u_loss` when z_ref = z). Dong, Lin, Belkin, Huerta, Vulic, "UNDIAL: Self-Distillation with Adjusted Logits
    for Robust Unlearning in Large Language Models" (NAACL 2025, arXiv 2402.10052); beta 10 as in open-unlearning's
    UNDIAL.yaml. Differs from open-unlearning's `compute_undial_loss`, which averages over every position (prompt
    and padding included) and, at ignored positions, lowers the logit of token V - 100 (the label -100 used as an
    index): here only valid positions count, the mean is over them, as the paper's loss over the forget tokens.

    Args: logits / ref_logits (..., V) (no shift inside; the teacher without gradient), labels (...) with
    ``ignore_index``, beta >= 0 (float("inf") allowed). Computed in float32 (float64 stays float64).
    """
    check_reduction(reduction)
    check_logits_labels(logits, labels, ignore_index)
    check_same_shape("ref_logits", ref_logits, "logits", logits)
    _check_min("beta", beta, what=" (UNDIAL's logit penalty: 10 in open-unlearning, 3 to 30 in its grid)")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    valid = labels != ignore_index
    label = torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(-1)
    ref = ref_logits.detach().to(dtype)
    lowered = ref.gather(-1, label) - beta  # -inf for beta = inf
    target = torch.softmax(ref.scatter(-1, label, lowered), dim=-1)
    logp = torch.log_softmax(logits.to(dtype), dim=-1)
    per_token = -torch.where(target > 0, target * logp, torch.zeros_like(logp)).sum(-1)
    per_token = torch.where(valid, per_token, torch.zeros_like(per_token))
    return reduce(per_token, valid, reduction, num_items_in_batch)


def rmu_control_vector(hidden_size: int, steering_coeff: float, seed: int = 0) -> torch.Tensor:
    r"""RMU's target c u: u a random unit vector with i.i.d. uniform [0, 1) entries before normalising (the WMDP
    paper's and code's), drawn from a torch.Generator seeded with `seed`; c = `steering_coeff` > 0. float32 (H,)."""
    if int(hidden_size) < 1:
        raise ValueError(f"hidden_size={hidden_size} must be >= 1.")
    _check_min("steering_coeff", steering_coeff, 1e-12, " (RMU's c: 2 in open-unlearning's TOFU config)")
    u = torch.rand(int(hidden_size), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)
    return float(steering_coeff) * u / u.norm()


def rmu_activation_loss(activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""RMU's activation distance: (1 / B') sum_b (1 / L_b) sum_{t: mask[b, t]} mean_d (h[b, t, d] - target[b, t, d])^2.

    Forget term: target = c u (broadcast), pushing layer-l activations on forget text toward a scaled random
    vector; retain term: target = the frozen model's layer-l activations on retain text. Li et al., "The WMDP
    Benchmark: Measuring and Reducing Malicious Use With Unlearning" (arXiv 2403.03218, Sec. 5): per-sequence token
    mean, then the mean over sequences, as in the paper and open-unlearning's `compute_activation_loss` (B' = rows
    with at least one valid token; open-unlearning divides by 0 for an empty row). The squared distance is averaged
    over the hidden dimension d (the authors' WMDP code and open-unlearning use `mse_loss`), where the paper writes
    the squared L2 norm: a constant factor 1/d on both terms, which Adam's update does not see (except through eps).

    Args: activations (B, T, H), target broadcastable to it, mask (B, T) bool (e.g. answer tokens). Computed in
    float32 (float64 stays float64).
    """
    if activations.dim() != 3:
        raise ValueError(f"activations must be (batch, tokens, hidden), got shape {tuple(activations.shape)}.")
    check_same_shape("mask", mask, "activations[..., 0]", activations[..., 0])
    dtype = torch.float64 if activations.dtype == torch.float64 else torch.float32
    mask = mask.to(torch.bool)
    sq = (activations.to(dtype) - target.detach().to(dtype)).pow(2).mean(-1)
    per_row = torch.where(mask, sq, torch.zeros_like(sq)).sum(-1)
    count = mask.sum(-1)
    rows = count > 0
    per_row = torch.where(rows, per_row / count.clamp(min=1).to(dtype), torch.zeros_like(per_row))
    return per_row.sum() / rows.sum().clamp(min=1).to(dtype)
