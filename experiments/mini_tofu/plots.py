"""The field's picture (TOFU paper, open-unlearning): forget quality (log) against model utility as each objective
unlearns, one trajectory per objective, and the per-step traces of loss, gradient norm and mean p_y."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..stats import log10_mean_sd  # noqa: E402
from .config import rl_objective  # noqa: E402
from .report import UTILITY_FRACTION  # noqa: E402

FLOOR = -10  # log10 forget quality drawn no lower than this (over-unlearning reaches 1e-20 and below)


# panel titles of the RL rows: what the anchor is, in words
ANCHOR_TITLES = {"": "RL, no anchor", "kl": "RL with KL anchor", "retain": "RL with retain anchor"}


def _groups(objectives) -> list[tuple[str, list[str]]]:
    """Rows of the trajectory figure: one row of every objective, or (offline and RL objectives, or RL objectives
    with several anchors) one row per kind, so that no panel holds more than a handful of lines."""
    by_anchor: dict = {}
    for o in objectives:
        rl = rl_objective(o)
        by_anchor.setdefault("offline" if rl is None else ANCHOR_TITLES[rl[1]], []).append(o)
    if len(by_anchor) == 1:
        return [("", list(objectives))]
    return [(f"{k}: ", v) for k, v in by_anchor.items()]


def _y_of(objectives) -> str:
    """RL rows plot forget prob: in 40 steps at lr 2e-4 their forget quality barely moves (the KS test over 40
    questions moves in coarse steps), while the forget answers' probability shows what the RL study found."""
    return "forget_prob" if all(rl_objective(o) for o in objectives) else "forget_quality"


Y_LABELS = {"forget_quality": "forget quality (KS p-value, log)",
            "forget_prob": "forget prob (p of the forget answers; lower = forgotten)"}


def _y_points(points, y_key):
    """Mean and +-1 sd bars of the y axis: forget prob as is, forget quality as the geometric mean (log10)."""
    if y_key == "forget_prob":
        return [p["forget_prob"]["mean"] for p in points], [p["forget_prob"]["sd"] for p in points]
    lg = [max(p["log10_forget_quality"]["mean"], FLOOR) for p in points]
    lg_sd = [p["log10_forget_quality"]["sd"] for p in points]
    return [10 ** v for v in lg], [[10 ** v - 10 ** (v - s) for v, s in zip(lg, lg_sd)],
                                   [10 ** (v + s) - 10 ** v for v, s in zip(lg, lg_sd)]]


