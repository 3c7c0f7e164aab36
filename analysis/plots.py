"""The gradient-stability figures: (a) gradient magnitude vs confidence (closed form lines, autograd points);
(b) gradient norm and loss over training steps per objective pair; (c) p_y on the targeted tokens before and after;
(d) the net push on a token shared by a group's good and bad completions, per CE-U-GRPO variant (group_push.py);
(e) the same for a token shared by a DPO pair's chosen and rejected answers, per CE-U-DPO variant (dpo_push.py);
(f) (a) extended to CE-U's family: GA, CE-U, WGA, SatImp, UNDIAL, NPO, SimNPO, WTNPO (family.py). Each PNG comes with the JSON of the data it draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import closed_forms as cf
from . import dpo_push, group_push
from .empirical import logits_with_label_prob, token_gradient

# panel -> [(objective, closed-form function, kwargs)]
PAIRS = {
    "GA vs CE-U": [("gradient_ascent", cf.gradient_ascent, {}), ("ce_u", cf.ce_u, {})],
    "DPO rejected token vs CE-U-DPO (beta=0.1, u=0)": [
        ("dpo_rejected", cf.dpo_rejected, {"beta": 0.1, "u": 0.0}),
        ("ceu_dpo_rejected", cf.ceu_dpo_rejected, {"beta": 0.1, "u": 0.0})],
    "GRPO token with A=-1, r=1 vs CE-U-GRPO": [
        ("grpo_negative", cf.grpo_negative, {"advantage": -1.0, "ratio": 1.0}),
        ("ceu_grpo_negative", cf.ceu_grpo_negative, {"advantage": -1.0, "ratio": 1.0})],
}
TRACE_PAIRS = {"GA vs CE-U (unlearning)": ("ga", "ce_u"), "DPO vs CE-U-DPO": ("dpo", "ce_u_dpo"),
               "GRPO vs CE-U-GRPO": ("grpo", "ce_u_grpo")}


def confidence_grid(quick: bool) -> np.ndarray:
    """p_y from 0.01 to 1 - 1e-6: linear up to 0.9, then geometric towards 1."""
    return np.concatenate([np.linspace(0.01, 0.9, 6 if quick else 30), 1 - np.logspace(-1.5, -6, 4 if quick else 12)])


def gradient_vs_confidence_data(quick: bool = True, vocab: int = 1000) -> dict:
    grid = confidence_grid(quick)
    data = {}
    for panel, members in PAIRS.items():
        for objective, fn, kw in members:
            rows = []
            for i, p in enumerate(grid):
                z, y, q_sq = logits_with_label_prob(float(p), vocab, seed=i)
                auto = token_gradient(objective, z, y, **kw)
                closed = {k: float(v) for k, v in fn(p, q_sq, **kw).items()}
                rows.append({"p_y": float(p), "q_sq": q_sq, "autograd": auto, "closed_form": closed})
            data[objective] = {"panel": panel, "vocab": vocab, "rows": rows}
    return data


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_above_data(ax, ncol: int = 2, room: float = 0.45, **kw) -> None:
    """Extend the y-axis by `room` of its range and put the legend in that empty band, so it covers no data."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + room * (hi - lo))
    ax.legend(loc="upper center", ncol=ncol, fontsize=7, framealpha=0.9, **kw)


