"""python -m analysis plots --out DIR [--quick]"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analysis", description="gradient-stability analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    plots = sub.add_parser("plots", help="write every figure (PNG) with the data behind it (JSON)")
    plots.add_argument("--out", default="outputs/analysis")
    plots.add_argument("--quick", action="store_true", help="coarse grid and 8-step traces (CI, seconds)")
    plots.add_argument("--real_model", help="also the real-model panel: GA vs CE-U traces on this model folder (e.g. "
                       "outputs/real_tofu/models/full; ~8 min of CPU), or a real_model_traces.json to plot again")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from .plots import make_all

    start = time.time()
    files = make_all(args.out, quick=args.quick, real_model=args.real_model)
    for name, path in files.items():
        print(f"{name}: {path}")
    print(f"analysis plots written in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
