"""Autograd counterparts of the closed forms: per-token logit gradients of the objectives in `ceu_rl.objectives`."""

from __future__ import annotations

import numpy as np
import torch

from ceu_rl.objectives import (
    ce_u_loss,
    ceu_dpo_loss,
    ceu_grpo_token_loss,
    dpo_loss,
    gradient_ascent_loss,
    grpo_token_loss,
    unified_cross_entropy,
)


def logits_with_label_prob(p_y: float, vocab: int, seed: int = 0, dtype=torch.float64):
    """Logits (1, V) whose softmax is exactly p_y at label 0; the rest random. Returns (logits, label, |q|^2)."""
    gen = torch.Generator().manual_seed(seed)
    rest = torch.randn(vocab - 1, generator=gen, dtype=torch.float64)
    rest = rest - torch.logsumexp(rest, 0) + np.log1p(-p_y)
    z = torch.cat([torch.tensor([np.log(p_y)], dtype=torch.float64), rest]).unsqueeze(0)
    q = torch.softmax(rest, 0)
    return z.to(dtype), torch.tensor([0]), float((q**2).sum())


def _norms(grad):
    g = grad.double().reshape(-1)
    return {"label": g[0].item(), "l1": g.abs().sum().item(), "l2": g.norm().item()}


def token_gradient(objective: str, z: torch.Tensor, y: torch.Tensor, **kw) -> dict:
    """Norms of d loss / d z for one token under `objective`, computed by autograd through ceu_rl.objectives."""
    z = z.clone().requires_grad_()
    logp_all = torch.log_softmax(z, -1)
    logp = logp_all[0, y[0]].reshape(1, 1)
    entropy = -(logp_all.exp() * logp_all).sum(-1).reshape(1, 1)
    if objective == "ce":
        loss = unified_cross_entropy(z, y, torch.zeros_like(y, dtype=torch.bool), reduction="sum")
    elif objective == "gradient_ascent":
        loss = gradient_ascent_loss(z, y, reduction="sum")
    elif objective == "ce_u":
        loss = ce_u_loss(z, y, reduction="sum")
    elif objective in ("dpo_rejected", "ceu_dpo_rejected"):
        # one pair: chosen log-ratio fixed so that u = beta (Dw - Dl) equals kw["u"]; rejected = this one token
        beta, u = kw["beta"], kw["u"]
        dl = logp.reshape(1)
        dw = (u / beta + dl).detach()
        zero = torch.zeros(1, dtype=z.dtype)
        if objective == "dpo_rejected":
            loss = dpo_loss(dw, dl, zero, zero, beta).sum()
        else:
            loss = ceu_dpo_loss(dw, dl, zero, zero, logp, entropy, torch.ones_like(logp, dtype=torch.bool), beta,
                                kw.get("gamma", 1.0))[0].sum()
    elif objective in ("grpo_negative", "ceu_grpo_negative"):
        old = logp.detach() - np.log(kw["ratio"])
        adv = torch.tensor([[kw["advantage"]]], dtype=z.dtype)
        extra = dict(epsilon_low=kw.get("epsilon_low", 0.2), delta=kw.get("delta"))
        loss = (grpo_token_loss(logp, old, adv, **extra) if objective == "grpo_negative"
                else ceu_grpo_token_loss(logp, entropy, old, adv, **extra)).sum()
    else:
        raise ValueError(f"unknown objective {objective!r}")
    loss.backward()
    return _norms(z.grad)
