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
