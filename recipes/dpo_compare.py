"""DPO vs CE-U-DPO side by side: same tiny model, data and seed; JSON + PNG of chosen and rejected log-prob, margin,
reward accuracy and gradient norm per step.

    python recipes/dpo_compare.py [--out outputs/dpo_compare] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dpo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = (("logps/chosen", "chosen log-prob (sum)"), ("logps/rejected", "rejected log-prob (sum)"),
        ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"), ("grad_norm", "gradient norm"))


def plot(traces: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.6))
    for ax, (key, title) in zip(axes, KEYS):
        for name, hist in traces.items():
            ax.plot([h["step"] for h in hist], [h[key] for h in hist], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/dpo_compare")
    p.add_argument("--epochs", default="4")
    args = p.parse_args(argv)
    out = Path(args.out)
    traces = {}
    model_path = None
    for loss_type in ("sigmoid", "ceu"):
        cfg = ROOT / "recipes/configs/dpo" / f"{loss_type}_tiny.yaml"
        argv_run = ["--config", str(cfg), "--output_dir", str(out / loss_type), "--num_train_epochs", args.epochs]
        if model_path is None:  # build the tiny SFT model once, reuse it for the other run
            model_path = dpo.build_tiny_model(out, dpo.tofu_preference_dataset(64), 8, 0)
        argv_run += ["--model_name_or_path", model_path]
        traces["DPO" if loss_type == "sigmoid" else "CE-U-DPO"] = dpo.main(argv_run)
    last = {name: {k: hist[-1][k] for k, _ in KEYS} for name, hist in traces.items()}
    first = {name: {k: hist[0][k] for k, _ in KEYS} for name, hist in traces.items()}
    (out / "results.json").write_text(json.dumps({"first_step": first, "last_step": last, "traces": traces,
                                                  "command": "python recipes/dpo_compare.py " + " ".join(argv or sys.argv[1:])},
                                                 indent=2))
    plot(traces, out / "dpo_vs_ceu_dpo.png")
    print(json.dumps({"first_step": first, "last_step": last}, indent=2))


if __name__ == "__main__":
    main()
