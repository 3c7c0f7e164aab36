"""DPO vs CE-U-DPO side by side over seeds: per seed the same tiny model, data and seed for both losses.

    python -m experiments.dpo_compare [--out outputs/dpo_compare] [--seeds 0 1 2] [--epochs 4]

Per seed and loss, every pair of the training set is scored before and after training (summed completion
log-probs, reference = the model before training): the change in chosen and rejected log-prob, the reward margin
beta ((chosen change) - (rejected change)) and the reward accuracy (fraction of pairs with margin > 0). Results:
`results.json` (per seed, mean and sd over seeds, the per-step TRL logs), `results.md`, `dpo_vs_ceu_dpo.png`;
TRL's per-step log dicts go to `<out>/seed<s>/<loss>/train_log.txt`, not the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import datasets
import torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "recipes"), str(ROOT)]  # the recipes (dpo.py) and, uninstalled, the repo root
import dpo  # noqa: E402

from experiments.machine import machine_info  # noqa: E402
from experiments.stats import fmt, mean_sd  # noqa: E402
LOSSES = {"DPO": "sigmoid", "CE-U-DPO": "ceu"}
METRICS = ("chosen_logp_change", "rejected_logp_change", "reward_margin", "reward_accuracy")
TRACE_KEYS = (("logps/chosen", "chosen log-prob (sum, batch)"), ("logps/rejected", "rejected log-prob (sum, batch)"),
              ("rewards/margins", "reward margin (batch)"), ("grad_norm", "gradient norm"))


@torch.no_grad()
def completion_logps(model_path: str, dataset) -> torch.Tensor:
    """Summed log p(completion tokens | prompt) of every chosen and rejected completion: (pairs, 2)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    out = []
    for row in dataset:
        prompt = tokenizer(row["prompt"])["input_ids"]
        pair = []
        for key in ("chosen", "rejected"):
            completion = tokenizer(row[key])["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([prompt + completion])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            targets = ids[0, 1:]
            pair.append(logp.gather(-1, targets[:, None])[len(prompt) - 1:].sum().item())
        out.append(pair)
    return torch.tensor(out, dtype=torch.float64)


def pair_metrics(before: torch.Tensor, after: torch.Tensor, beta: float) -> dict[str, float]:
    change = after - before
    margin = beta * (change[:, 0] - change[:, 1])
    return {"chosen_logp_change": change[:, 0].mean().item(), "rejected_logp_change": change[:, 1].mean().item(),
            "reward_margin": margin.mean().item(), "reward_accuracy": (margin > 0).double().mean().item()}


def run_seed(out: Path, seed: int, epochs: str, num_pairs: int, beta: float):
    dataset = dpo.tofu_preference_dataset(num_pairs)
    (out / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    with open(out / f"seed{seed}" / "sft_log.txt", "w") as log, contextlib.redirect_stdout(log):
        model_path = dpo.build_tiny_model(out / f"seed{seed}", dataset, 8, seed)
    before = completion_logps(model_path, dataset)
    results, traces = {}, {}
    for name, loss_type in LOSSES.items():
        run_dir = out / f"seed{seed}" / loss_type
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = ["--config", str(ROOT / "recipes/configs/dpo" / f"{loss_type}_tiny.yaml"), "--output_dir", str(run_dir),
                "--num_train_epochs", epochs, "--num_pairs", str(num_pairs), "--seed", str(seed), "--beta", str(beta),
                "--model_name_or_path", model_path, "--disable_tqdm", "true", "--overwrite_output_dir"]
        with open(run_dir / "train_log.txt", "w") as log, contextlib.redirect_stdout(log):
            traces[name] = dpo.main(argv)  # TRL prints every step's log dict: into the file
        results[name] = pair_metrics(before, completion_logps(str(run_dir), dataset), beta)
    return results, traces


def markdown(summary: dict, seeds: list[int], result: dict | None = None) -> str:
    lines = ["| loss | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, metrics in summary.items():
        cells = [fmt(metrics[m]) for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nmean ± sd over seeds {seeds} (sd with n - 1); per-seed values in results.json")
    if result:
        lines.append(f"Command: `{result['command']}`; {result['runtime_s']:.0f} s wall (other jobs may have shared "
                     f"the cores); machine: {result['machine']}")
    return "\n".join(lines)


def plot(traces_by_seed: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TRACE_KEYS), figsize=(4 * len(TRACE_KEYS), 3.6))
    colors = {"DPO": "tab:blue", "CE-U-DPO": "tab:red"}
    for ax, (key, title) in zip(axes, TRACE_KEYS):
        for seed, traces in traces_by_seed.items():
            for name, hist in traces.items():
                ax.plot([h["step"] for h in hist], [h[key] for h in hist], color=colors[name], alpha=0.6,
                        label=name if seed == next(iter(traces_by_seed)) else None)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[-1].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"one line per seed ({len(traces_by_seed)} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/dpo_compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", default="4")
    p.add_argument("--num_pairs", type=int, default=64)
    p.add_argument("--beta", type=float, default=0.1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    start = time.time()
    per_seed, traces = {}, {}
    for i, seed in enumerate(args.seeds):
        per_seed[seed], traces[seed] = run_seed(out, seed, args.epochs, args.num_pairs, args.beta)
        line = "; ".join(f"{n}: margin {r['reward_margin']:.2f}, accuracy {r['reward_accuracy']:.2f}"
                         for n, r in per_seed[seed].items())
        print(f"[dpo_compare {i + 1}/{len(args.seeds)}] seed {seed} done, elapsed {time.time() - start:.0f}s | {line}",
              flush=True)
    summary = {name: {m: mean_sd([per_seed[s][name][m] for s in args.seeds]) for m in METRICS} for name in LOSSES}
    result = {"command": "python -m experiments.dpo_compare " + " ".join(sys.argv[1:] if argv is None else argv),
              "seeds": args.seeds, "summary": summary, "per_seed": per_seed, "traces": traces,
              "runtime_s": time.time() - start,
              "machine": machine_info()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    table = markdown(summary, args.seeds, result)
    (out / "results.md").write_text(table + "\n")
    plot(traces, out / "dpo_vs_ceu_dpo.png")
    print(table + f"\n\nresults in {out}/results.{{json,md}}, plot {out}/dpo_vs_ceu_dpo.png", flush=True)
    return result


if __name__ == "__main__":
    main()
