"""The field's picture (TOFU paper, open-unlearning): forget quality (log) against model utility as each objective
unlearns, one trajectory per objective, and the per-step traces of loss, gradient norm and mean p_y."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..stats import log10_mean_sd  # noqa: E402
from .report import UTILITY_FRACTION  # noqa: E402

FLOOR = -10  # log10 forget quality drawn no lower than this (over-unlearning reaches 1e-20 and below)


def plot_trajectories(cfg, traj: dict, rows: dict, path: Path) -> None:
    """One panel per learning rate. Points: geometric mean of forget quality (mean of log10) and mean model utility
    over seeds, bars +- 1 sd (forget quality: sd of log10), start = the full model (step 0), last point bigger."""
    lrs = cfg.learning_rates
    fig, axes = plt.subplots(1, len(lrs), figsize=(6.2 * len(lrs), 5.2), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    for ax, lr in zip(axes[0], lrs):
        for i, objective in enumerate(cfg.objectives):
            t = traj.get(f"{objective}_lr{lr:g}")
            if t is None:
                continue
            mu = [p["model_utility"]["mean"] for p in t["points"]]
            mu_sd = [p["model_utility"]["sd"] for p in t["points"]]
            lg = [max(p["log10_forget_quality"]["mean"], FLOOR) for p in t["points"]]
            lg_sd = [p["log10_forget_quality"]["sd"] for p in t["points"]]
            fq = [10 ** v for v in lg]
            yerr = [[10 ** v - 10 ** (v - s) for v, s in zip(lg, lg_sd)],
                    [10 ** (v + s) - 10 ** v for v, s in zip(lg, lg_sd)]]
            ax.errorbar(mu, fq, xerr=mu_sd, yerr=yerr, color=colors(i), marker="o", ms=3, lw=1.2, elinewidth=0.6,
                        capsize=1.5, alpha=0.9, label=objective)
            ax.plot(mu[-1], fq[-1], "o", color=colors(i), ms=7)
        for name, marker in (("full", "*"), ("retain", "P")):
            if name in rows:
                r = rows[name]
                ax.plot(r["model_utility"]["mean"], 10 ** log10_mean_sd(r["forget_quality"]["per_seed"])["mean"], marker, ms=13,
                        color="black", label=f"{name} model")
        if "full" in rows:
            ax.axvline(UTILITY_FRACTION * rows["full"]["model_utility"]["mean"], color="grey", ls=":", lw=1,
                       label=f"{UTILITY_FRACTION} x full's utility")
        ax.set_yscale("log")
        ax.set_ylim(10 ** FLOOR / 3, 3)
        ax.set_xlim(-0.02, 1.0)
        ax.set_xlabel("model utility")
        ax.set_title(f"lr {lr:g}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("forget quality (KS p-value, log)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    n = max((len(t["seeds"]) for t in traj.values()), default=0)
    fig.suptitle(f"mini-TOFU: forget quality vs model utility while unlearning ({n} seeds: geometric mean of forget "
                 f"quality and mean utility, ±1 sd; below 1e{FLOOR} drawn at 1e{FLOOR}; big dot = last step)")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_traces(traces: dict, path: Path) -> None:
    """`traces`: name -> per-step dicts (mean over seeds). Loss, gradient norm (log) and mean p_y on forget tokens."""
    keys = (("loss", "loss"), ("grad_norm", "gradient norm (pre-clipping)"),
            ("forget/p_y_mean", "mean p_y on forget tokens"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes, keys):
        for name, steps in traces.items():
            ax.plot([s["step"] for s in steps if key in s], [s[key] for s in steps if key in s], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