def plot_gradient_vs_confidence(data: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(PAIRS), figsize=(5 * len(PAIRS), 3.8))
    for ax, panel in zip(axes, PAIRS):
        for objective, d in data.items():
            if d["panel"] != panel:
                continue
            p = [r["p_y"] for r in d["rows"]]
            line = ax.plot(p, [r["closed_form"]["l2"] for r in d["rows"]], label=f"{objective} (closed form)")[0]
            ax.scatter(p, [r["autograd"]["l2"] for r in d["rows"]], color=line.get_color(), s=14, zorder=3,
                       label=f"{objective} (autograd)")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("p_y (confidence in the targeted token)")
        ax.set_ylabel("|dL/dz|_2 per token")
        _legend_above_data(ax)
    fig.suptitle("Gradient on the targeted token's logits vs its probability: closed form (lines) = float64 autograd "
                 "(dots)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_traces(traces: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(3, len(TRACE_PAIRS), figsize=(5.5 * len(TRACE_PAIRS), 8), squeeze=False)
    for col, (title, names) in enumerate(TRACE_PAIRS.items()):
        for name in names:
            recs = traces[name]["records"]
            steps = [r["step"] for r in recs]
            axes[0, col].plot(steps, [r["grad_norm"] for r in recs], label=name)
            axes[1, col].plot(steps, [r["loss"] for r in recs], label=name)
            axes[2, col].plot(steps, [r.get("p_y_mean", np.nan) for r in recs], label=name)
        axes[0, col].set_title(title)
        for row, label in enumerate(("whole-model gradient norm", "loss", "mean p_y on targeted tokens")):
            axes[row, col].set_ylabel(label)
            _legend_above_data(axes[row, col], room=0.35)
        axes[2, col].set_xlabel("step")
    fig.suptitle("Training traces on the same tiny model, data and seed: each method vs its CE-U counterpart",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_p_distribution(traces: dict, path: Path) -> None:
    plt = _plt()
    names = [n for n in traces if traces[n].get("p_before") is not None]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, name in zip(axes[0], names):
        ax.hist(traces[name]["p_before"], bins=bins, alpha=0.6, label="before")
        ax.hist(traces[name]["p_after"], bins=bins, alpha=0.6, label="after")
        ax.set_title(name)
        ax.set_xlabel("p_y on targeted tokens")
        _legend_above_data(ax, room=0.3)
    fig.suptitle("Probability of the targeted tokens before and after training (histogram of tokens)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_all(out: str | Path, quick: bool = True, real_model: str | None = None) -> dict[str, Path]:
    """Every figure; `real_model`: also the real-model panel (analysis/real_model.py) from that model folder, or
    replotted from a real_model_traces.json."""
    from .traces import run_traces

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    data = gradient_vs_confidence_data(quick)
    (out / "gradient_vs_confidence.json").write_text(json.dumps(data, indent=2))
    plot_gradient_vs_confidence(data, out / "gradient_vs_confidence.png")
    traces = run_traces(out / "runs", quick=quick)
    (out / "training_traces.json").write_text(json.dumps(traces, indent=2))
    plot_training_traces(traces, out / "training_traces.png")
    plot_p_distribution(traces, out / "p_y_before_after.png")
    for name in ("gradient_vs_confidence", "training_traces"):
        files[name] = out / f"{name}.png"
    files["p_y_before_after"] = out / "p_y_before_after.png"
    push = group_push.net_push_curves(points=51 if quick else 201)
    (out / "group_net_push.json").write_text(json.dumps(push, indent=2))
    group_push.plot_net_push(push, out / "group_net_push.png")
    files["group_net_push"] = out / "group_net_push.png"
    dpo = dpo_push.net_push_curves(points=51 if quick else 201)
    (out / "dpo_net_push.json").write_text(json.dumps(dpo, indent=2))
    dpo_push.plot_net_push(dpo, out / "dpo_net_push.png")
    files["dpo_net_push"] = out / "dpo_net_push.png"
    from .family import make_family

    files["family_vs_confidence"] = make_family(out, quick=quick)
    if real_model:
        files["real_model_traces"] = real_model_panel(out, real_model)
    return files


def real_model_panel(out: Path, real_model: str) -> Path:
    """GA vs CE-U traces on a real model folder (analysis/real_model.py), or replotted from their JSON."""
    from .real_model import plot_real_model_traces, real_model_traces

    if str(real_model).endswith(".json"):
        data = json.loads(Path(real_model).read_text())
    else:
        data = real_model_traces(real_model, out / "real_model_runs")
    (out / "real_model_traces.json").write_text(json.dumps(data, indent=1))
    plot_real_model_traces(data, out / "real_model_traces.png")
    return out / "real_model_traces.png"
