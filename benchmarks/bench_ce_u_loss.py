"""CE-U (ceu_rl.ce_u_loss) vs torch.nn.functional.cross_entropy: forward+backward time and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss.py            # N=4096, V=32k and 128k
Writes benchmarks/results/ce_u_loss.json. Time: median of interleaved rounds (A B A B ...) in one process, with the
spread. Peak memory: one fresh subprocess per variant, the rise of max RSS over the logits already allocated (a
process's max RSS never goes down, hence one process each).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ceu_rl.objectives import ce_u_loss

VARIANTS = {"cross_entropy": F.cross_entropy, "ce_u_loss": ce_u_loss}


def _inputs(n: int, vocab: int):
    gen = torch.Generator().manual_seed(0)
    logits = torch.empty(n, vocab).normal_(generator=gen).mul_(3)  # in place: no temporary raises the baseline RSS
    labels = torch.randint(0, vocab, (n,), generator=gen)
    return logits.requires_grad_(), labels


def _step(fn, logits, labels):
    logits.grad = None
    fn(logits, labels).backward()


def peak_memory_worker(variant: str, n: int, vocab: int) -> None:
    logits, labels = _inputs(n, vocab)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _step(VARIANTS[variant], logits, labels)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_extra_mib": (after - before) / 1024}))


def peak_memory(variant: str, n: int, vocab: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--n", str(n), "--vocab", str(vocab)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]


def timings(n: int, vocab: int, rounds: int) -> dict[str, list[float]]:
    logits, labels = _inputs(n, vocab)
    times = {name: [] for name in VARIANTS}
    for name, fn in VARIANTS.items():  # warm-up
        _step(fn, logits, labels)
    for _ in range(rounds):
        for name, fn in VARIANTS.items():
            t0 = time.perf_counter()
            _step(fn, logits, labels)
            times[name].append(time.perf_counter() - t0)
    return times


def cuda_results(n: int, vocabs, rounds: int) -> list[dict]:
    """On a GPU: CUDA-event timings (median of interleaved rounds) and torch.cuda.max_memory_allocated above the
    logits, float32 and bfloat16 logits."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for vocab in vocabs:
            gen = torch.Generator(device="cuda").manual_seed(0)
            logits = (torch.randn(n, vocab, device="cuda", generator=gen) * 3).to(dtype).requires_grad_()
            labels = torch.randint(0, vocab, (n,), device="cuda", generator=gen)
            mem, times = {}, {k: [] for k in VARIANTS}
            for name, fn in VARIANTS.items():
                _step(fn, logits, labels)
                torch.cuda.synchronize()
                logits.grad = None
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                _step(fn, logits, labels)
                torch.cuda.synchronize()
                mem[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
            for _ in range(rounds):
                for name, fn in VARIANTS.items():
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    _step(fn, logits, labels)
                    end.record()
                    torch.cuda.synchronize()
                    times[name].append(start.elapsed_time(end) / 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"n": n, "vocab": vocab, "dtype": str(dtype).removeprefix("torch."), "device": "cuda",
                         "time_s": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in times.items()},
                         "peak_extra_mib": mem, "time_ratio": med["ce_u_loss"] / med["cross_entropy"],
                         "memory_ratio": mem["ce_u_loss"] / mem["cross_entropy"]})
            print(json.dumps(rows[-1]), flush=True)
            del logits
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--worker", choices=list(VARIANTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ce_u_loss.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        peak_memory_worker(args.worker, args.n, args.vocab[0])
        return
    if args.device == "cuda":
        report = {"command": "python benchmarks/bench_ce_u_loss.py --device cuda " + " ".join(sys.argv[1:]),
                  "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
                  "results": cuda_results(args.n, args.vocab, args.rounds)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        return
    # Linux keeps a process's max RSS across fork and exec: measure memory in children while this parent is small.
    mems = {vocab: {k: peak_memory(k, args.n, vocab) for k in VARIANTS} for vocab in args.vocab}
    results = []
    for vocab in args.vocab:
        times = timings(args.n, vocab, args.rounds)
        med = {k: statistics.median(v) for k, v in times.items()}
        mem = mems[vocab]
        row = {
            "n": args.n, "vocab": vocab, "dtype": "float32", "rounds": args.rounds,
            "time_s": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in times.items()},
            "peak_extra_mib": mem,
            "time_ratio": med["ce_u_loss"] / med["cross_entropy"],
            "memory_ratio": mem["ce_u_loss"] / mem["cross_entropy"],
        }
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    report = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "processor": platform.processor(), "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
