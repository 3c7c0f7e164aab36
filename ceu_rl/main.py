"""The README's main command: `bash run.sh main` (python -m ceu_rl.main).

Runs the embedded default offline: the CE-U vs gradient-ascent gradient table, then mini-TOFU (finetune a tiny Llama
on TOFU, unlearn it with every objective at matched settings, evaluate, write the table and plots), then the
gradient-stability plots of `analysis` (quick version).
"""

from __future__ import annotations

import argparse
import os

from . import demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="ceu-rl main job on the embedded default")
    parser.add_argument("--out", default="outputs", help="output folder")
    parser.add_argument("--objectives", nargs="+", help="unlearning objectives (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, one torch thread each")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    demo.run(f"{args.out}/demo")

    from .tofu.mini import MiniTofuConfig, run

    cfg = MiniTofuConfig(out=f"{args.out}/mini_tofu")
    if args.objectives:
        cfg.objectives = tuple(args.objectives)
    run(cfg, workers=args.workers)

    from analysis.plots import make_all

    files = make_all(f"{args.out}/analysis", quick=True)
    print("gradient-stability plots (python -m analysis plots --quick):", ", ".join(str(f) for f in files.values()))


if __name__ == "__main__":
    main()
