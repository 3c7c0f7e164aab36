"""What the benchmarks share: peak memory measured in fresh child processes (CPU) or by the CUDA allocator,
interleaved timing rounds, forward+backward steps over a set of variants."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_peak(fn, repeats: int = 3) -> None:
    """In a worker: run fn `repeats` times and print the rise of max RSS as one JSON line."""
    before = max_rss_mib()
    for _ in range(repeats):
        fn()
    print(json.dumps({"peak_extra_mib": max_rss_mib() - before}))


def peak_in_children(script: str, variants, extra_args=()) -> dict[str, float]:
    """Run `script --worker V ...` once per variant. Linux keeps a process's max RSS across fork and exec, so call
    this before the parent allocates anything large."""
    peaks = {}
    for v in variants:
        out = subprocess.run([sys.executable, script, "--worker", v, *extra_args], check=True, capture_output=True,
                             text=True)
        peaks[v] = json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]
    return peaks


def interleaved_times(steps: dict, rounds: int, sync=None, warmup: bool = True,
                      keep_rounds: bool = False) -> dict[str, dict]:
    """One warm-up each (unless warmup=False), then `rounds` rounds of A B A B ...: median, min, max seconds per
    variant (and with keep_rounds, every round's seconds as "per_round"). `sync` (e.g. torch.cuda.synchronize) is
    called before the clock starts and before it stops, so that asynchronous GPU work is timed to its end."""
    sync = sync or (lambda: None)
    if warmup:
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "rounds": len(t),
                   **({"per_round": t} if keep_rounds else {})}
            for name, t in times.items()}


def round_ratios(times: dict, reference: str) -> dict[str, dict]:
    """From interleaved_times(..., keep_rounds=True): per variant, the ratio of its seconds to `reference`'s in the
    same round, with the median, min and max over rounds, and the ratio of the medians."""
    ref = times[reference]["per_round"]
    out = {}
    for name, t in times.items():
        r = [a / b for a, b in zip(t["per_round"], ref)]
        out[name] = {"ratio_of_medians": t["median"] / times[reference]["median"], "median": statistics.median(r),
                     "min": min(r), "max": max(r), "per_round": r}
    return out


def code_state(paths=("ceu_rl", "benchmarks")) -> dict:
    """The commit the run started from and which files under `paths` differed from it (the working tree ran)."""
    root = Path(__file__).resolve().parents[1]
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.rstrip("\n")

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain", "--", *paths).splitlines()}


def forward_backward_steps(variants: dict, inputs: tuple, leaves: tuple) -> dict:
    """One step per variant: `fn(*inputs).backward()`, then the gradients of `leaves` are dropped (so each step
    allocates its own, and peak memory counts them)."""
    def make(fn):
        def step():
            fn(*inputs).backward()
            for leaf in leaves:
                leaf.grad = None
        return step
    return {name: make(fn) for name, fn in variants.items()}


def cuda_peak_extra_mib(step) -> float:
    """Peak CUDA memory that one call of `step` allocates above what is allocated before it (MiB)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def random_dpo_batch(trainer, vocab: int, pairs: int = 4, prompt_len: int = 24, completion_len: int = 32,
                     seed: int = 0):
    """A DPO batch of random token ids in [3, vocab) through the trainer's own collator and input preparation."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    examples = [{"prompt_ids": torch.randint(3, vocab, (prompt_len,), generator=gen).tolist(),
                 "chosen_ids": torch.randint(3, vocab, (completion_len,), generator=gen).tolist(),
                 "rejected_ids": torch.randint(3, vocab, (completion_len,), generator=gen).tolist()}
                for _ in range(pairs)]
    return trainer._prepare_inputs(trainer.data_collator(examples))
