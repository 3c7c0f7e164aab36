"""Closed-form per-token logit-gradient magnitudes (see DERIVATIONS.md).

Notation: p = softmax(z), label y, p_y its probability, q_k = p_k / (1 - p_y) for k != y (the rest of the
distribution, renormalised), |q|^2 = sum_{k != y} q_k^2 in [1/(V-1), 1]. Each function returns a dict with the
label component `label` (d loss / d z_y), the `l1` and `l2` norms of d loss / d z. All accept numpy arrays.
"""

from __future__ import annotations

import numpy as np


def _norms(label, scale_rest, q_sq):
    """Gradient = label at y and -scale_rest * q_k elsewhere (sum_k q_k = 1)."""
    label, scale_rest, q_sq = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (label, scale_rest, q_sq)))
    return {"label": label, "l1": np.abs(label) + np.abs(scale_rest),
            "l2": np.sqrt(label**2 + scale_rest**2 * q_sq)}


def ce(p_y, q_sq):
    """Cross entropy -log p_y: gradient p - e_y: label p_y - 1, rest (1 - p_y) q_k.
    L1 2(1-p_y), L2 (1-p_y)sqrt(1+|q|^2)."""
    p_y = np.asarray(p_y, dtype=np.float64)
    return _norms(p_y - 1, 1 - p_y, q_sq)


def gradient_ascent(p_y, q_sq):
    """Loss log p_y: gradient e_y - p: label 1 - p_y, rest -(1 - p_y) q_k. Same norms as CE."""
    p_y = np.asarray(p_y, dtype=np.float64)
    return _norms(1 - p_y, 1 - p_y, q_sq)


def ce_u(p_y, q_sq):
    """CE-U: gradient p - q = p_y (e_y - q): label p_y, rest -p_y q_k. L1 2 p_y, L2 p_y sqrt(1 + |q|^2)."""
    p_y = np.asarray(p_y, dtype=np.float64)
    return _norms(p_y, p_y, q_sq)


def _scaled(norms, scale):
    scale = np.asarray(scale, dtype=np.float64)
    return {k: v * scale if k != "label" else v * scale for k, v in norms.items()}


def dpo_rejected(p_y, q_sq, beta, u):
    """DPO on one rejected token: d/dz of -log sigma(u) through log pi(rejected) = beta sigma(-u) (e_y - p)."""
    return _scaled(gradient_ascent(p_y, q_sq), beta / (1 + np.exp(u)))


def ceu_dpo_rejected(p_y, q_sq, beta, u, gamma=1.0):
    """CE-U-DPO on one rejected token: gamma beta sigma(-u) (p - q)."""
    return _scaled(ce_u(p_y, q_sq), gamma * beta / (1 + np.exp(u)))


