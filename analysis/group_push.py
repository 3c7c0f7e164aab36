"""Net logit push on a token shared by the positive- and negative-advantage completions of one GRPO group, and the
fixed points of its probability p, for the policy gradient and each CE-U variant (DERIVATIONS.md, Sec. 8).

A token "shared" by completions i in S: same context (so the same logits z and p = softmax(z)_y) and the same sampled
token y. Each completion contributes c_i g_i A_i (e_y - p) w_i(p) to -dL/dz, c_i the aggregation constant of the
loss type, g_i its ratio gate (r 1[unclipped] for the clipped losses; 1 on-policy), w_i the variant's weight (1 where
A_i >= 0). The sum is N(p) / (1 - p) * (e_y - p) with the net push (the component on z_y)

    N(p) = P (1 - p) - M h(p),   P = sum_{A_i > 0} c_i g_i A_i,   M = sum_{A_i < 0} c_i g_i |A_i|,

h(p) = 1 - p (pg), p (ceu_full), min(p, 1 - p) (ceu_min); ceu_prefix gives a token a negative completion shares with
a positive one (same context, same token: before its divergence point) the policy gradient, so h = 1 - p there.
Gradient descent raises p iff N(p) > 0: the fixed points are the zeros of N, stable where N falls through 0.
"""

from __future__ import annotations

import numpy as np

VARIANTS = ("pg", "ceu_full", "ceu_min", "ceu_prefix")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "luspo", "sapo", "vespo")


def negative_push(variant: str, p):
    """h(p): logit push on y from one negative-advantage occurrence (c g |A| = 1) of a token shared with a positive
    completion."""
    p = np.asarray(p, dtype=float)
    if variant in ("pg", "ceu_prefix"):  # ceu_prefix: a shared token lies before the divergence point
        return 1 - p
    if variant == "ceu_full":
        return p
    if variant == "ceu_min":
        return np.minimum(p, 1 - p)
    raise ValueError(f"variant={variant!r}: use one of {VARIANTS}.")


def aggregation_constants(loss_type: str, lengths, max_completion_length: int | None = None,
                          num_items: float | None = None, epsilon_high: float = 0.2) -> np.ndarray:
    """c_i g_i per completion for TRL 1.16's aggregation of `loss_type`, on-policy (r = 1, nothing clipped), one
    process, no gradient accumulation. `lengths`: completion lengths |o_i| of the micro-batch; `num_items`: dapo's
    token count (default sum |o_i|). The same for `importance_sampling_level="sequence"`: the 1/|o_i| of GSPO's mean
    log-ratio cancels against the |o_i| copies of the sequence term that TRL's per-token aggregation counts."""
    lengths = np.asarray(lengths, dtype=float)
    batch = len(lengths)
    if loss_type in ("grpo", "sapo"):  # mean over tokens, then over sequences; sapo's gate 4 s(1 - s) = 1 at r = 1
        return 1.0 / (batch * lengths)
    if loss_type == "bnpo":
        return np.full(batch, 1.0 / lengths.sum())
    if loss_type == "dr_grpo":
        return np.full(batch, 1.0 / (batch * max_completion_length))
    if loss_type in ("dapo", "vespo", "cispo"):  # vespo's phi(1) = 1; cispo's gate sg(min(r, eps_high))
        gate = min(1.0, epsilon_high) if loss_type == "cispo" else 1.0
        return np.full(batch, gate / (lengths.sum() if num_items is None else num_items))
    if loss_type == "luspo":  # sum over tokens, mean over sequences
        return np.full(batch, 1.0 / batch)
    raise ValueError(f"loss_type={loss_type!r}: use one of {LOSS_TYPES}.")


def group_weights(advantages, constants, shared) -> tuple[float, float]:
    """(P, M): the positive and negative advantage weight on a token shared by the completions `shared` (bool)."""
    a, c, s = (np.asarray(x, dtype=float) for x in (advantages, constants, shared))
    return float((c * a * s)[a > 0].sum()), float((c * -a * s)[a < 0].sum())


