"""Issue 16's answer from a finished `--full --rl` run: per seed, at matched utility (model utility >= 0.9x the seed's
full model's), does a CE-U-GRPO variant forget more than GRPO (same anchor)? The RL objectives against the offline
ones (docs/mini_tofu: NPO, CE-U+retain, IdkDPO) at the same utility and at their cost; the per-step mechanism (p of
the forget answers' tokens, p of negative-advantage and shared tokens).

    python -m experiments.mini_tofu.rl_answer [--rl outputs/mini_tofu_rl_full] [--offline docs/mini_tofu]
                                              [--out docs/mini_tofu_rl]

Writes answer.json and answer.md to --out, and copies the run's results, plots and traces there.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..stats import mean_sd
from .config import MATCHED_LR, rl_objective
from .report import METRICS, UTILITY_FRACTION

OFFLINE = ("npo", "ce_u_retain", "idk_dpo")
MECHANISM_STEPS = (1, 10, 20, 30, 40)
MECHANISM_KEYS = {"forget/p_y_mean": "p(forget answer tokens)", "ceu/p_negative_mean": "p(A<0 tokens)",
                  "ceu/p_shared_mean": "p(shared A<0 tokens)", "entropy": "entropy"}


def _objectives(per_seed: dict) -> dict:
    """objective -> its run names (one per learning rate), from a results.json's per_seed."""
    out: dict = {}
    for runs in per_seed.values():
        for name in runs:
            if "_lr" in name:
                out.setdefault(name.rsplit("_lr", 1)[0], set()).add(name)
    return {k: sorted(v) for k, v in out.items()}


def operating_point(seed_runs: dict, names: list[str]) -> dict:
    """Among the full model (step 0) and every evaluated (lr, step) of `names` with utility >= 0.9x the full model's:
    the highest forget quality (ties: lower forget prob) and, separately, the lowest forget prob."""
    full = seed_runs["full"]["0"]
    points = [("full", full)] + [(f"{n.rsplit('_lr', 1)[1]}@{step}", p) for n in names if n in seed_runs
                                 for step, p in seed_runs[n].items()]
    ok = [(where, p) for where, p in points if p["model_utility"] >= UTILITY_FRACTION * full["model_utility"]]
    fq_where, fq = max(ok, key=lambda wp: (wp[1]["forget_quality"], -wp[1]["forget_Q_A_Prob"]))
    pr_where, pr = min(ok, key=lambda wp: wp[1]["forget_Q_A_Prob"])
    return {"forget_quality": fq["forget_quality"], "fq_utility": fq["model_utility"], "fq_at": fq_where,
            "forget_prob": pr["forget_Q_A_Prob"], "prob_utility": pr["model_utility"], "prob_at": pr_where}


def compare(points: dict, seeds: list, variant: str, baseline: str) -> dict:
    """Per seed: does `variant` beat `baseline` at matched utility (higher forget quality; lower forget prob)?"""
    fq = [points[variant][s]["forget_quality"] > points[baseline][s]["forget_quality"] for s in seeds]
    fq_tie = [points[variant][s]["forget_quality"] == points[baseline][s]["forget_quality"] for s in seeds]
    prob = [points[variant][s]["forget_prob"] < points[baseline][s]["forget_prob"] for s in seeds]
    return {"variant": variant, "baseline": baseline, "seeds": seeds, "higher_fq": fq, "equal_fq": fq_tie,
            "lower_forget_prob": prob, "fq_every_seed": all(fq), "prob_every_seed": all(prob)}


def mechanism(records: dict, seeds: list, names: list[str]) -> dict:
    """name -> key -> step -> per-seed values (the RL runs' traces at the listed steps; step 0 = before)."""
    out = {}
    for name in names:
        rows = {}
        for key in MECHANISM_KEYS:
            rows[key] = {}
            for step in MECHANISM_STEPS:
                vals = [next((r[key] for r in records[(s, name)]["trace"] if r["step"] == step and key in r), None)
                        for s in seeds if (s, name) in records]
                if vals and None not in vals:
                    rows[key][str(step)] = mean_sd(vals)
        start = [records[(s, name)]["forget_p_start"] for s in seeds if (s, name) in records]
        if start:
            rows["forget/p_y_mean"]["0"] = mean_sd(start)
        out[name] = rows
    return out


