"""GRPO (negative_objective=pg) vs CE-U-GRPO (ceu) side by side: same tiny model, prompts and seed; JSON + PNG of
reward, gradient norm, entropy and mean p of negative-advantage tokens per step.

    python recipes/grpo_compare.py [--out outputs/grpo_compare] [--learning_rates 5e-4 1e-4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import grpo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = (("reward", "reward"), ("grad_norm", "gradient norm"), ("entropy", "entropy"),
        ("ceu/p_negative_mean", "mean p, negative-advantage tokens"))


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(4.2 * len(KEYS), 3.6))
    for ax, (key, title) in zip(axes, KEYS):
        for name, hist in runs.items():
            pts = [(h["step"], h[key]) for h in hist if h.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean(hist, key, part):
    vals = [h[key] for h in hist if h.get(key) is not None]
    k = max(1, len(vals) // 5)
    return sum(vals[:k]) / k if part == "first" else sum(vals[-k:]) / k


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/grpo_compare")
    p.add_argument("--learning_rates", nargs="+", default=["5e-4", "1e-4"])
    args = p.parse_args(argv)
    out = Path(args.out)
    cfg = ROOT / "recipes/configs/grpo/reverse_tiny.yaml"
    runs, summary = {}, {}
    for lr in args.learning_rates:
        for objective in ("pg", "ceu"):
            name = f"{'GRPO' if objective == 'pg' else 'CE-U-GRPO'} lr={lr}"
            # every run builds (or reuses) the same SFT model under out/
            hist = grpo.main(["--config", str(cfg), "--output_dir", str(out), "--negative_objective", objective,
                              "--learning_rate", lr])
            runs[name] = hist
            summary[name] = {f"{key} ({part} 20% of steps)": _mean(hist, key, part)
                             for key, _ in KEYS for part in ("first", "last")}
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": runs, "command":
                                                  "python recipes/grpo_compare.py " + " ".join(argv or sys.argv[1:])},
                                                 indent=2))
    plot(runs, out / "grpo_vs_ceu_grpo.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