def net_push(variant: str, p, positive: float, negative: float):
    """N(p) = P (1 - p) - M h(p): -dL/dz_y on the shared token; p rises under gradient descent iff N > 0."""
    p = np.asarray(p, dtype=float)
    return positive * (1 - p) - negative * negative_push(variant, p)


def fixed_points(variant: str, positive: float, negative: float) -> dict:
    """Fixed points of p on the shared token: {"stable": [...], "neutral": (lo, hi) or None, "note": str}."""
    P, M = float(positive), float(negative)
    if variant in ("pg", "ceu_prefix"):
        if np.isclose(P, M):
            return {"stable": [], "neutral": (0.0, 1.0), "note": "N = 0 for every p: the pushes cancel"}
        if P > M:
            return {"stable": [1.0], "neutral": None, "note": "N = (P - M)(1 - p) > 0: p -> 1"}
        return {"stable": [0.0], "neutral": None,
                "note": "N = -(M - P)(1 - p): p -> 0 with a push tending to M - P, never fading (logit -> -inf)"}
    if variant == "ceu_full":
        return {"stable": [P / (P + M)], "neutral": None,
                "note": "N = P - (P + M) p: p -> P / (P + M), 1/2 for a balanced group"}
    if variant == "ceu_min":
        if np.isclose(P, M):
            return {"stable": [], "neutral": (0.5, 1.0), "note": "N > 0 below 1/2, N = 0 on [1/2, 1]: p stays"}
        if P > M:
            return {"stable": [1.0], "neutral": None, "note": "N > 0 everywhere: p -> 1"}
        return {"stable": [P / (P + M)], "neutral": None, "note": "p -> P / (P + M) < 1/2, the push fading as p -> 0"}
    raise ValueError(f"variant={variant!r}: use one of {VARIANTS}.")


def net_push_curves(balances=(2.0, 1.0, 0.5), points: int = 201) -> dict:
    """N(p) per variant for groups with P / M in `balances` (M = 1), with their fixed points: the plot's data."""
    p = np.linspace(0.0, 1.0, points)
    data = {"p": p.tolist(), "panels": []}
    for ratio in balances:
        panel = {"P": ratio, "M": 1.0, "curves": {}}
        for variant in VARIANTS:
            fixed = fixed_points(variant, ratio, 1.0)
            panel["curves"][variant] = {"net_push": net_push(variant, p, ratio, 1.0).tolist(),
                                        "stable": fixed["stable"], "neutral": fixed["neutral"], "note": fixed["note"]}
        data["panels"].append(panel)
    return data


def plot_net_push(data: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data["panels"]), figsize=(4.6 * len(data["panels"]), 3.8), sharey=True)
    styles = {"pg": "-", "ceu_full": "-", "ceu_min": "--", "ceu_prefix": ":"}
    for ax, panel in zip(np.atleast_1d(axes), data["panels"]):
        for variant, curve in panel["curves"].items():
            label = variant if variant != "ceu_prefix" else "ceu_prefix (= pg on shared tokens)"
            line = ax.plot(data["p"], curve["net_push"], styles[variant], label=label, lw=1.6)[0]
            for s in curve["stable"]:
                ax.plot([s], [0.0], "o", color=line.get_color(), ms=7, mfc="none", mew=2)
            if curve["neutral"]:  # every p in the interval is a fixed point (the pushes cancel)
                ax.plot(curve["neutral"], [0.0, 0.0], color=line.get_color(), lw=5, alpha=0.35)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(f"P/M = {panel['P'] / panel['M']:g} (positive / negative advantage weight)", fontsize=9)
        ax.set_xlabel("p of the shared token")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("net push N(p) = -dL/dz_y  (> 0 raises p)")
    fig.suptitle("Token shared by good and bad completions of a group: circles = stable fixed points, "
                 "bands = neutral intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
