"""CEUGRPOTrainer vs TRL's GRPOTrainer: loss + backward time and peak memory, each CE-U-GRPO variant named.

Variants (every setting spelled out below, none taken from a default that can change): "trl" = GRPOTrainer;
"pg" = CEUGRPOTrainer(negative_objective="pg"), TRL's GRPO through this package's seam; "ceu_min" =
CEUGRPOTrainer(negative_objective="ceu_min"). All with loss_type="dapo", beta=0.0, ceu_exact_gradient=False.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grpo_trainer.py [--rounds 9]
Writes benchmarks/results/grpo_trainer.json. Both trainers get the same generated batch (rollouts are TRL's code in
both, so they are left out): the timed part is `compute_loss(...).backward()`, the only code that differs. Median of
interleaved rounds (A B A B ...) in one process, with the spread; peak memory: one fresh subprocess per variant,
rise of max RSS over 3 passes. Model: a local Llama, hidden 256, 4 layers, vocab 8000; 16 completions of 64 tokens.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grpo_trainer.py --model smollm2   # the real model
SmolLM2-135M-Instruct (ceu_rl.models.smollm2_path: Q4_1 GGUF weights dequantized to float32), 8 completions of at
most 32 tokens (4 per prompt), variants trl, pg, ceu_min, ceu_full and "trl_b", a second GRPOTrainer (its own copy
of the weights) timed in the same rounds as the noise floor (TRL against itself); per-round ratios recorded. Writes
benchmarks/results/grpo_trainer_smollm2.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]  # harness; repo root
from experiments.machine import machine_info  # noqa: E402
from harness import code_state, interleaved_times, peak_in_children, report_peak, round_ratios  # noqa: E402

VARIANTS = ("trl", "pg", "ceu_min")
# The settings every variant shares, recorded in the JSON.
SETTINGS = dict(loss_type="dapo", beta=0.0, per_device_train_batch_size=16, num_generations=8, max_completion_length=64)
# The real model: TRL twice (the noise floor) and CE-U-GRPO's full objective too; a pass of a few seconds.
REAL_VARIANTS = ("trl", "pg", "ceu_min", "ceu_full", "trl_b")
REAL_SETTINGS = dict(loss_type="dapo", beta=0.0, per_device_train_batch_size=8, num_generations=4,
                     max_completion_length=32)
# What the JSON records, read back from each trainer's config.
RECORDED = (*SETTINGS, "negative_objective", "ceu_exact_gradient")


def reward(completions, **kwargs):
    return [float(len(c) % 7) for c in completions]


def _prompts():
    return [f"Question: {q}\nAnswer:" for q in load_split("forget10").select(range(32))["question"]]


def _model_dir(root: Path, model: str = "tiny") -> Path:
    if model == "smollm2":
        from ceu_rl.models import smollm2_path

        return Path(smollm2_path())
    path = root / "bench-model"
    if not (path / "config.json").is_file():
        save_tiny_model(path, _prompts() * 3 + list(load_split("forget10")["answer"]), vocab_size=8000,
                        hidden_size=256, num_layers=4, num_heads=4)
    return path


def _trainer(variant: str, model_dir: Path, out: Path, settings: dict = SETTINGS):
    common = dict(output_dir=str(out / variant), use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                  gradient_checkpointing=False, seed=0, **settings)
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = Dataset.from_dict({"prompt": _prompts()})
    if variant not in ("trl", "trl_b"):
        args = CEUGRPOConfig(negative_objective=variant, ceu_exact_gradient=False, **common)
        return CEUGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok)
    return GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(**common), train_dataset=data,
                       processing_class=tok)


def _inputs(trainer):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def _pass(trainer, inputs):
    trainer.model.zero_grad(set_to_none=True)
    trainer.compute_loss(trainer.model, inputs).backward()


def memory_worker(variant: str, root: Path, model: str = "tiny") -> None:
    trainer = _trainer(variant, _model_dir(root, model), root, REAL_SETTINGS if model == "smollm2" else SETTINGS)
    inputs = _inputs(trainer)
    report_peak(lambda: _pass(trainer, inputs))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--worker", choices=REAL_VARIANTS)
    p.add_argument("--root", default=None)
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                   help="tiny: the local Llama (default); smollm2: SmolLM2-135M-Instruct with a TRL-vs-TRL noise floor")
    p.add_argument("--out", default=None,
                   help="default benchmarks/results/grpo_trainer.json (grpo_trainer_smollm2.json with --model smollm2)")
    args = p.parse_args()
    torch.set_num_threads(1)
    real = args.model == "smollm2"
    variants, settings = (REAL_VARIANTS, REAL_SETTINGS) if real else (VARIANTS, SETTINGS)
    out = args.out or str(Path(__file__).parent / "results" / f"grpo_trainer{'_smollm2' if real else ''}.json")
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-grpo-"))
    if args.worker:
        memory_worker(args.worker, root, args.model)
        return
    model_dir = _model_dir(root, args.model)
    mem = peak_in_children(__file__, variants, ["--root", str(root), "--model", args.model])  # first: process small
    trainers = {v: _trainer(v, model_dir, root, settings) for v in variants}
    inputs = _inputs(trainers["pg"])  # one generated batch, used by all
    for t in trainers.values():
        t.model.train()
        t.current_gradient_accumulation_steps = 1
    times = interleaved_times({v: (lambda t=t: _pass(t, inputs)) for v, t in trainers.items()}, args.rounds,
                              keep_rounds=True)
    med = {v: x["median"] for v, x in times.items()}
    shape = (f"{inputs['completion_ids'].shape[0]} completions x {inputs['completion_ids'].shape[1]} tokens (padded; "
             f"{int(inputs['completion_mask'].sum())} completion tokens), prompts {inputs['prompt_ids'].shape[1]} "
             "tokens (padded)")
    report = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grpo_trainer.py " + " ".join(sys.argv[1:]),
        "model": ("SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab 49152, tied embeddings; Q4_1 GGUF "
                  "weights dequantized to float32, ceu_rl.models.smollm2_path); " + shape if real else
                  "Llama hidden 256, 4 layers, vocab 8000; 16 completions x 64 tokens"),
        "settings": {v: {"trainer": type(t).__name__, **{k: getattr(t.args, k) for k in RECORDED if hasattr(t.args, k)}}
                     for v, t in trainers.items()},
        "note": "2-core machine shared with other jobs: absolute times disturbed; ratios from interleaved rounds",
        "negative_token_fraction": float(((inputs["advantages"] < 0).float().unsqueeze(1) * inputs["completion_mask"]).sum()
                                         / inputs["completion_mask"].sum()),
        "machine": machine_info(),
        "loss_backward_time_s": times,
        "peak_extra_mib": mem,
        "time_ratio_over_trl": {v: med[v] / med["trl"] for v in variants},
        "memory_ratio_over_trl": {v: mem[v] / mem["trl"] if mem["trl"] else None for v in variants},
    }
    if real:
        report["code"] = code_state()
        report["time_ratio_over_trl_per_round"] = round_ratios(times, "trl")
        report["noise_floor_trl_b_over_trl"] = med["trl_b"] / med["trl"]
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
