"""Every GPU claim of the project measured in one run (issue 19): correctness of the CE-U kernels against float64,
their speed and memory against F.cross_entropy and Liger-Kernel, and the CE-U trainers' step against TRL's.

On a lent GPU (one command, <= 8 minutes on one H200; the wrapper installs the carried wheels first):
    bash benchmarks/gpu_check.sh     # -> $OUT/gpu_check_nvidia_h200.json, $OUT/gpu_check.log (else benchmarks/results/)
CPU dry run (tiny sizes, torch paths, no Triton, no Liger; what tests/benchmarks/test_gpu_check.py runs):
    .venv/bin/python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check_dry.json

Sections (each one's failure is recorded in the JSON and the others still run):
  correctness  gpu_check_kernels.correctness: ce_u_loss and linear_ce_u_loss, torch and Triton, fp32 and bf16,
               V = 32k and 128k, rows with p_y = 1 and ignored rows, value and every gradient vs float64
               (the error measure is defined and justified in gpu_check_kernels' docstring)
  speed        gpu_check_kernels.speed: forward+backward time (median of interleaved rounds) and peak memory, bf16
  trainers     gpu_check_trainers: CE-U-DPO vs DPO, CE-U-GRPO (pg, ceu_min, ceu_min + exact gradient) vs GRPO,
               UnlearnTrainer CE-U fused linear vs logits vs log-prob head, on a random-weight Llama-3.2-1B (bf16)
The goals of issue 19 item 3 are printed as PASS/FAIL lines and stored under "goals"; "speed.faster_path" says where
the Triton path beat the torch path (item 4: the default stays "torch" until a GPU run shows Triton faster).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import torch  # noqa: E402

import gpu_check_kernels  # noqa: E402

PLAN = {
    "gpu": dict(correctness=dict(vocabs=[32000, 128256], n=512, width=2048),
                speed=dict(logits_points=[(8192, 32000), (8192, 128256), (16384, 128256)],
                           linear_points=[(8192, 32000, 4096), (16384, 128256, 2048), (8192, 128256, 4096)],
                           rounds=10),
                trainer_rounds=10),
    "dry": dict(correctness=dict(vocabs=[1000, 4000], n=64, width=64),
                speed=dict(logits_points=[(64, 1000)], linear_points=[(64, 1000, 32)], rounds=1),
                trainer_rounds=1),
}
PACKAGES = ("torch", "triton", "transformers", "trl", "datasets", "accelerate", "liger-kernel", "peft")
GOAL_TIME_KERNEL, GOAL_TIME_TRAINER = 1.3, 1.05


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_record(device: str) -> dict:
    from experiments.machine import machine_info

    record = {"device": device, "machine": machine_info()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        record.update(gpu=torch.cuda.get_device_name(), gpu_memory_gib=props.total_memory / 2**30,
                      cuda=torch.version.cuda, capability=".".join(map(str, torch.cuda.get_device_capability())))
    return record


def goals(report: dict) -> list[dict]:
    """Issue 19 item 3, side by side in this run: one line per goal and measured point. Correctness is judged in
    the dry run too; time and memory goals only on the GPU (pass None in the dry run: CPU timings of tiny sizes)."""
    out = []
    cases = report.get("correctness")
    if isinstance(cases, list):
        checked = [c for c in cases if c.get("pass") is not None]
        out.append({"goal": "every correctness case within 1e-3 (bf16) / 1e-5 (fp32) of float64",
                    "pass": bool(checked) and all(c["pass"] for c in checked),
                    "detail": f"{sum(c['pass'] for c in checked)}/{len(checked)} cases pass, "
                              f"{len(cases) - len(checked)} skipped; largest error "
                              f"{max((c['worst_error'] for c in checked), default=float('nan')):.1e}; failing: "
                              + (", ".join(f"{c['name']} {c['dtype']} V={c['vocab']} ({c['worst_error']:.1e})"
                                           for c in checked if not c["pass"]) or "none")})
    elif cases is not None:  # the section raised: its traceback is in report["correctness"]["error"]
        out.append({"goal": "every correctness case within 1e-3 (bf16) / 1e-5 (fp32) of float64", "pass": False,
                    "detail": "the correctness section failed: " + cases.get("error", "?").strip().splitlines()[-1]})
    speed = report.get("speed") if isinstance(report.get("speed"), dict) else {}
    for row in speed.get("ce_u_loss", []):
        r = row["time_ratio_vs_cross_entropy"]
        if "ce_u_loss_triton" in r:
            out.append({"goal": f"Triton CE-U <= {GOAL_TIME_KERNEL}x F.cross_entropy time, bf16, N={row['n']} "
                                f"V={row['vocab']}", "pass": r["ce_u_loss_triton"] <= GOAL_TIME_KERNEL,
                        "detail": f"{r['ce_u_loss_triton']:.2f}x (torch path {r['ce_u_loss']:.2f}x)"})
    for row in speed.get("linear_ce_u", []):
        t, m = row["time_s"], row["peak_extra_mib"]
        if "liger_flce" not in t:
            continue
        for name in ("linear_ce_u", "linear_ce_u_triton"):
            if name in t:
                time_ratio, mem_ratio = t[name]["median"] / t["liger_flce"]["median"], m[name] / m["liger_flce"]
                out.append({"goal": f"{name} <= {GOAL_TIME_KERNEL}x Liger FLCE time at <= its memory, N={row['n']} "
                                    f"V={row['vocab']} H={row['hidden']}",
                            "pass": time_ratio <= GOAL_TIME_KERNEL and mem_ratio <= 1.0,
                            "detail": f"time {time_ratio:.2f}x, peak memory {mem_ratio:.2f}x"})
    trainers = report.get("trainers") if isinstance(report.get("trainers"), dict) else {}
    for section, variants in (("dpo", ("ceu",)), ("grpo", ("ceu_min", "ceu_min_exact"))):
        res = trainers.get(section)
        if not isinstance(res, dict) or "time_ratio" not in res:
            continue
        for v in variants:
            t, m = res["time_ratio"][v], res["memory_ratio"][v]
            out.append({"goal": f"{section} {v} step <= {GOAL_TIME_TRAINER}x {res['reference_variant']}'s time and "
                                "memory", "pass": t <= GOAL_TIME_TRAINER and (m is None or m <= GOAL_TIME_TRAINER),
                        "detail": f"time {t:.3f}x, memory " + ("n/a (CPU)" if m is None else f"{m:.3f}x")})
    if report.get("mode") == "dry-run":
        for goal in out[1:] if cases is not None else out:  # out[0] is the correctness goal when it was checked
            goal["pass"] = None
    return out


def run_section(report: dict, name: str, fn, out_path: Path, target: dict | None = None) -> None:
    """report[name] (or target[name]) = fn(), or its traceback; the time it took; the JSON rewritten."""
    target = report if target is None else target
    start = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        target[name] = fn()
    except Exception:  # one section's failure must not cost the others' numbers (the lease is short)
        target[name] = {"error": traceback.format_exc()[-4000:]}
        print(target[name]["error"], flush=True)
    report["section_seconds"][name] = time.perf_counter() - start
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    write(report, out_path)


def write(report: dict, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, torch paths only (the test suite's run)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                   help="a .json file, or a folder: then gpu_check_<gpu name>.json (gpu_check_dry_run.json) in it")
    p.add_argument("--sections", nargs="+", default=["correctness", "speed", "trainers"])
    p.add_argument("--budget-s", type=float, default=420.0, help="skip trainer sections once this much time is spent")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU, or pass --dry-run")
    device, plan = ("cpu", PLAN["dry"]) if args.dry_run else ("cuda", PLAN["gpu"])
    if args.dry_run:
        torch.set_num_threads(1)
    start, out_path = time.perf_counter(), Path(args.out)
    if out_path.suffix != ".json":
        gpu = "dry_run" if args.dry_run else torch.cuda.get_device_name().lower()
        name = re.sub(r"[^a-z0-9]+", "_", gpu).strip("_")
        out_path = out_path / f"gpu_check_{name}.json"
    has_liger = not args.dry_run and _importable("liger_kernel.transformers")
    report = {"command": " ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "mode": "dry-run" if args.dry_run else "gpu", **device_record(device), "versions": versions(),
              "plan": plan, "tolerance": gpu_check_kernels.TOLERANCE,
              "error_measure": gpu_check_kernels.__doc__.split("Error measure", 1)[1].strip(),
              "section_seconds": {}}
    if "correctness" in args.sections:
        run_section(report, "correctness", lambda: gpu_check_kernels.correctness(device, **plan["correctness"]),
                    out_path)
    if "speed" in args.sections:
        run_section(report, "speed", lambda: gpu_check_kernels.speed(
            device, **plan["speed"], with_triton=device == "cuda", with_liger=has_liger), out_path)
        if not has_liger:
            report["speed_note"] = "Liger-Kernel not measured (dry run, or liger_kernel not importable)"
    if "trainers" in args.sections:
        report["trainers"], setup = {}, {}
        run_section(report, "trainer_setup", lambda: _trainer_setup(device), out_path, target=setup)
        for name in ("dpo", "grpo", "unlearn"):
            if "error" in setup["trainer_setup"]:
                report["trainers"][name] = {"error": "setup failed: " + setup["trainer_setup"]["error"]}
            elif time.perf_counter() - start > args.budget_s:
                report["trainers"][name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
            else:
                run_section(report, name, lambda n=name: _section(setup["trainer_setup"]["bench"], n,
                                                                  plan["trainer_rounds"]), out_path,
                            target=report["trainers"])
    report["goals"] = goals(report)
    report["elapsed_s"] = time.perf_counter() - start
    write(report, out_path)
    print("== goals (issue 19 item 3)" + (" -- dry run: CPU timings, not the GPU goals" if args.dry_run else ""))
    for g in report["goals"]:
        print(f"  {({True: 'PASS', False: 'FAIL', None: 'n/a '})[g['pass']]}  {g['goal']}: {g['detail']}")
    print(f"wrote {out_path} ({report['elapsed_s']:.0f} s)")
    return report


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception as err:  # noqa: BLE001  (any import failure means: not measured, say why)
        print(f"{module} not importable: {err!r}", flush=True)
        return False


def _trainer_setup(device):
    import gpu_check_trainers

    return {"bench": gpu_check_trainers.Bench(device)}


def _section(bench, name, rounds):
    import gpu_check_trainers

    return {"model": bench.arch_name, "dtype": str(bench.dtype), **gpu_check_trainers.SECTIONS[name](bench, rounds)}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
