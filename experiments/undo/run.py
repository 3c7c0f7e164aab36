"""The UNDO study on mini-TOFU (issue 32): per seed, the full and retain models, each teacher at its operating point,
and its students over the alpha grid and distillation lengths, each measured with the attack study's relearning.

    python -m experiments.undo [--seeds 0 1 2 3 4] [--teachers ...] [--alphas 0.2 0.5 0.8] [--epochs 5 10]
                               [--out outputs/undo] [--report_only]

One process, one torch thread; jobs run seed by seed (a cut-short run has whole seeds first) and each finished job is
kept in OUT/jobs/ and reused by a rerun (resume). Writes OUT/results.{json,md} and OUT/undo.png (report.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ceu_rl.console import JobLines

from ..attacks.points import operating_points
from ..machine import machine_info
from ..mini_tofu.jobs import quiet_progress_bars
from . import jobs, report
from .config import REFERENCES, UndoStudyConfig


def _path(out: Path, seed: int, name: str) -> Path:
    return out / "jobs" / f"seed{seed}" / f"{name}.json"


def plan(cfg: UndoStudyConfig, points: dict) -> list[tuple]:
    """(seed, kind, name, args) in run order; a teacher without an operating point in a seed is left out there."""
    todo = []
    for seed in cfg.seeds:
        todo += [(seed, "reference", name, ()) for name in REFERENCES]
        teachers = [t for t in cfg.teachers if t == "full" or (seed, t) in points]
        todo += [(seed, "teacher", t, (points[(seed, t)]["lr"], points[(seed, t)]["step"]))
                 for t in teachers if t != "full"]
        todo += [(seed, "students", f"students_{t}_a{a:g}", (t, a)) for t in teachers for a in cfg.alphas]
    return todo


def run(cfg: UndoStudyConfig, command: str | None = None, report_only: bool = False) -> dict:
    start = time.time()
    torch.set_num_threads(1)
    quiet_progress_bars()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    points = operating_points([t for t in cfg.teachers if t != "full"], cfg.seeds, cfg.studies)
    todo = plan(cfg, points)
    records = {(s, n): json.loads(_path(out, s, n).read_text()) for s, _, n, _ in todo if _path(out, s, n).is_file()}
    meta = {"command": command or "python -m experiments.undo " + " ".join(sys.argv[1:]),
            "machine": machine_info(torch_threads=1)}
    print(f"[undo] {len(cfg.seeds)} seeds: {len(todo) - len(records)} jobs to run ({len(records)} done already)",
          flush=True)
    lines = JobLines(len(todo) - len(records), "undo")
    for seed, kind, name, args in todo:
        if (seed, name) in records or report_only:
            continue
        if kind == "reference":
            record = jobs.reference_job(cfg, seed, name, out)
        elif kind == "teacher":
            record = jobs.teacher_job(cfg, seed, name, *args, out)
        else:
            record = jobs.students_job(cfg, seed, *args, out)
        jobs.save(_path(out, seed, name), record)
        records[(seed, name)] = record
        lines.done(f"seed {seed} {name}", record["wall_s"], cpu_s=round(record["cpu_s"]))
    if not report_only:
        meta["runtime_s"] = time.time() - start
    result = report.write(cfg, records, points, out, meta)
    print(f"[undo] {meta.get('runtime_s', 0):.0f} s; results in {out}/results.{{json,md}}", flush=True)
    return result


def parse(argv=None):
    p = argparse.ArgumentParser(description="UNDO (noise + distil the unlearned teacher) on mini-TOFU, attacked")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--teachers", nargs="+")
    p.add_argument("--alphas", type=float, nargs="+")
    p.add_argument("--epochs", type=int, nargs="+")
    p.add_argument("--out")
    p.add_argument("--report_only", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    overrides = {k: tuple(v) if isinstance(v, list) else v
                 for k in ("seeds", "teachers", "alphas", "epochs", "out") if (v := getattr(args, k)) is not None}
    return run(UndoStudyConfig(**overrides), report_only=args.report_only)
