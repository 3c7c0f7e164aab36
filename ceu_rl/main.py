"""The README's main command: `bash run.sh main` (python -m ceu_rl.main)."""

from __future__ import annotations

import argparse

from . import demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="ceu-rl main job on the embedded default")
    parser.add_argument("--out", default="outputs", help="output folder")
    args = parser.parse_args(argv)
    demo.run(f"{args.out}/demo")


if __name__ == "__main__":
    main()
