"""CE-U (ceu_rl.ce_u_loss) vs torch.nn.functional.cross_entropy: forward+backward time and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss.py            # N=4096, V=32k and 128k
    python benchmarks/bench_ce_u_loss.py --device cuda --rounds 20   # on a GPU: fp32 and bf16, torch and Triton paths
    # SmolLM2-135M's vocabulary, 2048 tokens:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss.py --n 2048 --vocab 49152 --rounds 9 \
        --out benchmarks/results/ce_u_loss_smollm2.json
Writes benchmarks/results/ce_u_loss.json. Time: median of interleaved rounds (A B A B ...) in one process, with the
spread. Peak memory: one fresh subprocess per variant, the rise of max RSS over the logits already allocated (a
process's max RSS never goes down, hence one process each).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ceu_rl.objectives import ce_u_loss

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # harness; repo root
from experiments.machine import machine_info  # noqa: E402
from harness import (code_state, cuda_peak_extra_mib, forward_backward_steps, interleaved_times,  # noqa: E402
                     round_ratios)

VARIANTS = {"cross_entropy": F.cross_entropy, "ce_u_loss": ce_u_loss}
# On a GPU also the Triton path (on CPU it would fall back to the torch path with a warning).
CUDA_VARIANTS = {**VARIANTS, "ce_u_loss_triton": functools.partial(ce_u_loss, implementation="triton")}


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


def device_point(n: int, vocab: int, dtype: torch.dtype, rounds: int, variants: dict, device: str) -> dict:
    """Forward+backward of each variant on the same (n, vocab) logits of `dtype` on `device`: median of interleaved
    rounds after one warm-up each (Triton compiles there); on CUDA also torch.cuda.max_memory_allocated above the
    logits (None elsewhere: see the child-process measurement for CPU)."""
    gen = torch.Generator(device=device).manual_seed(0)
    logits = (torch.randn(n, vocab, device=device, generator=gen) * 3).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (n,), device=device, generator=gen)
    steps = forward_backward_steps(variants, (logits, labels), (logits,))
    for step in steps.values():
        step()
    on_cuda = device == "cuda"
    mem = {k: cuda_peak_extra_mib(step) if on_cuda else None for k, step in steps.items()}
    times = interleaved_times(steps, rounds, sync=torch.cuda.synchronize if on_cuda else None, warmup=False)
    row = {"n": n, "vocab": vocab, "dtype": str(dtype).removeprefix("torch."), "device": device, "rounds": rounds,
           "time_s": times, "peak_extra_mib": mem,
           "time_ratio_vs_cross_entropy": {k: times[k]["median"] / times["cross_entropy"]["median"] for k in times}}
    if on_cuda:
        row["memory_ratio_vs_cross_entropy"] = {k: mem[k] / mem["cross_entropy"] for k in mem}
    del logits, steps
    if on_cuda:
        torch.cuda.empty_cache()
    return row


def cuda_results(n: int, vocabs, rounds: int) -> list[dict]:
    """On a GPU: float32 and bfloat16 logits, every variant of CUDA_VARIANTS (the Triton path included)."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for vocab in vocabs:
            rows.append(device_point(n, vocab, dtype, rounds, CUDA_VARIANTS, "cuda"))
            print(json.dumps(rows[-1]), flush=True)
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
        logits, labels = _inputs(args.n, vocab)
        times = interleaved_times({k: functools.partial(_step, fn, logits, labels) for k, fn in VARIANTS.items()},
                                  args.rounds, keep_rounds=True)
        med = {k: v["median"] for k, v in times.items()}
        mem = mems[vocab]
        row = {
            "n": args.n, "vocab": vocab, "dtype": "float32", "rounds": args.rounds, "time_s": times,
            "peak_extra_mib": mem,
            "time_ratio": med["ce_u_loss"] / med["cross_entropy"],
            "time_ratio_per_round": round_ratios(times, "cross_entropy")["ce_u_loss"],
            "memory_ratio": mem["ce_u_loss"] / mem["cross_entropy"],
        }
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    report = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "processor": platform.processor(), "machine_info": machine_info(), "code": code_state(), "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
