"""Score a TOFU_EVAL.json against a retain model's: `python -m ceu_rl.tofu.score EVAL.json --retain RETAIN_EVAL.json`.

Prints one JSON object with forget_quality, model_utility and the components, recomputed from per-question values.
Works on open-unlearning's logs and on this project's (same layout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .metrics import summary_from_eval_log


def _read(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: {path} does not exist (expected a TOFU_EVAL.json)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON: {e}") from None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_log", help="TOFU_EVAL.json of the model to score")
    parser.add_argument("--retain", help="TOFU_EVAL.json of the retain model (for forget_quality)")
    args = parser.parse_args(argv)
    try:
        summary = summary_from_eval_log(_read(args.eval_log), _read(args.retain) if args.retain else None)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return summary


if __name__ == "__main__":
    main()
