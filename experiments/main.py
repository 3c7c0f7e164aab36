"""The README's main command: `bash run.sh main` (python -m experiments.main).

Runs the embedded default offline: the CE-U vs gradient-ascent gradient table, then mini-TOFU over 3 seeds
(`experiments.mini_tofu`: finetune a tiny Llama on TOFU per seed, unlearn it with every objective at matched settings,
evaluate along the way, write mean / sd / per-seed tables and the forget quality vs model utility plot), then the
gradient-stability plots of `analysis` (quick version). Per-step logs go to files under the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from experiments import gradient_table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="ceu-rl main job on the embedded default")
    parser.add_argument("--out", default="outputs", help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", help="mini-TOFU seeds (default 0 1 2)")
    parser.add_argument("--objectives", nargs="+", help="unlearning objectives (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, one torch thread each")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.time()
    gradient_table.run(f"{args.out}/demo")

    from experiments.mini_tofu import main_preset, run

    overrides = {k: tuple(v) for k in ("seeds", "objectives") if (v := getattr(args, k))}
    run(main_preset(out=f"{args.out}/mini_tofu", **overrides), workers=args.workers,
        command="bash run.sh main " + " ".join(argv if argv is not None else sys.argv[1:]))

    from analysis.plots import make_all

    Path(args.out, "analysis").mkdir(parents=True, exist_ok=True)
    with open(Path(args.out, "analysis", "train_log.txt"), "w") as log, contextlib.redirect_stdout(log):
        files = make_all(f"{args.out}/analysis", quick=True)  # its trainers print every step's dict: to the file
    print("gradient-stability plots (python -m analysis plots --quick):", ", ".join(str(f) for f in files.values()))
    print(f"main job done in {time.time() - start:.0f} s: {args.out}/demo, {args.out}/mini_tofu (results.md, "
          f"trajectories.png), {args.out}/analysis", flush=True)


if __name__ == "__main__":
    main()
