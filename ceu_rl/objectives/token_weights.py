"""Per-token gradient weights of the GRPO family (the field's fixes), applied through the `reweighted_logprobs` seam.

Each function returns a weight w per token (no gradient): the loss keeps its value and the gradient of log pi on the
token becomes w * grad log pi. CE-U's own weights (p / (1 - p) and its variants) are in `reweighted_logprobs.py`.
"""

from __future__ import annotations

import torch

from ._checks import check_same_shape

TOKEN_WEIGHTINGS = ("none", "advantage_reweighting", "clip_cov")
# CE-U-GRPO `negative_objective`s taken from CE-U's unlearning siblings (`sibling_losses`): their per-token weight
# on negative-advantage tokens instead of CE-U's p / (1 - p).
SIBLING_NEGATIVE_OBJECTIVES = ("wga", "satimp")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value} is out of range: use a value in [0, 1].")


def ceu_mix_weight(logprobs: torch.Tensor, ceu_mix_lambda: float) -> torch.Tensor:
    r"""w = (1 - lambda) + lambda p / (1 - p): the policy gradient at lambda = 0, CE-U at lambda = 1 (logit push
    (1 - lambda)(1 - p) + lambda p on the sampled token). `ceu_mix_lambda` in [0, 1]."""
    from .reweighted_logprobs import ce_u_weight

    _check_unit("ceu_mix_lambda", ceu_mix_lambda)
    return (1.0 - ceu_mix_lambda) + ceu_mix_lambda * ce_u_weight(logprobs)


def advantage_reweighting_weight(logprobs: torch.Tensor, ar_alpha: float) -> torch.Tensor:
    r"""Advantage Reweighting (Yang et al. 2025, "Do Not Let Low-Probability Tokens Over-Dominate in RL for LLMs",
    arXiv 2505.12929): A <- (alpha p + 1 - alpha) A on every token, i.e. w = alpha p + 1 - alpha (p = pi(token),
    detached). Tilts every update toward confident tokens; alpha = 0 is the policy gradient. `ar_alpha` in [0, 1]."""
    _check_unit("ar_alpha", ar_alpha)
    with torch.no_grad():
        return ar_alpha * logprobs.detach().exp() + (1.0 - ar_alpha)


def clip_cov_weight(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip_cov_ratio: float) -> torch.Tensor:
    r"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617), deterministic
    form: w = 0 on the floor(ratio * N) valid tokens with the largest positive centred covariance
    (log p_i - mean log p)(A_i - mean A) (means over the N valid tokens of the batch), 1 elsewhere. The paper draws
    that share at random among tokens whose covariance lies in a band [omega_low, omega_high]; here the top of the
    ranking is taken (no band, no randomness), which detaches the tokens that drive entropy down the most.
    `clip_cov_ratio` in [0, 1] (the paper: 2e-4 of ~1e6-token batches; a 160-token batch needs >= 1/160 to act)."""
    _check_unit("clip_cov_ratio", clip_cov_ratio)
    check_same_shape("mask", mask, "logprobs", logprobs)
    valid = mask.bool()
    weight = torch.ones_like(logprobs)
    count = int(clip_cov_ratio * int(valid.sum()))
    if count == 0:
        return weight
    with torch.no_grad():
        logp = logprobs.detach().float()
        adv = torch.as_tensor(advantages, device=logp.device).float().expand_as(logp)
        cov = (logp - logp[valid].mean()) * (adv - adv[valid].mean())
        cov = torch.where(valid & (cov > 0), cov, torch.full_like(cov, -torch.inf))
        top = torch.topk(cov.flatten(), count).indices
        top = top[torch.isfinite(cov.flatten()[top])]  # fewer positive-covariance tokens than `count`
        weight.view(-1)[top] = 0.0
    return weight


def shared_negative_token_weight(logprobs: torch.Tensor, advantages: torch.Tensor, divergence_index: torch.Tensor,
                                 shared_negative_weight: float) -> torch.Tensor:
    r"""NTHR-style down-weighting (Deng et al. 2025, "On the Effect of Negative Gradient in Group Relative Deep RL",
    arXiv 2505.18830): w = `shared_negative_weight` on tokens of negative-advantage completions that a
    positive-advantage completion of the group shares (same prefix up to and including the token: t < d, d =
    `divergence_from_positives`), 1 elsewhere. NTHR scores every negative token's influence on the positive
    completions through hidden-state similarity; identical prefixes are the exact-match case of that influence (same
    context and token, so the same gradient direction), the part that fits a per-token weight. In [0, 1]."""
    _check_unit("shared_negative_weight", shared_negative_weight)
    position = torch.arange(logprobs.shape[-1], device=logprobs.device)
    shared = (position < divergence_index.reshape(-1, 1)) & (
        torch.as_tensor(advantages, device=logprobs.device).expand_as(logprobs) < 0)
    return torch.where(shared, torch.full_like(logprobs, float(shared_negative_weight)), torch.ones_like(logprobs))


def positive_token_weight(logprobs: torch.Tensor, advantages: torch.Tensor, positive_weight: float) -> torch.Tensor:
    r"""w = `positive_weight` on tokens of positive-advantage completions, 1 elsewhere: 0 trains on negative samples
    only (NSR), 0.1 is W-REINFORCE's lambda (Zhu et al. 2025, "The Surprising Effectiveness of Negative
    Reinforcement in LLM Reasoning", arXiv 2506.01347). Must be >= 0."""
    if not float(positive_weight) >= 0.0:
        raise ValueError(f"positive_weight={positive_weight} is out of range: use a value >= 0 (0: NSR, 0.1: "
                         "W-REINFORCE, 1: GRPO).")
    positive = torch.as_tensor(advantages, device=logprobs.device).expand_as(logprobs) > 0
    return torch.where(positive, torch.full_like(logprobs, float(positive_weight)), torch.ones_like(logprobs))


def sibling_negative_weight(objective: str, logprobs: torch.Tensor, advantages: torch.Tensor, wga_beta: float = 1.0,
                            satimp_beta1: float = 5.0, satimp_beta2: float = 1.0) -> torch.Tensor:
    r"""A sibling's per-token weight on negative-advantage tokens (1 where A >= 0; no gradient), p = pi(token):

        "wga"     w = p^beta                     logit push (1 - p) p^beta: WGA (arXiv 2502.19301), `wga_weight`
        "satimp"  w = p^beta1 (1 - p)^beta2      logit push p^beta1 (1 - p)^(1 + beta2): SatImp (arXiv 2505.11953)

    Like CE-U's p / (1 - p) both grow with p on the unlikely side; unlike it both are bounded, so the push still
    vanishes on confident tokens (p -> 1) as the policy gradient's does (analysis/DERIVATIONS.md, Sec. 10)."""
    from .sibling_losses import satimp_weight, wga_weight

    if objective not in SIBLING_NEGATIVE_OBJECTIVES:
        raise ValueError(f"objective={objective!r}: use one of {SIBLING_NEGATIVE_OBJECTIVES}.")
    weight = (wga_weight(logprobs, wga_beta) if objective == "wga"
              else satimp_weight(logprobs, satimp_beta1, satimp_beta2))
    negative = torch.as_tensor(advantages, device=logprobs.device).expand_as(logprobs) < 0
    return torch.where(negative, weight.to(logprobs.dtype), torch.ones_like(logprobs))
