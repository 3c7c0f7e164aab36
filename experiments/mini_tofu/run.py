"""Mini-TOFU over seeds and learning rates: the TOFU protocol offline on a tiny Llama built locally.

    python -m experiments.mini_tofu [--seeds 0 1 2] [--full] [--workers 2] [--out DIR]

Per seed: build a tokenizer and a randomly initialised 2-layer Llama; finetune it into the "full" model (retain
authors + forget authors + real-authors and world-facts QA) and the "retain" model (the same without the forget
authors); unlearn the full model with every objective at every learning rate, evaluating with the TOFU metrics at
several steps (forget quality against that seed's retain model). Writes, under the output folder, results.json
(config, machine, command, per seed, mean / sd, trajectories, best operating points), results.md,
trajectories.{png,json}, unlearning_traces.png, eval/seed<s>/<model>/TOFU_{EVAL,SUMMARY}.json and per-step logs in
logs/. Results are rewritten after every finished job, and jobs already done in the folder (jobs/) are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from ceu_rl.console import JobLines
from ceu_rl.tofu.data import load_split
from ceu_rl.tofu.evaluate import write_eval

from ..machine import machine_info
from . import jobs, plots, report, rl_jobs
from .config import (MATCHED_LR, RL_OBJECTIVES, MiniTofuConfig, full_preset, main_preset, rl_full_preset, rl_objective,
                     siblings_preset)

# may differ between runs that share job results
_RUN_FIELDS = ("out", "seeds", "objectives", "learning_rates", "objective_learning_rates")


def completed(pending: dict):
    """Yield (key, result) for the futures of `pending` ({future: key}) as they finish, including those submitted to
    it meanwhile (a finished seed's jobs queue the next seed's)."""
    while pending:
        finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for future in finished:
            key = pending.pop(future)
            yield key, future.result()


class InlineExecutor:
    """workers=0: every job in this process, one after the other (tests; no process start-up)."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _is_rl(name: str) -> bool:
    return rl_objective(name.rsplit("_lr", 1)[0]) is not None


def _job_settings(cfg: MiniTofuConfig, name: str) -> dict:
    """The settings a job's result depends on: the RL settings (rl_*) only for RL jobs, so that finetunes and
    offline runs stay reusable when they change; `attacks` only as whether this job's model is attacked."""
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in (*_RUN_FIELDS, "attacks", "attacked") and (_is_rl(name) or not k.startswith("rl_"))}
    if name.rsplit("_lr", 1)[0] in (*cfg.attacks, *getattr(cfg, "attacked", ())):  # real_tofu's list: "attacked"
        settings["attacked"] = True
    return settings


def load_done(out: Path, cfg: MiniTofuConfig, seed: int, name: str):
    """A finished job's record (None when not run); an error when it was made with other settings. Shared by the
    studies that reuse mini-TOFU's job layout (real_tofu)."""
    path = out / "jobs" / f"seed{seed}" / f"{name}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["settings"] != json.loads(json.dumps(_job_settings(cfg, name))):
        raise SystemExit(f"{path} was made with other settings; use another --out (or delete {out / 'jobs'}).")
    return record


def save_done(out: Path, cfg: MiniTofuConfig, record: dict) -> None:
    """Write a finished job's record with the settings it depends on (what `load_done` checks)."""
    path = out / "jobs" / f"seed{record['seed']}" / f"{record['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "settings": _job_settings(cfg, record["name"])}))


def _mean_traces(cfg, records) -> dict:
    """Per-step loss, gradient norm and p_y at the matched (or first) learning rate, mean over seeds."""
    lr = MATCHED_LR if MATCHED_LR in cfg.learning_rates else cfg.learning_rates[0]
    out = {}
    for objective in cfg.objectives:
        runs = [r["trace"] for (s, n), r in records.items() if n == f"{objective}_lr{lr:g}"]
        if runs:  # keys every seed logged at that step (RL traces: kl, retain/nll only with their anchor)
            out[objective] = [{k: sum(run[i][k] for run in runs) / len(runs)
                               for k in runs[0][i] if all(k in run[i] for run in runs)}
                              for i in range(min(len(run) for run in runs))]
    return out


