"""Fused linear + CE-U (ceu_rl.linear_ce_u_loss) vs the LM head + loss on materialised logits, forward+backward from
hidden states (gradients for hidden and the head's weight in every variant):

    linear_ce_u          linear_ce_u_loss(hidden, weight, labels)                 (no N x V logits)
    ce_u_logits          ce_u_loss(hidden @ weight.T, labels)                     (materialised logits)
    cross_entropy        F.cross_entropy(hidden @ weight.T, labels)               (plain CE, the time reference)
    trl_logprob_ce_u     TRL's chunked log-prob head (log p_y, entropy) + ce_u_loss_from_logprobs (no logits; inexact
                         at p_y -> 1)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linear_ce_u.py                     # the default grid
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linear_ce_u.py --points 4096x32000x2048 --rounds 3
    # SmolLM2-135M's head (vocab 49152, hidden 576), 2048 tokens:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linear_ce_u.py --points 2048x49152x576 --timing in-process \
        --rounds 7 --out benchmarks/results/linear_ce_u_smollm2.json

Default (--timing children): each measurement is one fresh child process running one variant once (so its peak
memory is the rise of max RSS over the inputs, with nothing left from another variant); rounds interleave the
variants (A B C D A B C D ...), and the ratios are medians over rounds. --timing in-process: memory from one child
per variant, time from interleaved rounds after a warm-up in one process (less noise per round). "peak_extra" counts everything a step allocates, the gradients of hidden (N x H) and
weight (V x H) included; "workspace" is that minus those gradient buffers, which every variant must produce.
Results: benchmarks/results/linear_ce_u.json (rewritten after each grid point).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ceu_rl.objectives import ce_u_loss, ce_u_loss_from_logprobs, linear_ce_u_loss

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # harness; repo root
from experiments.machine import machine_info  # noqa: E402
from harness import (code_state, cuda_peak_extra_mib, forward_backward_steps, interleaved_times,  # noqa: E402
                     max_rss_mib, round_ratios)


def _trl_logprob_ce_u(hidden, weight, labels):
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, _ChunkedLogProbFunction  # imported by the worker first

    logp, entropy, *_ = _ChunkedLogProbFunction.apply(hidden, weight, None, labels, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE,
                                                      None, 1.0, ("entropy",))
    return ce_u_loss_from_logprobs(logp, entropy)


@functools.cache
def _liger_loss():
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss()  # mean over labels != -100, as the others


def _liger_flce(hidden, weight, labels):
    return _liger_loss()(weight, hidden, labels)


VARIANTS = {
    "linear_ce_u": lambda h, w, y: linear_ce_u_loss(h, w, y),
    "ce_u_logits": lambda h, w, y: ce_u_loss(h @ w.T, y),
    "cross_entropy": lambda h, w, y: F.cross_entropy(h @ w.T, y),
    "trl_logprob_ce_u": _trl_logprob_ce_u,
}
# On a GPU (benchmarks/gpu_check.py): the Triton path and Liger-Kernel's fused linear cross entropy (plain CE, the
# time and memory reference of the goal).
CUDA_VARIANTS = {
    "cross_entropy": VARIANTS["cross_entropy"],
    "linear_ce_u": VARIANTS["linear_ce_u"],
    "linear_ce_u_triton": lambda h, w, y: linear_ce_u_loss(h, w, y, implementation="triton"),
    "liger_flce": _liger_flce,
}


def _inputs(n: int, vocab: int, width: int):
    gen = torch.Generator().manual_seed(0)
    # in place: no temporary raises the baseline max RSS; logits come out with standard deviation ~3
    hidden = torch.empty(n, width).normal_(generator=gen).requires_grad_()
    weight = torch.empty(vocab, width).normal_(generator=gen).mul_(3 / width**0.5).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=gen)
    return hidden, weight, labels


def worker(variant: str, n: int, vocab: int, width: int) -> None:
    torch.set_num_threads(1)
    if variant.startswith("trl"):
        import trl.trainer.utils  # noqa: F401  (seconds and hundreds of MiB: not part of the measurement)
    hidden, weight, labels = _inputs(n, vocab, width)
    before = max_rss_mib()
    start = time.perf_counter()
    VARIANTS[variant](hidden, weight, labels).backward()
    seconds = time.perf_counter() - start
    peak = max_rss_mib() - before
    grads_mib = (hidden.grad.numel() + weight.grad.numel()) * 4 / 2**20
    print(json.dumps({"time_s": seconds, "peak_extra_mib": peak, "workspace_mib": peak - grads_mib}))


def run_point(n: int, vocab: int, width: int, rounds: int, variants) -> dict:
    samples = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            samples[v].append(_child(v, n, vocab, width))
    med = {v: {k: statistics.median(s[k] for s in samples[v]) for k in samples[v][0]} for v in variants}
    row = {"n": n, "vocab": vocab, "hidden": width, "dtype": "float32", "rounds": rounds,
           "median": med, "per_round": samples}
    if "cross_entropy" in variants:
        ref = med["cross_entropy"]
        row["time_ratio_vs_cross_entropy"] = {v: med[v]["time_s"] / ref["time_s"] for v in variants}
        row["peak_ratio_vs_cross_entropy"] = {v: med[v]["peak_extra_mib"] / ref["peak_extra_mib"] for v in variants}
        row["workspace_ratio_vs_cross_entropy"] = {v: med[v]["workspace_mib"] / ref["workspace_mib"] for v in variants}
    return row


def run_point_in_process(n: int, vocab: int, width: int, rounds: int, variants) -> dict:
    """Peak memory from one child per variant; time from `rounds` interleaved rounds in this process after a
    warm-up (harness.interleaved_times): less noise per round than a fresh process each time."""
    memory = {v: _child(v, n, vocab, width) for v in variants}  # children first: this process's max RSS stays low
    torch.set_num_threads(1)
    hidden, weight, labels = _inputs(n, vocab, width)

    def step(fn):
        hidden.grad = weight.grad = None
        fn(hidden, weight, labels).backward()

    times = interleaved_times({v: functools.partial(step, VARIANTS[v]) for v in variants}, rounds, keep_rounds=True)
    row = {"n": n, "vocab": vocab, "hidden": width, "dtype": "float32", "rounds": rounds, "timing": "in-process",
           "time_s": times, "peak_extra_mib": {v: memory[v]["peak_extra_mib"] for v in variants},
           "workspace_mib": {v: memory[v]["workspace_mib"] for v in variants}}
    if "cross_entropy" in variants:
        ref = times["cross_entropy"]["median"]
        row["time_ratio_vs_cross_entropy"] = {v: times[v]["median"] / ref for v in variants}
        row["time_ratio_vs_cross_entropy_per_round"] = round_ratios(times, "cross_entropy")
        row["peak_ratio_vs_cross_entropy"] = {
            v: row["peak_extra_mib"][v] / row["peak_extra_mib"]["cross_entropy"] for v in variants}
        row["workspace_ratio_vs_cross_entropy"] = {
            v: row["workspace_mib"][v] / row["workspace_mib"]["cross_entropy"] for v in variants}
    return row


def device_point(n: int, vocab: int, width: int, dtype: torch.dtype, rounds: int, variants: dict,
                 device: str) -> dict:
    """Forward+backward from hidden states of every variant on one device, in one process: median of interleaved
    rounds after a warm-up each; on CUDA also the peak allocated above the inputs (the gradients of hidden and
    weight included; "workspace" without them)."""
    gen = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(n, width, device=device, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, width, device=device, generator=gen) * (3 / width**0.5)).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (n,), device=device, generator=gen)
    steps = forward_backward_steps(variants, (hidden, weight, labels), (hidden, weight))
    for step in steps.values():
        step()
    on_cuda = device == "cuda"
    mem = {k: cuda_peak_extra_mib(step) if on_cuda else None for k, step in steps.items()}
    times = interleaved_times(steps, rounds, sync=torch.cuda.synchronize if on_cuda else None, warmup=False)
    grads_mib = (hidden.numel() + weight.numel()) * hidden.element_size() / 2**20
    row = {"n": n, "vocab": vocab, "hidden": width, "dtype": str(dtype).removeprefix("torch."), "device": device,
           "rounds": rounds, "time_s": times, "peak_extra_mib": mem,
           "workspace_mib": {k: None if m is None else m - grads_mib for k, m in mem.items()},
           "time_ratio_vs_cross_entropy": {k: times[k]["median"] / times["cross_entropy"]["median"] for k in times}}
    del hidden, weight, steps
    if on_cuda:
        torch.cuda.empty_cache()
    return row


def _child(variant: str, n: int, vocab: int, width: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", variant, "--points", f"{n}x{vocab}x{width}"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict:
    return {"cpu_model": _cpu_model(), "machine": platform.machine(), "cpu_capability":
            torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "threads": 1,
            "note": "2-core machine shared with other jobs while measuring: absolute times are disturbed; ratios come "
                    "from interleaved rounds"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", nargs="+", default=["4096x32000x2048", "4096x128000x2048"],
                        help="NxVxH grid points")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--timing", choices=["children", "in-process"], default="children",
                        help="children: each round runs every variant in a fresh process (time and memory together); "
                             "in-process: memory from one child each, time from interleaved rounds in this process")
    parser.add_argument("--worker", choices=list(VARIANTS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "linear_ce_u.json"))
    args = parser.parse_args()
    points = [tuple(int(x) for x in p.split("x")) for p in args.points]
    if args.worker:
        worker(args.worker, *points[0])
        return
    report = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linear_ce_u.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "machine_info": machine_info(torch_threads=1), "code": code_state(),
              "results": []}
    for n, vocab, width in points:
        measure = run_point if args.timing == "children" else run_point_in_process
        report["results"].append(measure(n, vocab, width, args.rounds, args.variants))
        print(json.dumps({k: v for k, v in report["results"][-1].items() if k != "per_round"}), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
