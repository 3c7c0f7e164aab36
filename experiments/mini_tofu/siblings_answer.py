"""Issue 26's answer from a finished `--siblings` run: per seed, at matched utility (>= 0.9x the seed's full model's),
where CE-U stands among its siblings (WGA, SatImp, UNDIAL, RMU against CE-U, CE-U+retain, GA, NPO of docs/mini_tofu),
and whether WGA's or SatImp's weight as the RL negative does what ceu_full does against GRPO (all with the retain
anchor). The baselines run in the --siblings study itself; a committed study's run (docs/mini_tofu, docs/mini_tofu_rl)
fills in a name only where that seed's full model is the same model (equal metrics: the same machine), so the
per-seed comparison is always like for like.

    python -m experiments.mini_tofu.siblings_answer [--siblings outputs/mini_tofu_siblings] [--out docs/mini_tofu_siblings]

Writes answer.{json,md} to --out and copies the run's results and plots there.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from .rl_answer import _objectives, compare, operating_point

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = (ROOT / "docs" / "mini_tofu" / "results.json", ROOT / "docs" / "mini_tofu_rl" / "results.json")
PAIRS = (("ceu_full_retain", "grpo_retain"), ("ce_u_retain", "npo"), ("ce_u_retain", "wga"), ("ce_u_retain", "satimp"), ("ce_u_retain", "undial"), ("ce_u_retain", "rmu"),
         ("ce_u", "wga"), ("ce_u", "undial"), ("npo", "wga"), ("npo", "undial"), ("npo", "rmu"),
         ("wga", "ga"), ("undial", "ga"), ("ceu_full_retain", "rl_wga_retain"),
         ("ceu_full_retain", "rl_satimp_retain"), ("rl_wga_retain", "grpo_retain"), ("rl_satimp_retain", "grpo_retain"))


def merged_per_seed(siblings: dict, committed=COMMITTED) -> tuple[dict, list[str]]:
    """The siblings run's per-seed results, completed by the committed studies' runs of the same seed where the run
    lacks a name and that seed's full model is the same model in both (same metrics: same machine and settings);
    returns them and a note per (study, seed) left out because its full model differs."""
    per_seed = {s: dict(runs) for s, runs in siblings["per_seed"].items()}
    notes = []
    for path in committed:
        for seed, runs in json.loads(Path(path).read_text())["per_seed"].items():
            if seed not in per_seed:
                continue
            if runs["full"] != per_seed[seed]["full"]:
                notes.append(f"seed {seed}: {Path(path).parent.name} not used (its full model differs from this run's: "
                             "another machine or settings)")
                continue
            per_seed[seed].update({n: r for n, r in runs.items() if n not in per_seed[seed]})
    return per_seed, notes


def answer(siblings_dir: Path, committed=COMMITTED) -> dict:
    per_seed, notes = merged_per_seed(json.loads((siblings_dir / "results.json").read_text()), committed)
    seeds = sorted(per_seed, key=int)
    names = _objectives(per_seed)
    points = {o: {s: operating_point(per_seed[s], ns) for s in seeds} for o, ns in names.items()}
    wanted = {o for pair in PAIRS for o in pair}
    missing = sorted(o for o in wanted if o in points and any(p is None for p in points[o].values()))
    return {"seeds": [int(s) for s in seeds], "notes": notes,
            "points": {o: {s: p for s, p in ps.items()} for o, ps in points.items() if o in wanted},
            "comparisons": [compare(points, seeds, v, b) for v, b in PAIRS if v in points and b in points
                            and v not in missing and b not in missing]}


def _marks(flags, ties=None) -> str:
    ties = ties or [False] * len(flags)
    return "".join("Y" if f else "=" if t else "n" for f, t in zip(flags, ties))


def markdown(ans: dict) -> str:
    lines = [f"### Operating points per seed ({ans['seeds']}): utility >= 0.9x the full model's", "",
             "| objective | forget prob, lowest (per seed) | its utility | forget quality, highest | its utility |",
             "|---|---|---|---|---|"]
    for o, ps in ans["points"].items():
        v = list(ps.values())
        lines.append(f"| {o} | " + " | ".join(", ".join(f"{p[k]:.2g}" for p in v) for k in (
            "forget_prob", "prob_utility", "forget_quality", "fq_utility")) + " |")
    lines += ["", "### Per seed: does the first beat the second? (Y yes, = tie, n no)", "",
              "| variant | baseline | lower forget prob | higher forget quality | every seed (prob / FQ) |",
              "|---|---|---|---|---|"]
    for c in ans["comparisons"]:
        lines.append(f"| {c['variant']} | {c['baseline']} | {_marks(c['lower_forget_prob'])} | "
                     f"{_marks(c['higher_fq'], c['equal_fq'])} | {'yes' if c['prob_every_seed'] else 'no'} / "
                     f"{'yes' if c['fq_every_seed'] else 'no'} |")
    lines += [f"- {n}" for n in ans.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--siblings", default="outputs/mini_tofu_siblings")
    p.add_argument("--out", default="docs/mini_tofu_siblings")
    args = p.parse_args(argv)
    src, out = Path(args.siblings), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ans = answer(src)
    (out / "answer.json").write_text(json.dumps(ans, indent=1))
    (out / "answer.md").write_text(markdown(ans))
    for name in ("results.json", "results.md", "trajectories.png", "trajectories.json", "unlearning_traces.png"):
        if (src / name).is_file() and src != out:
            shutil.copy(src / name, out / name)
    print(markdown(ans))
    return ans


if __name__ == "__main__":
    main()
