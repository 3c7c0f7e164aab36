"""Two figures a reader takes in at a glance: what each model gives away before and after each attack (per seed,
with the retain model's floor), and leak@k against k (mean over seeds, the retain model dashed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import LEAK_THRESHOLD  # noqa: E402


def _conditions(row: dict, cfg) -> list[tuple[str, str]]:
    lr = f"{cfg.relearn_lrs[0]:g}"  # the gentler relearning attack (1/3 of the finetune lr)
    return [(label, key) for label, key in (
        ("before the attacks", "forget prob"), (f"after relearning all 40 (lr {lr})", f"relearn {lr}: forget prob"),
        (f"held-out half, after relearning\nthe other half (lr {lr})", f"relearn {lr}: held-out prob"),
        ("4-bit (NF4)", "4bit: forget prob")) if key in row]


def default_subtitle(cfg) -> str:
    """Which models the figure shows: the main job's cheap form attacks its own final models (the matched lr, last
    step); the attack study each objective at its operating point."""
    if getattr(cfg, "cheap", False):
        from ..mini_tofu.config import MATCHED_LR

        return f"the main job's final models: lr {MATCHED_LR:.0e}, last step".replace("e-0", "e-")  # lr 2e-4
    return "each model at its operating point"


def plot_attacks(rows: dict, cfg, path: Path, subtitle: str | None = None) -> None:
    """One column per model, one marker per condition: mean forget prob (bar) and each seed (dots). `subtitle` says
    which models these are (default: `default_subtitle(cfg)`)."""
    names = list(rows)
    conditions = _conditions(rows[names[0]], cfg)
    fig, ax = plt.subplots(figsize=(max(9.0, 0.6 * len(names) + 3), 5.5), layout="constrained")
    width = 0.8 / len(conditions)
    palette = plt.get_cmap("tab10")
    for j, (label, key) in enumerate(conditions):
        x = np.arange(len(names)) + (j - (len(conditions) - 1) / 2) * width
        means = [rows[n][key]["mean"] for n in names]
        ax.bar(x, means, width, color=palette(j), alpha=0.55, label=label)
        for xi, n in zip(x, names):
            seeds = rows[n][key]["per_seed"]
            ax.plot([xi] * len(seeds), seeds, ".", color=palette(j), ms=4)
    if "retain" in rows:
        ax.axhline(rows["retain"]["forget prob"]["mean"], color="black", ls="--", lw=1,
                   label="retain model, before (never saw the forget set)")
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("forget prob (teacher-forced p of the forget answers)")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside right upper")
    n = len(rows[names[0]]["forget prob"]["per_seed"])
    # left-aligned over the axes and wrapped to their width (the figure's less ~3.2 in of legend and labels; ~5 pt a
    # character at 9 pt): one centred line ran past the figure's left edge and under the legend
    chars = max(40, int((fig.get_figwidth() - 3.2) * 72 / 5))
    sub = f"{subtitle or default_subtitle(cfg)}; {n} seed{'s' if n != 1 else ''}: bar = mean, dots = seeds"
    ax.set_title("\n".join([*textwrap.wrap("mini-TOFU: what each model gives away before and after each attack", chars),
                            *textwrap.wrap(sub, chars)]), fontsize=9, loc="left")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_leak(curves: dict, names, path: Path) -> None:
    """leak@k (ROUGE-L recall >= 0.5) on the forget questions and on their paraphrases, mean over the seeds that have
    the curve (`curves`: report.leak_curves, {seed: {name: {question key: {"ks", "leak_at_k"}}}})."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True, layout="constrained")
    palette = plt.get_cmap("tab20")
    for ax, key, title in zip(axes, ("question", "paraphrased_question"), ("forget questions", "paraphrased")):
        for i, name in enumerate(names):
            found = [c[name][key] for c in curves.values() if key in c.get(name, {})]
            if not found:
                continue
            ks = found[0]["ks"]
            mean = np.mean([c["leak_at_k"] for c in found], axis=0)
            style = dict(color="black", ls="--" if name == "retain" else ":", lw=2) if name in ("retain", "full") \
                else dict(color=palette(i % 20), lw=1.3)
            ax.plot(ks, mean, marker="o", ms=3, label=f"{name} ({len(found)} seeds)", **style)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples at temperature 1)")
        ax.set_title(f"leak@k on the {title} (ROUGE-L recall >= {LEAK_THRESHOLD})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("leak@k (mean over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right center")
    fig.savefig(path, dpi=110)
    plt.close(fig)