def plot_trajectories(cfg, traj: dict, rows: dict, path: Path) -> None:
    """One panel per learning rate (and per anchor for RL). Points: geometric mean of forget quality (mean of log10)
    and mean model utility over seeds, bars +- 1 sd (forget quality: sd of log10), start = the full model (step 0),
    last point bigger. Legend and title outside the panels (constrained layout), so they cover no data."""
    lrs = sorted({lr for o in cfg.objectives for lr in cfg.lrs_of(o)})  # panels only for learning rates in use
    groups = _groups(cfg.objectives)
    fig, axes = plt.subplots(len(groups), len(lrs), figsize=(4.6 * len(lrs) + 2.8, 4.3 * len(groups) + 0.9),
                             squeeze=False, sharey="row", layout="constrained")
    palette = plt.get_cmap("tab10" if len(cfg.objectives) <= 10 else "tab20")
    color = {o: palette(i % palette.N) for i, o in enumerate(dict.fromkeys(
        o.removesuffix("_kl").removesuffix("_retain") if rl_objective(o) else o for o in cfg.objectives))}
    entries: dict = {}
    for row, (group, objectives) in zip(axes, groups):
        y_key = _y_of(objectives)
        for ax, lr in zip(row, lrs):
            for objective in objectives:
                t = traj.get(f"{objective}_lr{lr:g}")
                if t is None:
                    continue
                base = objective.removesuffix("_kl").removesuffix("_retain") if rl_objective(objective) else objective
                mu = [p["model_utility"]["mean"] for p in t["points"]]
                mu_sd = [p["model_utility"]["sd"] for p in t["points"]]
                y, yerr = _y_points(t["points"], y_key)
                line = ax.errorbar(mu, y, xerr=mu_sd, yerr=yerr, color=color[base], marker="o", ms=3, lw=1.2,
                                   elinewidth=0.6, capsize=1.5, alpha=0.9)
                entries.setdefault(base, line)
                ax.plot(mu[-1], y[-1], "o", color=color[base], ms=7)
            for name, marker in (("full", "*"), ("retain", "P")):
                if name in rows:
                    r = rows[name]
                    value = (r["forget_Q_A_Prob"]["mean"] if y_key == "forget_prob"
                             else 10 ** log10_mean_sd(r["forget_quality"]["per_seed"])["mean"])
                    entries[f"{name} model"] = ax.plot(r["model_utility"]["mean"], value, marker, ms=13,
                                                       color="black", ls="none")[0]
            if "full" in rows:
                entries[f"{UTILITY_FRACTION} x full's utility"] = ax.axvline(
                    UTILITY_FRACTION * rows["full"]["model_utility"]["mean"], color="grey", ls=":", lw=1)
            if y_key == "forget_prob":
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.set_yscale("log")
                ax.set_ylim(10 ** FLOOR / 3, 3)
            ax.set_xlim(-0.02, 1.0)
            ax.set_xlabel("model utility")
            ax.set_title(f"{group}lr {lr:g}")
            ax.grid(alpha=0.3)
        row[0].set_ylabel(Y_LABELS[y_key])
    fig.legend(list(entries.values()), list(entries), fontsize=8, loc="outside right center")
    n = max((len(t["seeds"]) for t in traj.values()), default=0)
    title = (f"mini-TOFU: forget quality vs model utility while unlearning ({n} seeds: geometric mean of forget "
             f"quality and mean utility, ±1 sd; below 1e{FLOOR} drawn at 1e{FLOOR}; big dot = last step; RL rows: "
             "forget prob instead of forget quality)")
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 11)), fontsize=10)
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


RL_TRACE_KEYS = (("forget/p_y_mean", "p of the forget answers' tokens (teacher-forced)"),
                 ("ceu/p_negative_mean", "mean p of sampled tokens with A < 0"),
                 ("ceu/p_shared_mean", "mean p of A < 0 tokens a positive completion shares"),
                 ("entropy", "policy entropy on sampled tokens"))
_ANCHOR_STYLE = {"": "-", "kl": "--", "retain": ":"}


def plot_rl_mechanism(traces: dict, lr: float, path: Path) -> None:
    """RL runs' per-step mechanism (mean over seeds at one learning rate): does the push on the forget answers fade
    under GRPO (its logit push (1 - p) vanishes on confident tokens) and not under CE-U (push p)? Colour = variant,
    line style = anchor."""
    rl = {name: steps for name, steps in traces.items() if rl_objective(name)}
    if not rl:
        return
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 8), layout="constrained")
    variants = list(dict.fromkeys(n.removesuffix("_kl").removesuffix("_retain") for n in rl))
    palette = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes.flat, RL_TRACE_KEYS):
        for name, steps in rl.items():
            anchor = rl_objective(name)[1]
            variant = name.removesuffix("_kl").removesuffix("_retain")
            points = [(s["step"], s[key]) for s in steps if key in s]
            if points:
                ax.plot(*zip(*points), color=palette(variants.index(variant)), ls=_ANCHOR_STYLE[anchor],
                        lw=1.4, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
    fig.suptitle(f"mini-TOFU RL unlearning, lr {lr:g}: per-step mechanism (mean over seeds; colour = variant, "
                 "line style: solid no anchor, dashed KL, dotted retain NLL)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