def _load_records(folder: Path) -> dict:
    return {(int(p.parent.name.removeprefix("seed")), p.stem): json.loads(p.read_text())
            for p in sorted((folder / "jobs").glob("seed*/*.json"))}


def answer(rl_dir: Path, offline_dir: Path) -> dict:
    rl = json.loads((rl_dir / "results.json").read_text())
    offline = json.loads((offline_dir / "results.json").read_text())
    records = _load_records(rl_dir)
    seeds = sorted(int(s) for s in rl["per_seed"])
    same_models = {s: rl["per_seed"][str(s)]["full"] == offline["per_seed"][str(s)]["full"]
                   and rl["per_seed"][str(s)]["retain"] == offline["per_seed"][str(s)]["retain"] for s in seeds}
    objectives = {o: n for o, n in _objectives(rl["per_seed"]).items() if rl_objective(o)}
    points = {o: {s: operating_point(rl["per_seed"][str(s)], names) for s in seeds
                  if all(n in rl["per_seed"][str(s)] for n in names)} for o, names in objectives.items()}
    off_names = _objectives(offline["per_seed"])
    for o in OFFLINE:
        points[o] = {s: operating_point(offline["per_seed"][str(s)], off_names[o]) for s in seeds}
    comparisons = []
    for o in objectives:
        variant, anchor = rl_objective(o)
        base = "grpo" + (f"_{anchor}" if anchor else "")
        if variant != "pg" and base in points:
            common = sorted(set(points[o]) & set(points[base]))
            comparisons.append(compare(points, common, o, base))
    for o in objectives:  # RL vs the offline objectives
        for off in OFFLINE:
            common = sorted(set(points[o]) & set(points[off]))
            comparisons.append(compare(points, common, o, off))
    cost = {}
    for o, names in objectives.items():
        runs = [records[(s, n)] for s in seeds for n in names if (s, n) in records]
        cost[o] = {"runs": len(runs), "cpu_s": mean_sd([r["cpu_s"] for r in runs]),
                   "eval_cpu_s": mean_sd([r["eval_cpu_s"] for r in runs]),
                   "generated_tokens": mean_sd([r["generated_tokens"] for r in runs])}
    for o in OFFLINE:
        runs = [r for (s, n), r in records.items() if n.startswith(f"{o}_lr")]
        if runs:
            cost[o] = {"runs": len(runs), "cpu_s": mean_sd([r["cpu_s"] for r in runs]), "generated_tokens": None}
    lr = f"{MATCHED_LR:g}"
    mech_names = [f"{o}_lr{lr}" for o in objectives if f"{o}_lr{lr}" in objectives[o]]
    return {"rl_command": rl["command"], "rl_machine": rl["machine"], "rl_complete": rl["complete"],
            "offline_command": offline["command"], "seeds": seeds, "same_full_and_retain_models": same_models,
            "utility_fraction": UTILITY_FRACTION, "operating_points": {o: {str(s): v for s, v in p.items()}
                                                                       for o, p in points.items()},
            "comparisons": comparisons, "cost": cost, "mechanism_lr": MATCHED_LR,
            "mechanism": mechanism(records, seeds, mech_names)}


def _g(v):
    return f"{v:.2g}"


