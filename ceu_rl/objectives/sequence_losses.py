"""Sequence-level unlearning baselines: NPO and SimNPO (inputs are summed log-probs, no logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_reduction, check_same_shape, reduce


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def npo_loss(
    logps: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    r"""Negative Preference Optimization: L = -(2 / beta) log sigma(-beta (log pi(y|x) - log pi_ref(y|x))).

    ``logps`` / ``ref_logps``: summed completion log-probs per sequence (B,), the reference without gradient.
    Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
    (arXiv 2404.05868, 2024); the 2/beta scale is theirs and open-unlearning's.
    """
    check_reduction(reduction)
    _check_positive("beta", beta)
    check_same_shape("ref_logps", ref_logps, "logps", logps)
    per_seq = -F.logsigmoid(-beta * (logps - ref_logps.detach())) * (2.0 / beta)
    return reduce(per_seq, torch.ones_like(per_seq, dtype=torch.bool), reduction)


def simnpo_loss(
    logps: torch.Tensor, lengths: torch.Tensor, beta: float = 2.5, delta: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    r"""SimNPO: reference-free, length-normalised NPO: L = -(2 / beta) log sigma(-beta log pi(y|x) / |y| - beta delta).

    ``logps``: summed completion log-probs (B,); ``lengths``: completion token counts |y| (B,), > 0.
    Fan, Liu, Lin, Jia, Zhang, Mei, Liu, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
    Unlearning" (arXiv 2410.07163, 2024); written as open-unlearning does (delta inside the beta scaling).
    """
    check_reduction(reduction)
    _check_positive("beta", beta)
    check_same_shape("lengths", lengths, "logps", logps)
    if bool((lengths <= 0).any()):
        raise ValueError("lengths must be > 0 for every sequence (an empty completion has no log-prob to normalise).")
    avg_nll = -logps / lengths.to(logps.dtype)
    per_seq = -F.logsigmoid(beta * (avg_nll - delta)) * (2.0 / beta)
    return reduce(per_seq, torch.ones_like(per_seq, dtype=torch.bool), reduction)
