"""The dpo_compare report: per method x learning rate, mean +- sd over seeds with per-seed values, the sign of each
change in every seed, a Markdown table and a figure. Reads the per-run JSONs of run.py; missing runs are listed (a
partial grid is labelled as such)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.stats import fmt, mean_sd

METRICS = ("train_chosen_change", "train_rejected_change", "train_reward_margin", "train_reward_accuracy",
           "heldout_chosen_change", "heldout_rejected_change", "heldout_reward_margin", "heldout_reward_accuracy",
           "retain_change")
SHORT = {"train_chosen_change": "chosen Δ", "train_rejected_change": "rejected Δ",
         "train_reward_margin": "margin", "train_reward_accuracy": "acc",
         "heldout_chosen_change": "held-out chosen Δ", "heldout_rejected_change": "held-out rejected Δ",
         "heldout_reward_margin": "held-out margin", "heldout_reward_accuracy": "held-out acc",
         "retain_change": "retain Δ"}


def sign_in_every_seed(values) -> str:
    """'+' if every per-seed value is > 0, '-' if every one is < 0, '0' if all are 0, '±' otherwise."""
    if all(v == 0 for v in values):
        return "0"
    return "+" if all(v > 0 for v in values) else "-" if all(v < 0 for v in values) else "±"


def aggregate(rows: list[dict], methods: list[str], lrs: list[str]) -> dict:
    """{method: {lr: {metric: mean_sd (+ per-seed order "seeds"), "signs": {metric: sign}}}} over the runs present."""
    summary = {}
    for name in methods:
        for lr in lrs:
            runs = sorted((r for r in rows if r["method"] == name and r["lr"] == lr), key=lambda r: r["seed"])
            if not runs:
                continue
            cell = {m: mean_sd([r[m] for r in runs]) for m in METRICS}
            cell["seeds"] = [r["seed"] for r in runs]
            cell["signs"] = {m: sign_in_every_seed(cell[m]["per_seed"]) for m in METRICS}
            summary.setdefault(name, {})[lr] = cell
    return summary


PAIRED = ("train_chosen_change", "train_rejected_change", "heldout_reward_margin", "heldout_reward_accuracy",
          "retain_change")


def paired_signs(summary: dict, baseline: str = "DPO") -> dict:
    """{method: {lr: {metric: sign of (method - baseline) in every seed both ran}}}: paired, same seed and lr."""
    out = {}
    for name, by_lr in summary.items():
        for lr, cell in by_lr.items():
            base = summary.get(baseline, {}).get(lr)
            if name == baseline or base is None:
                continue
            common = [s for s in cell["seeds"] if s in base["seeds"]]
            diffs = {m: [cell[m]["per_seed"][cell["seeds"].index(s)] - base[m]["per_seed"][base["seeds"].index(s)]
                         for s in common] for m in PAIRED}
            out.setdefault(name, {})[lr] = {m: sign_in_every_seed(d) for m, d in diffs.items()}
    return out


def markdown(summary: dict, meta: dict, missing: list[str]) -> str:
    columns = ("train_chosen_change", "train_rejected_change", "train_reward_margin", "heldout_chosen_change",
               "heldout_rejected_change", "heldout_reward_margin", "heldout_reward_accuracy", "retain_change")
    lines = ["| method | lr | " + " | ".join(SHORT[c] for c in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, by_lr in summary.items():
        for lr, cell in by_lr.items():
            cells = [f"{fmt(cell[c], '.2f')} ({cell['signs'][c]})" for c in columns]
            lines.append(f"| {name} | {lr} | " + " | ".join(cells) + " |")
    seeds = sorted({s for by_lr in summary.values() for cell in by_lr.values() for s in cell["seeds"]})
    lines += ["", f"mean ± sd over seeds {seeds} (sd with n - 1); in brackets the sign in every seed ('+' all > 0, "
              "'-' all < 0, '±' mixed). Δ: change of the summed completion log-prob (nats) from the SFT model; "
              "margin: beta (chosen Δ - rejected Δ); acc: fraction of pairs with margin > 0. Per-seed values in "
              "results.json and per_seed.md."]
    paired = paired_signs(summary)
    if paired:
        lines += ["", "Paired with DPO (same seed and learning rate): sign of (method - DPO) in every seed ('+' higher "
                  "in every seed, '-' lower in every seed, '0' equal, '±' mixed).", "",
                  "| method | lr | " + " | ".join(SHORT[m] for m in PAIRED) + " |", "|---|---|" + "---|" * len(PAIRED)]
        for name, by_lr in paired.items():
            for lr, signs in by_lr.items():
                lines.append(f"| {name} | {lr} | " + " | ".join(signs[m] for m in PAIRED) + " |")
    if meta.get("shared_prefix"):
        fractions = [v["rejected_tokens_shared"] for v in meta["shared_prefix"].values()]
        lines.append(f"\nRejected completion tokens in the prefix shared with the chosen completion (training pairs): "
                     f"{min(fractions):.1%} to {max(fractions):.1%} over seeds.")
    if missing:
        lines.append(f"\n**Partial grid**: {len(missing)} runs missing (listed in results.json).")
    lines.append(f"\nCommand: `{meta['command']}`; machine: {meta['machine']}")
    return "\n".join(lines)


def per_seed_markdown(summary: dict) -> str:
    lines = []
    for metric in METRICS:
        lines += [f"\n### {metric}\n", "| method | lr | per seed |", "|---|---|---|"]
        for name, by_lr in summary.items():
            for lr, cell in by_lr.items():
                values = ", ".join(f"{s}: {v:.2f}" for s, v in zip(cell["seeds"], cell[metric]["per_seed"]))
                lines.append(f"| {name} | {lr} | {values} |")
    return "# dpo_compare: per-seed values\n" + "\n".join(lines) + "\n"


def plot(summary: dict, lrs: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("train_chosen_change", "training pairs: chosen log-prob change (nats)"),
              ("train_rejected_change", "training pairs: rejected log-prob change (nats)"),
              ("heldout_reward_margin", "held-out pairs: reward margin"),
              ("retain_change", "unrelated retain answers: log-prob change (nats)"))
    names = list(summary)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(9.0, 0.75 * len(names)), 3.1 * len(panels)), sharex=True)
    colors = ("tab:blue", "tab:red", "tab:green", "tab:purple")
    width = 0.7 / max(len(lrs), 1)
    for ax, (metric, label) in zip(axes, panels):
        for j, lr in enumerate(lrs):
            for i, name in enumerate(names):
                cell = summary[name].get(lr)
                if cell is None:
                    continue
                x = i - 0.35 + width * (j + 0.5)
                values = cell[metric]["per_seed"]
                ax.scatter([x] * len(values), values, s=12, color=colors[j % len(colors)], alpha=0.7,
                           label=f"lr {lr}: one dot per seed" if i == 0 else None)
                ax.hlines(cell[metric]["mean"], x - width / 2.2, x + width / 2.2, color=colors[j % len(colors)], lw=2,
                          label=f"lr {lr}: mean" if i == 0 else None)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_ylabel(label, fontsize=8)
        if "change" in metric:
            ax.set_yscale("symlog", linthresh=1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(names)))
    axes[-1].set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    fig.legend(handles, labels, loc="upper center", ncol=2 * len(lrs), fontsize=8, bbox_to_anchor=(0.5, 0.965))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(summary: dict, lrs: list[str], path: Path, title: str) -> None:
    """Mean over seeds per method x lr (bars: sd): rejected change against chosen change and against collateral."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    cmap = plt.get_cmap("tab20")
    markers = ("o", "s", "^", "D")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    for ax, (ymetric, ylabel) in zip(axes, (("train_chosen_change", "chosen log-prob change (training pairs, nats)"),
                                            ("retain_change", "retain-answer log-prob change (collateral, nats)"))):
        for i, name in enumerate(names):
            for j, lr in enumerate(lrs):
                cell = summary[name].get(lr)
                if cell is None:
                    continue
                x, y = cell["train_rejected_change"], cell[ymetric]
                ax.errorbar(x["mean"], y["mean"], xerr=x["sd"], yerr=y["sd"], fmt=markers[j % len(markers)],
                            color=cmap(i % 20), ms=6, lw=0.8, label=name if j == 0 else None)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.axvline(0.0, color="k", lw=0.6)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.margins(0.1)
        ax.set_xlabel("rejected log-prob change (training pairs, nats; left = suppressed)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    lr_handles = [plt.Line2D([], [], color="gray", marker=markers[j % len(markers)], ls="", label=f"lr {lr}")
                  for j, lr in enumerate(lrs)]
    fig.legend(handles + lr_handles, labels + [h.get_label() for h in lr_handles], loc="center right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.8, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, run_paths: list[Path], methods: list[str], lrs: list[str], meta: dict) -> dict:
    rows = [json.loads(p.read_text()) for p in run_paths if p.is_file()]
    missing = [str(p.relative_to(out)) for p in run_paths if not p.is_file()]
    summary = aggregate(rows, methods, lrs)
    seeds = sorted({r["seed"] for r in rows})
    result = {**meta, "complete": not missing, "missing_runs": missing, "seeds": seeds, "learning_rates": lrs,
              "summary": summary, "paired_with_dpo": paired_signs(summary), "runs": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(summary, meta, missing) + "\n")
    (out / "per_seed.md").write_text(per_seed_markdown(summary))
    if summary:
        kind = meta.get("settings", {}).get("pair_kind", "perturbed")
        title = (f"DPO, the field's fixes and CE-U-DPO variants on TOFU pairs ({kind} rejected answers; tiny "
                 f"Llama), seeds {seeds}"
                 + ("" if not missing else f" (PARTIAL: {len(missing)} runs missing)"))
        plot(summary, lrs, out / "dpo_compare.png", title)
        plot_tradeoff(summary, lrs, out / "dpo_compare_tradeoff.png",
                      "Suppression vs chosen answer and collateral damage: mean ± sd over seeds " + str(seeds)
                      + " per method (colour) and learning rate (marker)")
    print(f"results in {out}/results.{{json,md}}, per_seed.md, dpo_compare.png, dpo_compare_tradeoff.png"
          + (f" ({len(missing)} runs missing)" if missing else ""), flush=True)
    return result
