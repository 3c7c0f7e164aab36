"""What the trainer benchmarks share: peak memory measured in fresh child processes, interleaved timing rounds."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time


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


def interleaved_times(steps: dict, rounds: int) -> dict[str, dict]:
    """One warm-up each, then `rounds` rounds of A B A B ...: median, min, max seconds per variant."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "rounds": len(t)}
            for name, t in times.items()}