def write_results(cfg, records: dict, out: Path, meta: dict, complete: bool = False, final: bool = False) -> dict:
    """results.{json,md} and trajectories.json; `final`: also the plots and the eval logs of every model."""
    summaries = report.per_seed_summaries(records)
    rows = report.final_rows(cfg, summaries)
    traj = report.trajectories(cfg, summaries)
    best = report.best_operating_points(cfg, summaries)
    cpu = sum(r["cpu_s"] for r in records.values())
    seconds = {f"seed{s} {n}": {k: round(r[k], 1) for k in ("cpu_s", "wall_s")} for (s, n), r in records.items()}
    result = {**meta, "config": asdict(cfg), "complete": complete, "total_job_cpu_s": cpu, "job_seconds": seconds,
              "rows": rows, "best_operating_point": best, "per_seed": {str(s): v for s, v in summaries.items()}}
    attacks = report.attack_rows(records)
    if attacks:
        result["attacks"] = attacks
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "trajectories.json").write_text(json.dumps({"command": meta["command"], "trajectories": traj}, indent=2))
    table = report.markdown(cfg, rows, best)
    if attacks:
        from ..attacks.report import markdown as attack_markdown

        columns = [c for c in next(iter(attacks.values())) if c != "seeds"]
        table += ("\n\n## Attacks on the final models (cheap form: leak@16, relearning on a seeded half of the forget "
                  "questions at lr 1e-3 measured on the other half; the whole suite, quantization included: python -m "
                  "experiments.attacks)\n\n" + attack_markdown(attacks, {}, columns))
    runtime = meta.get("runtime_s")
    wall = f", wall time {runtime:.0f} s with {meta['workers']} worker process(es)" if runtime else ""
    footer = (f"\n\nSeeds {list(cfg.seeds)} (with results: {sorted(summaries)}); "
              f"{'complete' if complete else 'INCOMPLETE'}; sum of job CPU time {cpu:.0f} s{wall}.\n"
              f"Command: `{meta['command']}`\nMachine: {meta['machine']}\n")
    (out / "results.md").write_text(table + footer)
    if final:
        plots.plot_trajectories(cfg, traj, rows, out / "trajectories.png")
        if attacks:
            from ..attacks.config import main_job_preset
            from ..attacks.plots import plot_attacks

            plot_attacks(attacks, main_job_preset(), out / "attacks.png")
        traces = _mean_traces(cfg, records)
        plots.plot_traces(traces, out / "unlearning_traces.png")
        if any(rl_objective(o) for o in cfg.objectives):
            lr = MATCHED_LR if MATCHED_LR in cfg.learning_rates else cfg.learning_rates[0]
            plots.plot_rl_mechanism(traces, lr, out / "rl_mechanism.png")
            (out / "rl_traces.json").write_text(json.dumps({"lr": lr, "mean_over_seeds": {
                k: v for k, v in traces.items() if rl_objective(k)}}, indent=1))
        for (seed, name), rec in records.items():
            if (seed, "retain") in records:
                log = rec.get("eval_log") or rec["eval_logs"][str(max(int(k) for k in rec["eval_logs"]))]
                write_eval(log, out / "eval" / f"seed{seed}" / name, records[(seed, "retain")]["eval_log"])
    return result


