"""CE-U's family on one token (DERIVATIONS.md Sec. 10): the push on the label's logit of GA, CE-U, WGA, SatImp,
UNDIAL, and of the reference / sequence-level members NPO, SimNPO and WTNPO, as a function of p_y. Closed forms
(`closed_forms.py`) against float64 autograd through the trainer's loss functions (`ceu_rl.objectives`), and the
figure `family_vs_confidence.png` that extends `gradient_vs_confidence.png` to the family."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ceu_rl.objectives import (
    ce_u_loss,
    gradient_ascent_loss,
    npo_loss,
    satimp_loss,
    simnpo_loss,
    undial_loss,
    wga_loss,
    wtnpo_loss,
)

from . import closed_forms as cf
from .empirical import logits_with_label_prob

REF_P = 0.9  # the reference's (the model before unlearning) probability of the token, for NPO / WTNPO / UNDIAL-frozen

# label -> (objective of `family_token_gradient`, its kwargs, closed form f(p_y, q_sq) -> dict, panel group)
MEMBERS = {
    "GA": ("gradient_ascent", {}, cf.gradient_ascent, "token"),
    "CE-U": ("ce_u", {}, cf.ce_u, "token"),
    "WGA beta=1": ("wga", {"beta": 1.0}, lambda p, q: cf.wga(p, q, 1.0), "token"),
    "WGA beta=5": ("wga", {"beta": 5.0}, lambda p, q: cf.wga(p, q, 5.0), "token"),
    "SatImp 5, 1": ("satimp", {"beta1": 5.0, "beta2": 1.0}, lambda p, q: cf.satimp(p, q, 5.0, 1.0), "token"),
    "SatImp 5, 0.1": ("satimp", {"beta1": 5.0, "beta2": 0.1}, lambda p, q: cf.satimp(p, q, 5.0, 0.1), "token"),
    "UNDIAL beta=3": ("undial", {"beta": 3.0}, lambda p, q: cf.undial(p, q, 3.0), "token"),
    "UNDIAL beta=10": ("undial", {"beta": 10.0}, lambda p, q: cf.undial(p, q, 10.0), "token"),
    "NPO beta=0.1": ("npo", {"beta": 0.1, "ref_p_y": REF_P},
                     lambda p, q: cf.npo(p, q, 0.1, np.log(p) - np.log(REF_P)), "reference"),
    "NPO beta=1": ("npo", {"beta": 1.0, "ref_p_y": REF_P},
                   lambda p, q: cf.npo(p, q, 1.0, np.log(p) - np.log(REF_P)), "reference"),
    "SimNPO beta=2.5": ("simnpo", {"beta": 2.5}, lambda p, q: cf.simnpo(p, q, 2.5), "reference"),
    "WTNPO 4, 1.5": ("wtnpo", {"beta": 4.0, "alpha": 1.5, "ref_p_y": REF_P},
                     lambda p, q: cf.wtnpo(p, q, 4.0, 1.5, REF_P), "reference"),
    "UNDIAL frozen beta=3": ("undial_frozen", {"beta": 3.0, "ref_p_y": REF_P},
                             lambda p, q: {"label": cf.undial_frozen_label(p, REF_P, 3.0)}, "reference"),
}


def _norms(grad: torch.Tensor) -> dict:
    g = grad.double().reshape(-1)
    return {"label": g[0].item(), "l1": g.abs().sum().item(), "l2": g.norm().item()}


def teacher_logits(z: torch.Tensor, ref_p_y: float) -> torch.Tensor:
    """z with the label's (index 0) logit moved so that its softmax probability is `ref_p_y`, the rest unchanged."""
    rest = torch.logsumexp(z[:, 1:], -1)
    z_ref = z.detach().clone()
    z_ref[:, 0] = rest + math.log(ref_p_y) - math.log1p(-ref_p_y)
    return z_ref


