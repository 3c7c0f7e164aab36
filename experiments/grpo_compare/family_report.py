"""Aggregation of `family.py` runs: per (task, learning rate, method) mean, sd and per-seed values of pass@k, entropy,
reward and gradient norm; the regime test (does GRPO collapse?), the frontier answer and the default test; a
Markdown table and a plot (pass@k vs k, entropy vs step).

Criteria (each per seed, against "grpo" on the same task, learning rate and warm start):
- collapse (item 2): GRPO's entropy over the last 20% of steps < its first 5 steps' (entropy falls) and its pass@64
  below the warm start's (large-k narrowing).
- frontier (item 4): among the methods whose pass@1 is at most LOSS_AT_1 below GRPO's, the one with the highest
  pass@64 (ties: pass@16, then pass@1; the methods tied on pass@64 and pass@16 are listed too); per seed, at the
  matched learning rate and at each method's best rate (the rate with the highest seed-mean pass@64, ties: pass@1),
  against GRPO at its best rate.
- default: a CE-U variant's pass@1 gain over the warm start >= 0.8x GRPO's and its last entropy >= GRPO's, in every
  task at one learning rate (seed means; and seed by seed).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from experiments.grpo_compare.report import _part  # first-5 / last-20% step means, as the issue-10 study
from experiments.stats import mean_sd

KS = ("1", "4", "16", "64")
LOSS_AT_1 = 0.05
GAIN_FRACTION = 0.8
CEU_METHODS = ("ceu_min", "ceu_mix_0.25", "ceu_mix_0.5")


def derived(row: dict) -> dict:
    out = {f"pass@{k}": row["pass_at_k_final"][k] for k in KS}
    out.update({f"pass@{k}_warm": row["pass_at_k_warm"][k] for k in KS})
    out.update({f"pass@{k}_delta": row["pass_at_k_final"][k] - row["pass_at_k_warm"][k] for k in KS})
    for key in ("entropy", "reward"):
        series = [h.get(key) for h in row["history"]]
        out[f"{key}_first"], out[f"{key}_last"] = _part(series, "first"), _part(series, "last")
    out["entropy_ratio"] = out["entropy_last"] / out["entropy_first"]
    grad = [h["grad_norm"] for h in row["history"] if h.get("grad_norm") is not None]
    out["grad_norm_mean"], out["grad_norm_var"] = statistics.fmean(grad), statistics.pvariance(grad)
    out["train_seconds"] = row["train_seconds"]
    return out


PER_SEED = (*[f"pass@{k}" for k in KS], *[f"pass@{k}_warm" for k in KS], *[f"pass@{k}_delta" for k in KS],
            "entropy_first", "entropy_last", "entropy_ratio", "reward_first", "reward_last", "grad_norm_mean",
            "grad_norm_var", "train_seconds")


def _cells(rows):
    cells = {}
    for r in rows:
        cells.setdefault((r["task"], r["learning_rate"], r["method"]), {})[r["seed"]] = {**r, **derived(r)}
    return cells


def _winner(candidates: dict, grpo_pass1: float) -> dict:
    """Among the methods with pass@1 >= GRPO's - LOSS_AT_1: the one with the highest (pass@64, pass@16, pass@1), and
    every one tied with it on (pass@64, pass@16)."""
    ok = {m: c for m, c in candidates.items() if c["pass@1"] >= grpo_pass1 - LOSS_AT_1 - 1e-12}
    if not ok:
        return {"winner": None, "tied": []}
    best = max(ok, key=lambda m: (ok[m]["pass@64"], ok[m]["pass@16"], ok[m]["pass@1"]))
    tied = [m for m in ok if abs(ok[m]["pass@64"] - ok[best]["pass@64"]) < 1e-9
            and abs(ok[m]["pass@16"] - ok[best]["pass@16"]) < 1e-9]
    return {"winner": best, "tied": tied}


def summarize(rows, methods):
    cells = _cells(rows)
    tasks = sorted({k[0] for k in cells})
    rates = sorted({k[1] for k in cells}, reverse=True)
    table = []
    for task in tasks:
        for lr in rates:
            for m in methods:
                by_seed = cells.get((task, lr, m))
                if not by_seed:
                    continue
                seeds = sorted(by_seed)
                table.append({"task": task, "learning_rate": lr, "method": m, "seeds": seeds,
                              **{k: {**mean_sd([by_seed[s][k] for s in seeds]),
                                     "per_seed": [by_seed[s][k] for s in seeds]} for k in PER_SEED}})
    collapse, frontier, best_rate = [], [], {}
    for task in tasks:
        for lr in rates:
            grpo = cells.get((task, lr, "grpo"), {})
            if grpo:
                seeds = sorted(grpo)
                collapse.append({
                    "task": task, "learning_rate": lr, "seeds": seeds,
                    "entropy_ratio_per_seed": [grpo[s]["entropy_ratio"] for s in seeds],
                    "pass@64_final_minus_warm_per_seed": [grpo[s]["pass@64_delta"] for s in seeds],
                    "pass@1_final_minus_warm_per_seed": [grpo[s]["pass@1_delta"] for s in seeds],
                    "seeds_entropy_fell": sum(grpo[s]["entropy_ratio"] < 1 for s in seeds),
                    "seeds_pass64_below_warm": sum(grpo[s]["pass@64_delta"] < 0 for s in seeds)})
                for s in seeds:  # matched rate
                    cand = {m: cells[(task, lr, m)][s] for m in methods if s in cells.get((task, lr, m), {})}
                    frontier.append({"task": task, "setting": f"lr {lr:g}", "seed": s,
                                     **_winner(cand, grpo[s]["pass@1"]),
                                     "pass@1": {m: c["pass@1"] for m, c in cand.items()},
                                     "pass@64": {m: c["pass@64"] for m, c in cand.items()}})
        for m in methods:  # best rate per method: highest seed-mean pass@64, ties: pass@1
            def score(lr, m=m):
                c = cells.get((task, lr, m))
                if not c:
                    return None
                return tuple(statistics.fmean(x[k] for x in c.values()) for k in ("pass@64", "pass@1"))
            scored = [(score(lr), lr) for lr in rates if score(lr) is not None]
            if scored:
                best_rate[f"{task}/{m}"] = max(scored)[1]
    for task in tasks:  # frontier at each method's best rate, against GRPO at its best rate
        grpo_lr = best_rate.get(f"{task}/grpo")
        if grpo_lr is None:
            continue
        grpo = cells[(task, grpo_lr, "grpo")]
        for s in sorted(grpo):
            cand = {m: cells[(task, best_rate[f"{task}/{m}"], m)][s] for m in methods
                    if f"{task}/{m}" in best_rate and s in cells[(task, best_rate[f"{task}/{m}"], m)]}
            frontier.append({"task": task, "setting": "best rate", "seed": s,
                             **_winner(cand, grpo[s]["pass@1"]),
                             "pass@1": {m: c["pass@1"] for m, c in cand.items()},
                             "pass@64": {m: c["pass@64"] for m, c in cand.items()}})
    default = {}
    for m in CEU_METHODS:
        for lr in rates:
            per_task = {}
            for task in tasks:
                c, g = cells.get((task, lr, m)), cells.get((task, lr, "grpo"))
                if not c or not g:
                    continue
                seeds = sorted(set(c) & set(g))
                ok_seed = [c[s]["pass@1_delta"] >= GAIN_FRACTION * g[s]["pass@1_delta"]
                           and c[s]["entropy_last"] >= g[s]["entropy_last"] for s in seeds]
                mean = lambda d, k: statistics.fmean(d[s][k] for s in seeds)  # noqa: E731
                per_task[task] = {
                    "pass@1_gain": mean(c, "pass@1_delta"), "grpo_pass@1_gain": mean(g, "pass@1_delta"),
                    "entropy_last": mean(c, "entropy_last"), "grpo_entropy_last": mean(g, "entropy_last"),
                    "ok_mean": mean(c, "pass@1_delta") >= GAIN_FRACTION * mean(g, "pass@1_delta")
                    and mean(c, "entropy_last") >= mean(g, "entropy_last"), "ok_every_seed": all(ok_seed)}
            if per_task:
                default[f"{m} @ lr {lr:g}"] = {"tasks": per_task,
                                               "ok_mean": all(t["ok_mean"] for t in per_task.values()),
                                               "ok_every_seed": all(t["ok_every_seed"] for t in per_task.values())}
    return table, collapse, frontier, best_rate, default


def markdown(table, collapse, frontier, best_rate, default) -> str:
    def f(c, k, d=3):
        return f"{c[k]['mean']:.{d}f} ± {c[k]['sd']:.{d}f}"

    lines = ["| task | lr | method | seeds | pass@1 | pass@1 - warm (per seed) | pass@4 | pass@16 | pass@64 | "
             "pass@64 - warm (per seed) | entropy first -> last | grad-norm var |", "|" + "---|" * 12]
    for c in table:
        per = ", ".join(f"{x:+.3f}" for x in c["pass@64_delta"]["per_seed"])
        per1 = ", ".join(f"{x:+.3f}" for x in c["pass@1_delta"]["per_seed"])
        lines.append(f"| {c['task']} | {c['learning_rate']:g} | {c['method']} | {len(c['seeds'])} | "
                     f"{f(c, 'pass@1')} | {per1} | {f(c, 'pass@4')} | {f(c, 'pass@16')} | {f(c, 'pass@64')} | {per} | "
                     f"{f(c, 'entropy_first', 2)} -> {f(c, 'entropy_last', 2)} | {f(c, 'grad_norm_var')} |")
    warm = {}
    for c in table:
        warm.setdefault(c["task"], {k: c[f"pass@{k}_warm"] for k in KS})
    lines += ["", "Warm start (same held-out prompts and samples): "
              + "; ".join(f"{t}: " + ", ".join(f"pass@{k} {w[k]['mean']:.3f} ± {w[k]['sd']:.3f}" for k in KS)
                          for t, w in warm.items()), "", "GRPO's regime (per seed):", ""]
    for c in collapse:
        lines.append(f"- {c['task']} lr {c['learning_rate']:g}: entropy last/first "
                     f"{', '.join(f'{x:.2f}' for x in c['entropy_ratio_per_seed'])}; pass@64 - warm "
                     f"{', '.join(f'{x:+.3f}' for x in c['pass@64_final_minus_warm_per_seed'])}; pass@1 - warm "
                     f"{', '.join(f'{x:+.3f}' for x in c['pass@1_final_minus_warm_per_seed'])}")
    lines += ["", f"Frontier winners (highest pass@64 with pass@1 >= GRPO's - {LOSS_AT_1}), per seed:", ""]
    groups = {}
    for fr in frontier:
        tied = f" (tied on pass@64 and pass@16: {', '.join(fr['tied'])})" if len(fr["tied"]) > 1 else ""
        groups.setdefault((fr["task"], fr["setting"]), []).append(f"{fr['seed']}: {fr['winner']}{tied}")
    lines += [f"- {t}, {s}: " + "; ".join(v) for (t, s), v in groups.items()]
    lines += ["", "Best rate per method: " + ", ".join(f"{k} {v:g}" for k, v in best_rate.items()), "",
              "Default test (CE-U variant: pass@1 gain >= 0.8x GRPO's and last entropy >= GRPO's, every task):", ""]
    lines += [f"- {k}: mean {'pass' if v['ok_mean'] else 'fail'}, every seed {'pass' if v['ok_every_seed'] else 'fail'}"
              for k, v in default.items()]
    return "\n".join(lines) + "\n"


def plot(rows, methods, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    rates = sorted({r["learning_rate"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(len(tasks), 2 * len(rates), figsize=(4.2 * 2 * len(rates), 3.3 * len(tasks) + 1.2),
                             squeeze=False)
    colors = [plt.cm.tab10(i % 10) for i in range(len(methods))]
    styles = ["-" if i < 10 else ":" for i in range(len(methods))]  # past ten methods: dotted, colours again
    ks = [int(k) for k in KS]
    for ti, task in enumerate(tasks):
        for li, lr in enumerate(rates):
            ax_p, ax_e = axes[ti][li], axes[ti][len(rates) + li]
            warm = [r for r in rows if r["task"] == task and r["method"] == "grpo" and r["learning_rate"] == lr]
            if warm:
                w = np.array([[r["pass_at_k_warm"][k] for k in KS] for r in warm])
                ax_p.plot(ks, w.mean(0), "k--", lw=1.5, label="warm start")
            for mi, m in enumerate(methods):
                runs = [r for r in rows if (r["task"], r["learning_rate"], r["method"]) == (task, lr, m)]
                if not runs:
                    continue
                p = np.array([[r["pass_at_k_final"][k] for k in KS] for r in runs])
                ax_p.plot(ks, p.mean(0), styles[mi], marker="o", ms=3, color=colors[mi], lw=1.2,
                          label=f"{m} ({len(runs)} seeds)")
                ent = [[h["entropy"] for h in r["history"] if h.get("entropy") is not None] for r in runs]
                n = min(len(e) for e in ent)
                ax_e.plot(np.arange(1, n + 1), np.array([e[:n] for e in ent]).mean(0), styles[mi], color=colors[mi],
                          lw=1)
            ax_p.set_xscale("log", base=4)
            ax_p.set_xticks(ks, [str(k) for k in ks])
            ax_p.set_title(f"{task}, lr {lr:g}: pass@k (held-out)", fontsize=9)
            ax_p.set_xlabel("k", fontsize=8)
            ax_e.set_yscale("log")  # one run at the uniform distribution (~5.5) beside runs at 0.1
            ax_e.set_title(f"{task}, lr {lr:g}: entropy per step (log scale)", fontsize=9)
            ax_e.set_xlabel("step", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle("GRPO token-reweighting family, binary-success reward: pass@k vs k and entropy (mean over seeds)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=75)
    plt.close(fig)


def write_family_report(out: Path, run_paths, methods, meta: dict) -> dict:
    rows = [json.loads(p.read_text()) for p in run_paths]
    table, collapse, frontier, best_rate, default = summarize(rows, methods)
    summary = {**meta, "methods": methods, "criteria": __doc__.split("Criteria", 1)[1].strip(), "runs": len(rows),
               "train_seconds_all_runs": round(sum(r["train_seconds"] for r in rows)),
               "cpu_seconds_all_runs": round(sum(r.get("cpu_seconds", 0) for r in rows)),
               "table": table, "grpo_regime": collapse, "frontier": frontier, "best_rate": best_rate,
               "default_test": default}
    (out / "family_summary.json").write_text(json.dumps(summary, indent=1))
    (out / "family_summary.md").write_text(markdown(table, collapse, frontier, best_rate, default))
    with open(out / "family_runs.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    if rows:
        plot(rows, methods, out / "grpo_family.png")
    return summary