def run(cfg: MiniTofuConfig, workers: int = 2, command: str | None = None, report_only: bool = False) -> dict:
    """Every job of `cfg`, `workers` processes at a time (one torch thread each; 0: in this process).
    `report_only`: run nothing, report the jobs already finished in the output folder (e.g. of a run still going)."""
    start = time.time()
    jobs.quiet_progress_bars()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command or "python -m experiments.mini_tofu " + " ".join(sys.argv[1:]), "workers": workers,
            "machine": machine_info(torch_threads=1 if workers > 0 else None)}  # workers: jobs.init_worker
    forget_size = len(load_split(cfg.forget_split))
    records: dict = {}
    todo = [(s, n) for s in cfg.seeds for n in ("full", "retain", *(n for n, _, _ in report.run_names(cfg)))]
    to_run = sum(load_done(out, cfg, s, n) is None for s, n in todo)
    lines = JobLines(to_run, "mini-tofu")
    print(f"[mini-tofu] {len(cfg.seeds)} seeds x ({len(report.run_names(cfg))} runs ({len(cfg.objectives)} objectives, "
          f"{len(cfg.learning_rates)} lr) + full + retain): {to_run} jobs to run ({len(todo) - to_run} done "
          f"already), {workers} worker(s); "
          f"unlearning evaluated at steps {jobs.unlearn_steps(cfg, forget_size)} (RL: "
          f"{rl_jobs.rl_eval_steps(cfg, forget_size)}); logs in {out}/logs", flush=True)
    if workers > 0 and not report_only:
        import multiprocessing as mp

        executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=jobs.init_worker)
    else:
        executor = InlineExecutor()
    pending: dict = {}

    def done(record):
        records[(record["seed"], record["name"])] = record
        if record["name"] == "full":
            queue_unlearning(record["seed"])

    def submit(seed, name, fn, *args):
        cached = load_done(out, cfg, seed, name)
        if cached is not None:
            done(cached)
        elif not report_only:
            pending[executor.submit(fn, cfg, seed, *args, out)] = (seed, name)

    def queue_seed(i):
        if i < len(cfg.seeds):
            jobs.build_init(cfg, cfg.seeds[i], out / "models" / f"seed{cfg.seeds[i]}" / "init")
            for name in ("full", "retain"):
                submit(cfg.seeds[i], name, jobs.finetune_job, name)

    def queue_unlearning(seed):
        for name, objective, lr in report.run_names(cfg):
            submit(seed, name, rl_jobs.rl_unlearn_job if rl_objective(objective) else jobs.unlearn_job, objective, lr)
        queue_seed(cfg.seeds.index(seed) + 1)  # the next seed's finetunes queue behind this seed's runs

    with executor:
        queue_seed(0)
        for (seed, name), record in completed(pending):
            save_done(out, cfg, record)
            done(record)
            summary = report.per_seed_summaries({k: v for k, v in records.items() if k[0] == seed})
            final = summary.get(seed, {}).get(name)
            shown = final[max(final)] if final else {}
            lines.done(f"seed {seed} {name}", record["wall_s"], cpu_s=round(record["cpu_s"]),
                       **{k: shown[k] for k in ("forget_quality", "model_utility") if k in shown})
            write_results(cfg, records, out, meta, complete=False)
    complete = all(key in records for key in todo)
    if report_only:  # beside a run that may still be writing its own results
        out = out / "report_only"
        out.mkdir(exist_ok=True)
    else:
        meta["runtime_s"] = time.time() - start
    result = write_results(cfg, records, out, meta, complete=complete, final=True)
    print("\n" + (out / "results.md").read_text(), flush=True)
    print(f"[mini-tofu] {meta.get('runtime_s', 0):.0f} s; results in {out}/results.{{json,md}}, plots "
          f"{out}/trajectories.png and {out}/unlearning_traces.png, per-step logs in {out}/logs/", flush=True)
    return result


def parse(argv=None):
    p = argparse.ArgumentParser(description="mini-TOFU over seeds and learning rates (offline, tiny Llama)")
    p.add_argument("--full", action="store_true", help="5 seeds x 3 learning rates (5e-5, 2e-4, 8e-4), 2 evaluations")
    p.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (main), 0..4 (--full)")
    p.add_argument("--learning_rates", type=float, nargs="+", help="default: 2e-4 (main), 5e-5 2e-4 8e-4 (--full)")
    p.add_argument("--objectives", nargs="+", help="default: all nine offline ones")
    p.add_argument("--rl", action="store_true", help="the RL objectives (GRPO, CE-U-GRPO variants x anchors) "
                   "instead of the offline ones; output folder default outputs/mini_tofu_rl(_full)")
    p.add_argument("--siblings", action="store_true", help="CE-U's siblings (WGA, SatImp, UNDIAL, RMU; WGA/SatImp as "
                   "RL negatives) on the --full grid; output folder default outputs/mini_tofu_siblings")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each (0: inline)")
    p.add_argument("--out", help="output folder (default outputs/mini_tofu, or outputs/mini_tofu_full)")
    p.add_argument("--report_only", action="store_true", help="run nothing: report the jobs finished in --out")
    return p.parse_args(argv)


def config_from_args(args) -> MiniTofuConfig:
    overrides = {k: tuple(v) if isinstance(v, list) else v for k in ("seeds", "learning_rates", "objectives", "out")
                 if (v := getattr(args, k)) is not None}
    if getattr(args, "siblings", False):
        return siblings_preset(**overrides)
    if getattr(args, "rl", False):
        if args.full:
            return rl_full_preset(**overrides)
        overrides.setdefault("objectives", RL_OBJECTIVES)
        overrides.setdefault("out", "outputs/mini_tofu_rl")
    return (full_preset if args.full else main_preset)(**overrides)


def main(argv=None) -> dict:
    args = parse(argv)
    return run(config_from_args(args), args.workers, report_only=args.report_only)