def family_token_gradient(objective: str, z: torch.Tensor, y: torch.Tensor, **kw) -> dict:
    """Norms of d loss / d z for one token (label y = 0) under a family member, by autograd through the trainer's
    loss function: the token-weighted ones and NPO / SimNPO through log p_y = log_softmax(z)[y] (what the fused
    head gives the trainer), UNDIAL and CE-U through full logits. NPO / SimNPO: a one-token sequence."""
    z = z.clone().requires_grad_()
    logp = torch.log_softmax(z, -1)[:, 0]
    if objective == "gradient_ascent":
        loss = gradient_ascent_loss(z, y, reduction="sum")
    elif objective == "ce_u":
        loss = ce_u_loss(z, y, reduction="sum")
    elif objective == "wga":
        loss = wga_loss(logp, beta=kw["beta"], reduction="sum")
    elif objective == "satimp":
        loss = satimp_loss(logp, beta1=kw["beta1"], beta2=kw["beta2"], reduction="sum")
    elif objective == "wtnpo":
        ref = torch.full_like(logp, math.log(kw["ref_p_y"]))
        loss = wtnpo_loss(logp, ref, beta=kw["beta"], alpha=kw["alpha"], reduction="sum")
    elif objective == "npo":
        loss = npo_loss(logp, torch.full_like(logp, math.log(kw["ref_p_y"])), beta=kw["beta"])
    elif objective == "simnpo":
        loss = simnpo_loss(logp, torch.ones_like(logp), beta=kw["beta"], delta=kw.get("delta", 0.0))
    elif objective == "undial":  # the current model as teacher (the first step)
        loss = undial_loss(z, z.detach(), y, beta=kw["beta"], reduction="sum")
    elif objective == "undial_frozen":
        loss = undial_loss(z, teacher_logits(z, kw["ref_p_y"]), y, beta=kw["beta"], reduction="sum")
    else:
        raise ValueError(f"unknown objective {objective!r}")
    loss.backward()
    return _norms(z.grad)


def family_grid(quick: bool) -> np.ndarray:
    """p_y over (0, 1) for three views: linear, geometric towards 0 and geometric towards 1."""
    n_lin, n_log = (6, 5) if quick else (30, 16)
    return np.unique(np.concatenate([np.linspace(0.01, 0.99, n_lin), np.logspace(-6, -0.5, n_log),
                                     1 - np.logspace(-6, -0.5, n_log)]))


def family_data(quick: bool = True, vocab: int = 1000) -> dict:
    grid = family_grid(quick)
    data = {}
    for label, (objective, kw, closed_fn, group) in MEMBERS.items():
        rows = []
        for i, p in enumerate(grid):
            z, y, q_sq = logits_with_label_prob(float(p), vocab, seed=i)
            auto = family_token_gradient(objective, z, y, **kw)
            closed = {k: float(v) for k, v in closed_fn(p, q_sq).items()}
            rows.append({"p_y": float(p), "q_sq": q_sq, "autograd": auto, "closed_form": closed})
        data[label] = {"objective": objective, "kwargs": kw, "group": group, "vocab": vocab, "rows": rows}
    return data


def plot_family(data: dict, path: Path) -> None:
    from .plots import _legend_above_data, _plt

    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    views = [(axes[0, 0], "token", "linear", "token-level weights: push on the label's logit"),
             (axes[0, 1], "token", "low", "p_y -> 0 (log-log): which pushes fade on forgotten tokens"),
             (axes[1, 0], "token", "high", "p_y -> 1 (log-log in 1 - p_y): which pushes reach confident tokens"),
             (axes[1, 1], "reference", "linear", f"reference / sequence-level (one-token sequence, p_ref = {REF_P})")]
    for ax, group, view, title in views:
        members = [m for m, d in data.items() if d["group"] == group or (group == "reference" and m in ("GA", "CE-U"))]
        for name in members:
            rows = data[name]["rows"]
            p = np.array([r["p_y"] for r in rows])
            closed = np.array([r["closed_form"]["label"] for r in rows])
            auto = np.array([r["autograd"]["label"] for r in rows])
            x = 1 - p if view == "high" else p
            keep = (p <= 0.5) if view == "low" else (p >= 0.5) if view == "high" else np.ones_like(p, dtype=bool)
            line = ax.plot(x[keep], closed[keep], label=name)[0]
            ax.scatter(x[keep], auto[keep], color=line.get_color(), s=8, zorder=3)
        if view != "linear":
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(1e-10, 1e5)  # the decades above 1 hold the legend
        else:
            ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("1 - p_y" if view == "high" else "p_y (confidence in the forget token)")
        ax.set_ylabel("d loss / d z_y (push on the label's logit)")
        ax.set_title(title, fontsize=9)
        _legend_above_data(ax, ncol=3, room=0.5 if view == "linear" else 0.0)
    fig.suptitle("CE-U's family on one token: closed form (lines) = float64 autograd through ceu_rl.objectives "
                 "(dots)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_family(out: str | Path, quick: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = family_data(quick)
    import json

    (out / "family_vs_confidence.json").write_text(json.dumps(data, indent=1))
    plot_family(data, out / "family_vs_confidence.png")
    return out / "family_vs_confidence.png"
