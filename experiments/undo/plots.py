"""The figure a reader takes in at a glance: robustness (R after relearning all 40 forget questions), what relearning
brings back (forget prob after it) and utility against compute (a fraction of the retain model's training), per
teacher, with the retain model (the gold standard: retraining without the forget set), the full model and the plain
unlearned models."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(result: dict, path: Path) -> None:
    rows, config = result["rows"], result["config"]
    teachers = config["teachers"]
    palette = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(teachers)}
    markers = dict(zip(config["alphas"], "os^DvP"))
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.5), layout="constrained")
    for ax, key, label in zip(axes, ("R", "relearn_forget_Q_A_Prob", "model_utility"),
                              ("R of forget prob after relearning all 40 (lr 1e-3)",
                               "forget prob after relearning all 40 (lr 1e-3)", "model utility")):
        for teacher in teachers:
            for alpha in config["alphas"]:
                names = [f"undo:{teacher}:a{alpha:g}:e{e}" for e in config["epochs"]]
                names = [n for n in names if n in rows]
                if not names:
                    continue
                x = [rows[n]["compute_fraction"]["mean"] for n in names]
                y = [rows[n][key]["mean"] for n in names]
                err = [rows[n][key]["sd"] for n in names]
                ax.errorbar(x, y, yerr=err, color=palette[teacher], marker=markers[alpha], ms=6, lw=1, capsize=2,
                            label=f"UNDO from {teacher}, alpha {alpha:g}")
            if teacher != "full" and teacher in rows:  # the plain unlearned model
                r = rows[teacher]
                ax.errorbar([r["compute_fraction"]["mean"]], [r[key]["mean"]], yerr=[r[key]["sd"]], ls="none",
                            marker="*", ms=13, mfc="none", color=palette[teacher], label=f"{teacher} (unlearned)")
        for name, style in (("retain", dict(marker="*", color="black", ms=15)),
                            ("full", dict(marker="X", color="grey", ms=10))):
            if name in rows:
                ax.errorbar([rows[name]["compute_fraction"]["mean"]], [rows[name][key]["mean"]],
                            yerr=[rows[name][key]["sd"]], ls="none",
                            label=f"{name} model" + (" (no extra compute)" if name == "full" else
                                                     " (retraining without the forget set)"), **style)
        if key == "R":
            ax.axhline(0.8, color="black", ls=":", lw=1, label="R = 0.8")
        elif key == "model_utility" and "full" in rows:
            ax.axhline(0.9 * rows["full"]["model_utility"]["mean"], color="grey", ls=":", lw=1,
                       label="0.9 x the full model's utility")
        ax.set_xlim(-0.03, 1.05)
        ax.set_xlabel("compute: (unlearning + distillation) / the retain model's training FLOPs")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    n = len(result["per_seed"])
    axes[0].set_title(f"robustness vs compute (mean ± sd, {n} seeds; marker: alpha; joined: "
                      f"{' and '.join(str(e) for e in config['epochs'])} epochs)", fontsize=9)
    axes[1].set_title("what relearning brings back (lower = more forgotten)", fontsize=9)
    axes[2].set_title("utility vs compute", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right center")
    fig.savefig(path, dpi=110)
    plt.close(fig)
