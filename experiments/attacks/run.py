"""The attack study: every objective at its operating point, re-judged by open-unlearning's privacy metrics and by
three attacks (leak@k, relearning, quantization), with the seed's full and retain models as the reference points.

    python -m experiments.attacks [--seeds 0 1 2 3 4] [--objectives ...] [--workers 2] [--out outputs/attacks]
                                  [--leak_n 200] [--prior results.json] [--siblings | --robustness]
                                  [--report_only]

Jobs run in worker processes (one torch thread each); each finished job is kept in OUT/attack_jobs/ and reused by a rerun
(resume). Writes OUT/results.{json,md} and the plots (experiments/attacks/report.py, plots.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ceu_rl.console import JobLines

from ..machine import machine_info
from ..mini_tofu.jobs import init_worker, quiet_progress_bars
from ..mini_tofu.run import InlineExecutor, completed
from . import jobs, report
from .config import REFERENCES, AttackStudyConfig, full_preset, robustness_preset, siblings_preset
from .points import operating_points


def _job_path(out: Path, seed: int, name: str) -> Path:
    return out / "attack_jobs" / f"seed{seed}" / f"{name}.json"  # beside mini-TOFU's jobs/ when sharing models


def run(cfg: AttackStudyConfig, workers: int = 2, command: str | None = None, report_only: bool = False) -> dict:
    start = time.time()
    quiet_progress_bars()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    points = operating_points(cfg.objectives, cfg.seeds, cfg.studies)
    meta = {"command": command or "python -m experiments.attacks " + " ".join(sys.argv[1:]), "workers": workers,
            "machine": machine_info(torch_threads=1 if workers > 0 else None)}
    todo = [(s, n) for s in cfg.seeds for n in REFERENCES] + sorted(points)
    records = {}
    for seed, name in todo:
        path = _job_path(out, seed, name)
        if path.is_file():
            records[(seed, name)] = json.loads(path.read_text())
    lines = JobLines(len(todo) - len(records), "attacks")
    print(f"[attacks] {len(cfg.seeds)} seeds x ({len(cfg.objectives)} objectives at their operating point + full + "
          f"retain): {len(todo) - len(records)} jobs to run ({len(records)} done already), {workers} worker(s)",
          flush=True)
    if workers > 0 and not report_only:
        import multiprocessing as mp

        executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
    else:
        executor = InlineExecutor()
    pending: dict = {}

    def submit(seed, name):
        if (seed, name) in records or report_only:
            if name == "full":
                queue_points(seed)
            return
        if name in REFERENCES:
            pending[executor.submit(jobs.reference_job, cfg, seed, name, out)] = (seed, name)
        else:
            p = points[(seed, name)]
            pending[executor.submit(jobs.point_job, cfg, seed, name, p["lr"], p["step"], out)] = (seed, name)

    def queue_seed(i):
        if i < len(cfg.seeds):
            for name in REFERENCES:
                submit(cfg.seeds[i], name)

    def queue_points(seed):  # the unlearning runs start from the seed's full model; then the next seed's models
        for s, name in sorted(points):
            if s == seed:
                submit(s, name)
        queue_seed(cfg.seeds.index(seed) + 1)  # seeds finish in order: a cut-short run has whole seeds

    with executor:
        queue_seed(0)
        for (seed, name), record in completed(pending):
            path = _job_path(out, seed, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
            records[(seed, name)] = record
            lines.done(f"seed {seed} {name}", record["wall_s"], cpu_s=round(record["cpu_s"]))
            if name == "full":
                queue_points(seed)
    if not report_only:
        meta["runtime_s"] = time.time() - start
    result = report.write(cfg, records, points, out, meta)
    print(f"[attacks] {meta.get('runtime_s', 0):.0f} s; results in {out}/results.{{json,md}}", flush=True)
    return result


def parse(argv=None):
    p = argparse.ArgumentParser(description="re-judge mini-TOFU's unlearned models with privacy metrics and attacks")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--objectives", nargs="+")
    p.add_argument("--leak_n", type=int, help="samples per forget question (default 200)")
    p.add_argument("--relearn_lrs", type=float, nargs="+")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--prior", help="a previous run's results.json whose seeds fill in those not run here")
    p.add_argument("--siblings", action="store_true", help="CE-U's siblings and their baselines at their operating "
                   "points in docs/mini_tofu_siblings (default out outputs/attacks_siblings)")
    p.add_argument("--robustness", action="store_true", help="issue 25's study: plain vs SAM vs adversarial forms, "
                   "leak@k after relearning (default out outputs/attacks_robustness)")
    p.add_argument("--report_only", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    overrides = {k: tuple(v) if isinstance(v, list) else v
                 for k in ("seeds", "objectives", "leak_n", "relearn_lrs", "out", "prior") if (v := getattr(args, k)) is not None}
    preset = siblings_preset if args.siblings else robustness_preset if args.robustness else full_preset
    return run(preset(**overrides), args.workers, report_only=args.report_only)
