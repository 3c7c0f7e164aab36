"""Independent float64 references: the naive formulas, differentiated by autograd. Shared by the objective tests."""

from __future__ import annotations

import torch


def naive_ce_u(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row CE(q, p) with q = softmax(sg(z) with z_y = -inf), and its logit gradient, both float64.

    Rows whose every non-label entry is -inf get value 0 and gradient 0 (the documented convention).
    """
    z = logits.detach().double().reshape(-1, logits.shape[-1]).clone().requires_grad_()
    y = labels.reshape(-1)
    masked = z.detach().clone()
    masked[torch.arange(len(y)), y] = float("-inf")
    degenerate = torch.isinf(masked).all(dim=1)
    masked[degenerate] = 0.0  # any finite q; the row is zeroed below
    q = torch.softmax(masked, dim=-1)
    logp = torch.log_softmax(z, dim=-1)
    terms = torch.where(q > 0, q * logp, torch.zeros_like(logp))
    value = -terms.sum(dim=-1)
    value = torch.where(degenerate, torch.zeros_like(value), value)
    value.sum().backward()
    return value.detach().view(labels.shape), z.grad.view(logits.shape)


def naive_log_p(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row log p_y (the gradient-ascent loss) and its logit gradient, float64."""
    z = logits.detach().double().reshape(-1, logits.shape[-1]).clone().requires_grad_()
    y = labels.reshape(-1)
    value = torch.log_softmax(z, dim=-1)[torch.arange(len(y)), y]
    value.sum().backward()
    return value.detach().view(labels.shape), z.grad.view(logits.shape)


def naive_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value, grad = naive_log_p(logits, labels)
    return -value, -grad


def logits_with_label_prob(p_label: torch.Tensor, vocab: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits (N, V) with softmax exactly p_label[i] at label 0, other entries random."""
    n = p_label.shape[0]
    rest = torch.randn(n, vocab - 1, generator=generator, dtype=torch.float64)
    rest = rest - torch.logsumexp(rest, dim=1, keepdim=True) + torch.log1p(-p_label).unsqueeze(1)
    z = torch.cat([torch.log(p_label).unsqueeze(1), rest], dim=1)
    return z, torch.zeros(n, dtype=torch.long)


def naive_unified(z: torch.Tensor, labels: torch.Tensor, unlearn: torch.Tensor | None = None, reduction: str = "mean",
                  num_items=None, ignore_index: int = -100) -> torch.Tensor:
    """float64 CE where `unlearn` is False, CE(q, p) where True (None: CE-U everywhere), on logits z (N, V) that may
    be the output of a graph (z = h W^T + b), reduced as the objectives reduce: the value, still differentiable."""
    y = labels.reshape(-1)
    valid = y != ignore_index
    y = torch.where(valid, y, torch.zeros_like(y))
    rows = torch.arange(len(y))
    logp = torch.log_softmax(z, dim=-1)
    masked = z.detach().clone()
    masked[rows, y] = float("-inf")
    q = torch.softmax(masked, dim=-1)
    ceu = -torch.where(q > 0, q * logp, torch.zeros_like(logp)).sum(-1)
    ce = -logp[rows, y]
    unlearn = torch.ones_like(valid) if unlearn is None else unlearn.reshape(-1)
    per = torch.where(valid, torch.where(unlearn, ceu, ce), torch.zeros_like(ce))
    if reduction == "none":
        return per.view(labels.shape)
    if reduction == "sum":
        return per.sum()
    return per.sum() / (num_items if num_items is not None else valid.sum().clamp(min=1))
