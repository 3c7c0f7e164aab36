"""Aggregation of grpo_compare.py runs: per (task, learning rate, objective) mean, sd and per-seed values, the
default-objective test of issue 10 and the "beats GRPO" test, a markdown table and a plot with a band across seeds.

Criteria (computed against "pg" on the seeds both have, same task and learning rate):
- default: reward gain (final - warm-started reward, held-out) >= 0.8x GRPO's and entropy over the last 20% of
  steps <= 1.1x the first 5 steps; checked on the seed means ("mean") and seed by seed ("every_seed").
- beats GRPO: final reward higher in every seed, or equal reward (the paired per-seed differences' mean within two
  standard errors of 0) with a lower gradient-norm variance in every seed and entropy kept (last/first >= 0.9 in
  every seed).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from experiments.stats import mean_sd

PER_SEED = ("reward_warm", "reward_final", "reward_gain", "reward_greedy_final", "reward_last", "entropy_first",
            "entropy_last", "entropy_ratio", "grad_norm_mean", "grad_norm_var", "shared/p_mean_first",
            "shared/p_mean_last", "shared/fraction_first", "shared/p_divergent_first", "shared/p_divergent_last",
            "ceu/p_negative_mean_last", "ceu/weight_mean_first", "ceu/weight_mean_last", "train_seconds")
PLOT_KEYS = (("reward", "training reward"), ("entropy", "entropy"), ("grad_norm", "gradient norm"),
             ("shared/p_mean", "mean p, shared tokens"))
GAIN_FRACTION, ENTROPY_MAX_RATIO, ENTROPY_KEPT = 0.8, 1.1, 0.9
FIRST_STEPS = 5  # "first": the warm-started model before training has moved it much; "last": the last 20% of steps
STEP_KEYS = ("reward", "entropy", "grad_norm", "shared/p_mean", "shared/fraction", "shared/p_divergent",
             "ceu/p_negative_mean", "ceu/weight_mean")  # the last: the trainer's mean w on A < 0 tokens (CE-U variants)


def _part(values, part):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values[:FIRST_STEPS] if part == "first" else values[-max(1, len(values) // 5):])


def derived(row: dict) -> dict:
    """Per-run statistics from the per-step history: first/last means, entropy ratio, gradient-norm mean and
    variance over steps."""
    series = {k: [h.get(k) for h in row["history"]] for k in STEP_KEYS}
    out = {f"{k}_{part}": _part(series[k], part) for k in STEP_KEYS for part in ("first", "last")}
    grad = [g for g in series["grad_norm"] if g is not None]
    out["entropy_ratio"] = out["entropy_last"] / out["entropy_first"]
    out["grad_norm_mean"], out["grad_norm_var"] = statistics.fmean(grad), statistics.pvariance(grad)
    return out


def _stats(values):
    values = [v for v in values if v is not None]
    return mean_sd(values) if values else {"mean": None, "sd": None}


def _cells(rows):
    cells = {}
    for r in rows:
        r = {**r, **derived(r)}
        cells.setdefault((r["task"], r["learning_rate"], r["objective"]), {})[r["seed"]] = r
    return cells


def _decision(variant: dict, pg: dict) -> dict:
    seeds = sorted(set(variant) & set(pg))
    v = {k: [variant[s][k] for s in seeds] for k in PER_SEED}
    g = {k: [pg[s][k] for s in seeds] for k in PER_SEED}
    mean = {k: _stats(x)["mean"] for k, x in v.items()}
    pg_mean = {k: _stats(x)["mean"] for k, x in g.items()}
    gain_ratio = mean["reward_gain"] / pg_mean["reward_gain"] if pg_mean["reward_gain"] > 0 else None
    seed_ok = [gv >= GAIN_FRACTION * gp and e <= ENTROPY_MAX_RATIO
               for gv, gp, e in zip(v["reward_gain"], g["reward_gain"], v["entropy_ratio"])]
    diff = [a - b for a, b in zip(v["reward_final"], g["reward_final"])]
    standard_error = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
    equal_lower_var = (abs(statistics.fmean(diff)) <= 2 * standard_error
                       and all(a < b for a, b in zip(v["grad_norm_var"], g["grad_norm_var"]))
                       and all(e >= ENTROPY_KEPT for e in v["entropy_ratio"]))
    return {
        "seeds": seeds,
        "gain_ratio_of_means": gain_ratio,
        "gain_ratio_per_seed": [a / b if b > 0 else None for a, b in zip(v["reward_gain"], g["reward_gain"])],
        "entropy_ratio_mean": mean["entropy_ratio"],
        "default_ok_mean": gain_ratio is not None and gain_ratio >= GAIN_FRACTION
        and mean["entropy_ratio"] <= ENTROPY_MAX_RATIO,
        "default_ok_every_seed": all(seed_ok),
        "final_reward_diff_per_seed": diff,
        "final_reward_diff_mean": statistics.fmean(diff),
        "final_reward_diff_standard_error": standard_error,
        "seeds_with_higher_final_reward": sum(d > 0 for d in diff),
        "grad_var_ratio_per_seed": [a / b for a, b in zip(v["grad_norm_var"], g["grad_norm_var"])],
        "beats_grpo_higher_reward_every_seed": all(d > 0 for d in diff),
        "beats_grpo_equal_reward_lower_grad_var": equal_lower_var,
    }


def summarize(rows, objectives):
    cells = _cells(rows)
    table, decisions = [], []
    for (task, lr, objective), by_seed in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1],
                                                                                 objectives.index(kv[0][2]))):
        seeds = sorted(by_seed)
        table.append({"task": task, "learning_rate": lr, "objective": objective, "seeds": seeds,
                      **{k: {**_stats([by_seed[s][k] for s in seeds]), "per_seed": [by_seed[s][k] for s in seeds]}
                         for k in PER_SEED}})
        pg = cells.get((task, lr, "pg"))
        if objective != "pg" and pg:
            decisions.append({"task": task, "learning_rate": lr, "objective": objective, **_decision(by_seed, pg)})
    verdict = {}
    for objective in objectives[1:]:
        mine = [d for d in decisions if d["objective"] == objective]
        if mine:
            verdict[objective] = {"default_ok_in_every_cell_mean": all(d["default_ok_mean"] for d in mine),
                                  "default_ok_in_every_cell_every_seed": all(d["default_ok_every_seed"] for d in mine),
                                  "cells": len(mine)}
    return table, decisions, verdict


def markdown(table, decisions) -> str:
    def f(cell, key, digits=3):
        s = cell[key]
        return "n/a" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"

    lines = ["| task | lr | objective | seeds | final reward | gain | entropy first -> last | grad-norm mean | "
             "grad-norm var | p shared, first -> last | gain / GRPO's | default test (mean; every seed) |",
             "|" + "---|" * 12]
    index = {(d["task"], d["learning_rate"], d["objective"]): d for d in decisions}
    for c in table:
        d = index.get((c["task"], c["learning_rate"], c["objective"]))
        ratio = "" if d is None or d["gain_ratio_of_means"] is None else f"{d['gain_ratio_of_means']:.2f}x"
        test = "" if d is None else f"{'pass' if d['default_ok_mean'] else 'fail'}; " \
                                    f"{'pass' if d['default_ok_every_seed'] else 'fail'}"
        lines.append(f"| {c['task']} | {c['learning_rate']:g} | {c['objective']} | {len(c['seeds'])} | "
                     f"{f(c, 'reward_final')} | {f(c, 'reward_gain')} | {f(c, 'entropy_first', 2)} -> "
                     f"{f(c, 'entropy_last', 2)} | {f(c, 'grad_norm_mean', 2)} | {f(c, 'grad_norm_var', 3)} | "
                     f"{f(c, 'shared/p_mean_first', 2)} -> {f(c, 'shared/p_mean_last', 2)} | {ratio} | {test} |")
    return "\n".join(lines) + "\n"


def _smooth(values, window=8):
    """Trailing moving average that skips missing steps (nan where a window has none)."""
    import numpy as np

    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    return [np.nanmean(x[max(0, i - window + 1): i + 1]) if np.isfinite(x[max(0, i - window + 1): i + 1]).any()
            else np.nan for i in range(len(x))]


def plot(rows, objectives, path: Path) -> None:
    import warnings

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], r["learning_rate"]) for r in rows}, key=lambda x: (x[0], -x[1]))
    fig, axes = plt.subplots(len(panels), len(PLOT_KEYS), figsize=(4 * len(PLOT_KEYS), 2.8 * len(panels)),
                             squeeze=False)
    for row_axes, (task, lr) in zip(axes, panels):
        for objective in objectives:
            runs = [r for r in rows if (r["task"], r["learning_rate"], r["objective"]) == (task, lr, objective)]
            if not runs:
                continue
            for ax, (key, title) in zip(row_axes, PLOT_KEYS):
                curves = [_smooth([h.get(key) for h in r["history"]]) for r in runs]
                n = min(len(c) for c in curves)
                stack = np.array([c[:n] for c in curves])
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # steps where no seed has a value
                    mean, sd = np.nanmean(stack, axis=0), np.nan_to_num(np.nanstd(stack, axis=0))
                steps = np.arange(1, n + 1)
                line, = ax.plot(steps, mean, label=f"{objective} ({len(runs)} seeds)", lw=1.2)
                ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.15, lw=0)
                ax.set_title(f"{task}, lr {lr:g}: {title}", fontsize=9)
                ax.set_xlabel("step", fontsize=8)
        row_axes[0].legend(fontsize=7)
    fig.suptitle("GRPO (pg) vs CE-U-GRPO variants: mean over seeds, band = ±1 sd (8-step moving average)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    fig.savefig(path, dpi=75)
    plt.close(fig)


def _rounded(value, digits=6):
    """Floats to `digits` significant digits (the per-step logs are float32: nothing meaningful is lost)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def write_report(out: Path, run_paths, objectives, meta: dict) -> dict:
    rows = [json.loads(p.read_text()) for p in run_paths if p.is_file()]
    table, decisions, verdict = summarize(rows, objectives)
    summary = {**meta, "objectives": objectives, "criteria": __doc__.split("Criteria", 1)[1].strip(),
               "runs": len(rows), "train_seconds_all_runs": round(sum(r["train_seconds"] for r in rows)),
               "table": table, "decisions": decisions, "verdict": verdict}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(table, decisions))
    with open(out / "runs.jsonl", "w") as f:  # every run with its per-step history, one per line
        for r in rows:
            f.write(json.dumps(_rounded(r)) + "\n")
    if rows:
        plot(rows, objectives, out / "grpo_compare.png")
    return summary
