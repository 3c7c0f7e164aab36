"""CE-U-DPO against DPO and the field's fixes for likelihood displacement, over seeds and learning rates.

    python -m experiments.dpo_compare [--out outputs/dpo_compare] [--seeds 0 1 2 3 4] [--lrs 3e-4 1e-3]
        [--epochs 4] [--train_pairs 32] [--held_out_pairs 32] [--retain 32] [--methods NAME ...]
        [--pair_kind perturbed|shared_prefix] [--aggregate_only]

Per seed one tiny Llama supervised on both answers of every pair and on the retain answers (the reference of every
run); per method x learning rate x seed the same training pairs, steps and batch order. Measured per run, from
float64 full logits before and after: the change of the summed chosen and rejected log-prob on the training pairs
and on held-out pairs (same kind, not trained on), the reward margin beta (chosen change - rejected change) and the
reward accuracy (fraction of pairs with margin > 0) on both, and collateral damage: the change of the summed
log-prob of unrelated TOFU retain answers. Resumable: each run is one JSON under <out>/runs/, skipped when present.
Results: results.json (per seed, mean and sd, command, machine), results.md, dpo_compare.png (report.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import datasets
import torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # uninstalled: the repo root holds experiments/
    sys.path.insert(0, str(ROOT))

from ceu_rl import CEUDPOConfig, CEUDPOTrainer  # noqa: E402
from ceu_rl.console import JobLines, quiet_trainer  # noqa: E402
from experiments.dpo_compare import data as dpo_data  # noqa: E402
from experiments.dpo_compare.methods import select  # noqa: E402
from experiments.dpo_compare.report import write_report  # noqa: E402
from experiments.machine import machine_info  # noqa: E402

METRICS = ("train_chosen_change", "train_rejected_change", "train_reward_margin", "train_reward_accuracy",
           "heldout_chosen_change", "heldout_rejected_change", "heldout_reward_margin", "heldout_reward_accuracy",
           "retain_change")


def pair_metrics(before: torch.Tensor, after: torch.Tensor, beta: float, prefix: str = "") -> dict[str, float]:
    """Mean change of the chosen and rejected log-prob, reward margin and accuracy over pairs ((pairs, 2) tensors)."""
    change = after - before
    margin = beta * (change[:, 0] - change[:, 1])
    return {f"{prefix}chosen_change": change[:, 0].mean().item(),
            f"{prefix}rejected_change": change[:, 1].mean().item(),
            f"{prefix}reward_margin": margin.mean().item(),
            f"{prefix}reward_accuracy": (margin > 0).double().mean().item()}


def scores(model, tokenizer, sets: dict) -> dict[str, torch.Tensor]:
    return {"train": dpo_data.pair_logps(model, tokenizer, sets["train"]),
            "heldout": dpo_data.pair_logps(model, tokenizer, sets["heldout"]),
            "retain": dpo_data.completion_logps(model, tokenizer, sets["retain"]["prompt"], sets["retain"]["answer"])}


def run_metrics(before: dict, after: dict, beta: float) -> dict[str, float]:
    return {**pair_metrics(before["train"], after["train"], beta, "train_"),
            **pair_metrics(before["heldout"], after["heldout"], beta, "heldout_"),
            "retain_change": (after["retain"] - before["retain"]).mean().item()}


def load_sets(args) -> dict:
    return {"train": dpo_data.preference_pairs(0, args.train_pairs, args.pair_kind),
            "heldout": dpo_data.preference_pairs(args.train_pairs, args.held_out_pairs, args.pair_kind),
            "retain": dpo_data.retain_texts(args.retain)}


def seed_model(out: Path, seed: int, sets: dict, args) -> tuple[str, dict]:
    """The seed's SFT model and its scores (cached in <out>/seed<s>/before.json)."""
    seed_dir = out / f"seed{seed}"
    path = dpo_data.build_model(seed_dir, sets["train"], sets["heldout"], sets["retain"], args.sft_epochs, seed)
    cache = seed_dir / "before.json"
    if cache.is_file():
        return path, {k: torch.tensor(v, dtype=torch.float64) for k, v in json.loads(cache.read_text()).items()}
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    before = scores(model, transformers.AutoTokenizer.from_pretrained(path), sets)
    cache.write_text(json.dumps({k: v.tolist() for k, v in before.items()}))
    shared = dpo_data.shared_prefix_fraction(transformers.AutoTokenizer.from_pretrained(path), sets["train"])
    (seed_dir / "shared_prefix.json").write_text(json.dumps(shared))
    return path, before