def grpo_active(ratio, epsilon_low=0.2, delta=None):
    """Where TRL's clipped surrogate has a gradient for A < 0: r >= 1 - eps_low (and r <= delta)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    active = ratio >= 1 - epsilon_low
    return active & (ratio <= delta) if delta is not None else active


def grpo_negative(p_y, q_sq, advantage, ratio, epsilon_low=0.2, delta=None):
    """GRPO token with A < 0: |A| r 1[active] (e_y - p)."""
    return _scaled(gradient_ascent(p_y, q_sq), np.abs(advantage) * ratio * grpo_active(ratio, epsilon_low, delta))


def ceu_grpo_negative(p_y, q_sq, advantage, ratio, epsilon_low=0.2, delta=None):
    """CE-U-GRPO token with A < 0: |A| r 1[active] (p - q)."""
    return _scaled(ce_u(p_y, q_sq), np.abs(advantage) * ratio * grpo_active(ratio, epsilon_low, delta))


def head_weight_gradient_norm(logit_gradient_l2, hidden_norm):
    """Through a linear head z = W h: dL/dW = g h^T, so |dL/dW|_F = |g|_2 |h|_2 per token."""
    return np.asarray(logit_gradient_l2, dtype=np.float64) * np.asarray(hidden_norm, dtype=np.float64)


# ---- CE-U's family (DERIVATIONS.md Sec. 10): gradient ascent times a per-token weight w, push w (1 - p_y) ----
def _ga_weighted(p_y, q_sq, weight):
    """Gradient ascent with the constant weight w: w (e_y - p): label w (1 - p_y), rest -w (1 - p_y) q_k."""
    p_y = np.asarray(p_y, dtype=np.float64)
    push = np.asarray(weight, dtype=np.float64) * (1 - p_y)
    return _norms(push, push, q_sq)


def wga(p_y, q_sq, beta=1.0):
    """WGA (`wga_loss`): w = p_y^beta, label p_y^beta (1 - p_y)."""
    p_y = np.asarray(p_y, dtype=np.float64)
    return _ga_weighted(p_y, q_sq, p_y**beta)


def satimp(p_y, q_sq, beta1=5.0, beta2=1.0):
    """SatImp (`satimp_loss`): w = p_y^beta1 (1 - p_y)^beta2, label p_y^beta1 (1 - p_y)^(1 + beta2)."""
    p_y = np.asarray(p_y, dtype=np.float64)
    return _ga_weighted(p_y, q_sq, p_y**beta1 * (1 - p_y) ** beta2)


def wtnpo(p_y, q_sq, beta=4.0, alpha=1.5, ref_p_y=0.9):
    """WTNPO (`wtnpo_loss`): w = 2 p^(beta + alpha) / (p^beta + p_ref^beta) per token."""
    p_y = np.asarray(p_y, dtype=np.float64)
    return _ga_weighted(p_y, q_sq, 2 * p_y ** (beta + alpha) / (p_y**beta + np.asarray(ref_p_y) ** beta))


def npo(p_y, q_sq, beta=0.1, log_ratio=0.0):
    """NPO (`npo_loss`, one sequence) on one of its tokens: d L / d log pi(seq) = 2 sigma(beta log_ratio), so
    w = 2 pi^beta / (pi^beta + pi_ref^beta), log_ratio = log pi(seq) - log pi_ref(seq), the same for every token."""
    return _ga_weighted(p_y, q_sq, 2 / (1 + np.exp(-beta * np.asarray(log_ratio, dtype=np.float64))))


def simnpo(p_y, q_sq, beta=2.5, delta=0.0, length=1, seq_logp=None):
    """SimNPO (`simnpo_loss`, one sequence of `length` tokens, summed log-prob `seq_logp`, default log p_y: a
    one-token sequence): w = (2 / |y|) sigma(beta (log pi / |y| + delta)), NPO with pi_ref = 1 and the log-prob
    length-normalised."""
    p_y = np.asarray(p_y, dtype=np.float64)
    seq_logp = np.log(p_y) if seq_logp is None else np.asarray(seq_logp, dtype=np.float64)
    return _ga_weighted(p_y, q_sq, (2 / length) / (1 + np.exp(-beta * (seq_logp / length + delta))))


def undial(p_y, q_sq, beta=10.0):
    """UNDIAL (`undial_loss`) with the current model as teacher (z_ref = z, the first step): gradient a (e_y - q),
    a = p (1 - p) s / (1 - s p), s = 1 - e^-beta; written with 1 - s p = (1 - p) + p e^-beta (exact at p -> 1).
    = GA weighted by p s / (1 - s p); beta = inf gives a = p (CE-U)."""
    p_y = np.asarray(p_y, dtype=np.float64)
    s, keep = -np.expm1(-beta), np.exp(-beta)
    push = p_y * (1 - p_y) * s / ((1 - p_y) + p_y * keep)
    return _norms(push, push, q_sq)


def undial_frozen_label(p_y, ref_p_y, beta=10.0):
    """UNDIAL with a frozen teacher whose label probability is p_ref: d L / d z_y = p_y - t_y,
    t_y = p_ref e^-beta / (p_ref e^-beta + 1 - p_ref), the fixed point where the push changes sign."""
    p_y, r = np.asarray(p_y, dtype=np.float64), np.asarray(ref_p_y, dtype=np.float64)
    return p_y - r * np.exp(-beta) / (r * np.exp(-beta) + 1 - r)


def family_weight_on_ga(name, p_y, **kw):
    """The weight w(p_y) with which each member equals gradient ascent on the token (its gradient = w (e_y - p))."""
    p_y = np.asarray(p_y, dtype=np.float64)
    fn = {"gradient_ascent": lambda: np.ones_like(p_y), "ce_u": lambda: p_y / (1 - p_y),
          "wga": lambda: p_y ** kw.get("beta", 1.0),
          "satimp": lambda: p_y ** kw.get("beta1", 5.0) * (1 - p_y) ** kw.get("beta2", 1.0),
          "undial": lambda: p_y * -np.expm1(-kw.get("beta", 10.0)) / ((1 - p_y) + p_y * np.exp(-kw.get("beta", 10.0)))}
    return fn[name]()
