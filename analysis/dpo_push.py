"""Net logit push on a token that a DPO pair's chosen and rejected completions share (same context, same token),
and the fixed points of its probability p, for DPO, DPO-Positive and each CE-U-DPO variant (DERIVATIONS.md Sec. 9).

A pair's loss body (TRL's sigmoid loss, on the log-probs the trainer feeds it) depends on the summed log-ratios
D_w, D_l of the chosen and rejected completions. Write P = -dL/dD_w >= 0 (the chosen side's pull) and
M = dL/dD_l >= 0 (the rejected side's push). A shared token's log-prob l enters D_w and, as the rejected row's
reweighted l~ (gradient w grad l), D_l, so -dL/dz = (P - M w(p)) (e_y - p) = N(p) / (1 - p) (e_y - p) with

    N(p) = P (1 - p) - M h(p),   h(p) = (1 - p) w(p) = 1 - p (DPO, DPOP, ceu_prefix), gamma p (ceu_full).

For DPO and CE-U-DPO (sigmoid), P = M = beta sigma(-u) / n (u = beta (D_w - D_l), n pairs in the batch); DPO-Positive
adds lambda 1[D_w < 0] to P's factor (u then includes its penalty). Gradient descent raises p iff N(p) > 0.
"""

from __future__ import annotations

import math

import numpy as np

VARIANTS = ("dpo", "dpop", "ceu_full", "ceu_prefix")


def negative_push(variant: str, p, gamma: float = 1.0):
    """h(p): the rejected side's push on z_y of a shared token per unit of M."""
    p = np.asarray(p, dtype=float)
    if variant in ("dpo", "dpop", "ceu_prefix"):  # ceu_prefix: DPO's gradient on the shared prefix
        return 1 - p
    if variant == "ceu_full":
        return gamma * p
    raise ValueError(f"variant={variant!r}: use one of {VARIANTS}.")


def pair_weights(variant: str, d_chosen: float, d_rejected: float, beta: float, pairs: int = 1,
                 dpop_lambda: float = 50.0) -> tuple[float, float]:
    """(P, M) of one pair for TRL's sigmoid loss body (mean over `pairs`), from its summed log-ratios."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: use one of {VARIANTS}.")
    below = variant == "dpop" and d_chosen < 0
    penalty = dpop_lambda * max(0.0, -d_chosen) if variant == "dpop" else 0.0
    u = beta * (d_chosen - d_rejected - penalty)
    weight = beta / (1 + math.exp(u)) / pairs  # beta sigma(-u) / n
    return weight * (1 + (dpop_lambda if below else 0.0)), weight


def net_push(variant: str, p, positive: float, negative: float, gamma: float = 1.0):
    """N(p) = P (1 - p) - M h(p): -dL/dz_y on the shared token; p rises under gradient descent iff N > 0."""
    p = np.asarray(p, dtype=float)
    return positive * (1 - p) - negative * negative_push(variant, p, gamma)


def fixed_points(variant: str, positive: float, negative: float, gamma: float = 1.0) -> dict:
    """Fixed points of p on the shared token: {"stable": [...], "neutral": (lo, hi) or None, "note": str}."""
    P, M = float(positive), float(negative)
    if variant == "ceu_full":
        star = P / (P + gamma * M)
        return {"stable": [star], "neutral": None,
                "note": f"N = P - (P + gamma M) p: p -> P / (P + gamma M) = {star:.3g} (1 / (1 + gamma) when P = M)"}
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: use one of {VARIANTS}.")
    if np.isclose(P, M):
        return {"stable": [], "neutral": (0.0, 1.0), "note": "N = 0 for every p: the pull and the push cancel"}
    if P > M:
        return {"stable": [1.0], "neutral": None, "note": "N = (P - M)(1 - p) > 0: p -> 1"}
    return {"stable": [0.0], "neutral": None, "note": "N = -(M - P)(1 - p) < 0: p -> 0"}


def net_push_curves(gammas=(1.0, 4.0, 16.0), points: int = 201) -> dict:
    """N(p) per variant: panel 1 a DPO/CE-U-DPO pair (P = M = 1) with ceu_full at each gamma; panel 2 a pair whose
    chosen answer fell below the reference (DPOP's P = (1 + lambda) M): the plot's data."""
    p = np.linspace(0.0, 1.0, points)
    panels = []
    for title, P, dpop_factor in (("pair at any margin (P = M)", 1.0, 1.0),
                                  ("chosen below reference, DPOP lambda = 50", 1.0, 51.0)):
        curves = {}
        for variant in ("dpo", "ceu_prefix", "dpop"):
            pos = P * dpop_factor if variant == "dpop" else P
            fixed = fixed_points(variant, pos, 1.0)
            curves[variant] = {"net_push": net_push(variant, p, pos, 1.0).tolist(), **fixed}
        for gamma in gammas:
            fixed = fixed_points("ceu_full", P, 1.0, gamma)
            curves[f"ceu_full g={gamma:g}"] = {"net_push": net_push("ceu_full", p, P, 1.0, gamma).tolist(), **fixed}
        panels.append({"title": title, "curves": curves})
    return {"p": p.tolist(), "panels": panels}


def plot_net_push(data: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data["panels"]), figsize=(5.4 * len(data["panels"]), 4.4))
    for ax, panel in zip(np.atleast_1d(axes), data["panels"]):
        for name, curve in panel["curves"].items():
            style = {"dpo": "-", "ceu_prefix": ":", "dpop": "-."}.get(name, "--")
            label = {"dpo": "DPO", "ceu_prefix": "CE-U-DPO ceu_prefix (= DPO here)", "dpop": "DPOP"}.get(
                name, f"CE-U-DPO {name}")
            values = np.asarray(curve["net_push"])
            line = ax.plot(data["p"], values, style, lw=1.6, label=label)[0]
            for s in curve["stable"]:
                ax.plot([s], [0.0], "o", color=line.get_color(), ms=7, mfc="none", mew=2)
            if curve["neutral"]:
                ax.plot(curve["neutral"], [0.0, 0.0], color=line.get_color(), lw=6, alpha=0.3)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("p of the token shared by chosen and rejected")
        ax.set_ylabel("net push N(p) = -dL/dz_y (> 0 raises p), units of M")
        if max(abs(v) for c in panel["curves"].values() for v in c["net_push"]) > 20:
            ax.set_yscale("symlog", linthresh=1.0)  # DPOP's pull is (1 + lambda) times the others'
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + (0.45 * (hi - lo) if ax.get_yscale() == "linear" else 300 * hi))  # room for the legend
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.suptitle("DPO pair, token shared by chosen and rejected: circles = stable fixed points, bands = neutral",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