def markdown(ans: dict) -> str:
    seeds = ans["seeds"]
    lines = [f"### Operating point: model utility >= {ans['utility_fraction']} x the seed's full model's (over each "
             "objective's learning rates and evaluated steps; per seed, in seed order " + str(seeds) + ")", "",
             "| objective | forget quality (per seed) | its utility | forget prob, lowest (per seed) | its utility "
             "| picked lr@step (forget prob) |", "|---|---|---|---|---|---|"]
    for o, pts in ans["operating_points"].items():
        ps = [pts[str(s)] for s in seeds if str(s) in pts]
        if not ps:
            continue
        cols = [", ".join(_g(p["forget_quality"]) for p in ps)]
        cols += [", ".join(f"{p[k]:.2f}" for p in ps) for k in ("fq_utility", "forget_prob", "prob_utility")]
        cols.append(", ".join(p["prob_at"] for p in ps))
        lines.append(f"| {o} | " + " | ".join(cols) + " |")
    lines += ["", "### Per seed at matched utility: does the variant beat the baseline? (Y = yes, = tie, n = no)", "",
              "| variant | baseline | higher forget quality | lower forget prob | every seed (FQ / prob) |",
              "|---|---|---|---|---|"]
    for c in ans["comparisons"]:
        fq = "".join("=" if t else ("Y" if h else "n") for h, t in zip(c["higher_fq"], c["equal_fq"]))
        pr = "".join("Y" if h else "n" for h in c["lower_forget_prob"])
        lines.append(f"| {c['variant']} | {c['baseline']} | {fq} | {pr} | {'yes' if c['fq_every_seed'] else 'no'} / "
                     f"{'yes' if c['prob_every_seed'] else 'no'} |")
    lines += ["", "### Cost per run (mean ± sd over runs; CPU seconds include the 2 evaluations)", "",
              "| objective | runs | CPU s | of which evaluation | generated tokens |", "|---|---|---|---|---|"]
    for o, c in ans["cost"].items():
        ev = f"{c['eval_cpu_s']['mean']:.1f}" if "eval_cpu_s" in c else "-"
        gen = c["generated_tokens"]
        tok = f"{gen['mean']:.0f} ± {gen['sd']:.0f}" if gen else "0"
        lines.append(f"| {o} | {c['runs']} | {c['cpu_s']['mean']:.1f} ± {c['cpu_s']['sd']:.1f} | {ev} | {tok} |")
    lines += ["", f"### Mechanism at lr {ans['mechanism_lr']:g} (mean over seeds ± sd; after the step's update; "
              "step 0 = the full model)", ""]
    for key, title in MECHANISM_KEYS.items():
        steps = ["0", *map(str, MECHANISM_STEPS)] if key == "forget/p_y_mean" else list(map(str, MECHANISM_STEPS))
        lines += [f"**{title}**", "", "| run | " + " | ".join(f"step {s}" for s in steps) + " |",
                  "|---" * (len(steps) + 1) + "|"]
        for name, rows in ans["mechanism"].items():
            cells = [f"{rows[key][s]['mean']:.3f} ± {rows[key][s]['sd']:.3f}" if s in rows[key] else "-"
                     for s in steps]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    same = ans["same_full_and_retain_models"]
    lines.append(f"Full and retain models identical to docs/mini_tofu's (every eval number equal): "
                 f"{ {int(k): v for k, v in same.items()} }. RL run complete: {ans['rl_complete']}. "
                 f"RL command: `{ans['rl_command']}`; machine: {ans['rl_machine']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rl", default="outputs/mini_tofu_rl_full")
    p.add_argument("--offline", default="docs/mini_tofu")
    p.add_argument("--out", default="docs/mini_tofu_rl")
    args = p.parse_args(argv)
    rl_dir, out = Path(args.rl), Path(args.out)
    ans = answer(rl_dir, Path(args.offline))
    out.mkdir(parents=True, exist_ok=True)
    (out / "answer.json").write_text(json.dumps(ans, indent=1, default=str))
    (out / "answer.md").write_text(markdown(ans))
    for name in ("results.json", "results.md", "trajectories.png", "trajectories.json", "rl_mechanism.png",
                 "rl_traces.json", "unlearning_traces.png"):
        if (rl_dir / name).is_file() and rl_dir != out:
            shutil.copy(rl_dir / name, out / name)
    print((out / "answer.md").read_text())
    return ans


if __name__ == "__main__":
    main()