def run_one(model_path: str, before: dict, sets: dict, method: dict, lr: str, seed: int, run_dir: Path,
            args) -> dict:
    """Train one method from the seed's model; its metrics, the last training log and the time."""
    cfg = CEUDPOConfig(output_dir=str(run_dir), use_cpu=True, bf16=False, per_device_train_batch_size=args.batch_size,
                       num_train_epochs=args.epochs, learning_rate=float(lr), beta=args.beta, max_length=256,
                       logging_steps=1, save_strategy="no", report_to=[], seed=seed, disable_tqdm=True,
                       gradient_checkpointing=False, **method)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_path)
    trainer = CEUDPOTrainer(model=model, args=cfg, train_dataset=sets["train"], processing_class=tokenizer)
    quiet_trainer(trainer, run_dir / "log.jsonl")
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start
    history = [h for h in trainer.state.log_history if "loss" in h]
    after = scores(trainer.model, tokenizer, sets)
    return {**run_metrics(before, after, args.beta), "steps": trainer.state.global_step,
            "final_log": history[-1] if history else {}, "train_seconds": train_seconds}


def _run_path(out: Path, seed: int, lr: str, name: str) -> Path:
    return out / "runs" / f"seed{seed}" / f"lr{lr}" / (name.replace(" ", "_").replace("=", "") + ".json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/dpo_compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--lrs", nargs="+", default=["3e-4", "1e-3"], help="learning rates (as written in file names)")
    p.add_argument("--methods", nargs="+", default=None, help="default: every method of methods.py")
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--train_pairs", type=int, default=32)
    p.add_argument("--held_out_pairs", type=int, default=32)
    p.add_argument("--retain", type=int, default=32, help="unrelated retain answers scored for collateral damage")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--sft_epochs", type=int, default=8)
    p.add_argument("--pair_kind", default="perturbed", choices=dpo_data.PAIR_KINDS,
                   help="rejected answer: TOFU's perturbed answer, or half the true answer then half the perturbed one")
    p.add_argument("--aggregate_only", action="store_true", help="only rewrite the report from the runs on disk")
    args = p.parse_args(argv)
    methods = select(args.methods)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    sets = load_sets(args)
    grid = [(s, lr, name) for s in args.seeds for lr in args.lrs for name in methods]
    todo = [] if args.aggregate_only else [g for g in grid if not _run_path(out, *g).is_file()]
    lines = JobLines(len(todo), "dpo_compare")
    start = time.time()
    models = {}
    for seed, lr, name in todo:
        if seed not in models:
            models[seed] = seed_model(out, seed, sets, args)
        path = _run_path(out, seed, lr, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        row = run_one(*models[seed], sets, methods[name], lr, seed, path.with_suffix(""), args)
        row.update(method=name, lr=lr, seed=seed, config=methods[name])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        tmp.rename(path)  # a run interrupted mid-write is redone, not half-read
        lines.done(f"{name} lr={lr} seed={seed}", row["train_seconds"], chosen=row["train_chosen_change"],
                   rejected=row["train_rejected_change"], heldout_acc=row["heldout_reward_accuracy"],
                   retain=row["retain_change"])
    command = "python -m experiments.dpo_compare " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "machine": machine_info(), "seconds_this_call": round(time.time() - start),
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "aggregate_only")},
            "machine_note": "shared machine (other jobs running): timings are indicative only"}
    meta["shared_prefix"] = {s: json.loads((out / f"seed{s}" / "shared_prefix.json").read_text())
                             for s in args.seeds if (out / f"seed{s}" / "shared_prefix.json").is_file()}
    return write_report(out, [_run_path(out, *g) for g in grid], list(methods), args.lrs, meta)


if __name__ == "__main__":
    main()
