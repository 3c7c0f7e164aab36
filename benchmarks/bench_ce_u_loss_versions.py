"""Is `ce_u_loss` slower now than at commit eecb023 (where docs/benchmarks.md's 0.86x row was measured)?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss_versions.py --rounds 7 \
        --shapes 4096x32000 2048x49152

Times forward+backward of F.cross_entropy, ce_u_loss at HEAD (the working tree) and ce_u_loss at OLD_COMMIT in ONE
process, interleaved rounds (A B C A B C ...) after one warm-up each, float32 logits, one thread. The old code is
taken with `git archive OLD_COMMIT ceu_rl` into a scratch directory (--old-dir), renamed to the package
`ceu_rl_old` and imported from there. Before timing, both versions' loss and gradient are compared (so the timing
compares equal work). Writes benchmarks/results/ce_u_loss_versions.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tarfile
import io
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]  # harness; repo root
from ceu_rl.objectives import ce_u_loss  # noqa: E402
from experiments.machine import machine_info  # noqa: E402
from harness import code_state, forward_backward_steps, interleaved_times, round_ratios  # noqa: E402

OLD_COMMIT = "eecb023"


def old_ce_u_loss(commit: str, old_dir: Path):
    """ce_u_loss of `commit`, imported as ceu_rl_old.objectives from a scratch copy in old_dir."""
    pkg = old_dir / "ceu_rl_old"
    if not pkg.is_dir():
        old_dir.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "ceu_rl"], cwd=ROOT, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(old_dir)
        (old_dir / "ceu_rl").rename(pkg)
        # absolute references to the package (the lazy trainer imports) point at the renamed copy
        for f in pkg.rglob("*.py"):
            text = f.read_text()
            new = re.sub(r'"ceu_rl\.', '"ceu_rl_old.', text)
            new = re.sub(r"\b(from|import) ceu_rl\b", r"\1 ceu_rl_old", new)
            if new != text:
                f.write_text(new)
    sys.path.insert(0, str(old_dir))
    mod = importlib.import_module("ceu_rl_old.objectives")
    assert str(Path(mod.__file__).resolve()).startswith(str(old_dir.resolve())), mod.__file__
    return mod.ce_u_loss, mod.__file__


def _inputs(n: int, vocab: int):
    gen = torch.Generator().manual_seed(0)
    logits = torch.empty(n, vocab).normal_(generator=gen).mul_(3)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    return logits.requires_grad_(), labels


def same_result(fns: dict, logits, labels) -> dict:
    """Loss value and logits gradient of each fn, compared with the first one."""
    out = {}
    for name, fn in fns.items():
        logits.grad = None
        loss = fn(logits, labels)
        loss.backward()
        out[name] = (loss.detach().clone(), logits.grad.clone())
        logits.grad = None
    names = list(out)
    ref_loss, ref_grad = out[names[0]]
    cmp = {}
    for name in names[1:]:
        loss, grad = out[name]
        cmp[f"{name}_vs_{names[0]}"] = {
            "loss": [ref_loss.item(), loss.item()],
            "loss_equal": bool(torch.equal(ref_loss, loss)), "grad_equal": bool(torch.equal(ref_grad, grad)),
            "loss_allclose": bool(torch.allclose(ref_loss, loss)),
            "grad_allclose": bool(torch.allclose(ref_grad, grad)),
            "grad_max_abs_diff": (ref_grad - grad).abs().max().item(),
        }
    return cmp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=["4096x32000"], help="NxV")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--old-dir", default="/tmp/old_ceu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ce_u_loss_versions.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    old_fn, old_file = old_ce_u_loss(args.old_commit, Path(args.old_dir))
    old_name = f"ce_u_loss_{args.old_commit}"
    variants = {"cross_entropy": F.cross_entropy, "ce_u_loss_head": ce_u_loss, old_name: old_fn}
    results = []
    for shape in args.shapes:
        n, vocab = (int(x) for x in shape.lower().split("x"))
        logits, labels = _inputs(n, vocab)
        check = same_result({"ce_u_loss_head": ce_u_loss, old_name: old_fn}, logits, labels)
        print(json.dumps(check), flush=True)
        steps = forward_backward_steps(variants, (logits, labels), (logits,))
        times = interleaved_times(steps, args.rounds, keep_rounds=True)
        ratios = round_ratios(times, "cross_entropy")
        row = {"n": n, "vocab": vocab, "dtype": "float32", "rounds": args.rounds, "same_result": check,
               "time_s": times, "time_ratio_vs_cross_entropy": ratios,
               "median_s": {k: v["median"] for k, v in times.items()},
               "head_vs_old": {"ratio_of_medians": times["ce_u_loss_head"]["median"] / times[old_name]["median"],
                               "per_round": [a / b for a, b in zip(times["ce_u_loss_head"]["per_round"],
                                                                   times[old_name]["per_round"])]}}
        results.append(row)
        print(json.dumps({k: row[k] for k in ("n", "vocab", "median_s", "head_vs_old")}), flush=True)
        print(json.dumps({k: {m: v[m] for m in ("ratio_of_medians", "median", "min", "max")}
                          for k, v in ratios.items()}), flush=True)
        del logits, labels, steps
    report = {
        "command": ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ce_u_loss_versions.py "
                    + " ".join(sys.argv[1:])),
        "old_commit": args.old_commit, "old_module": old_file, "machine_info": machine_info(), "code": code_state(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
