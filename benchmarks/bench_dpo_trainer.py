"""CEUDPOTrainer (loss_type="ceu") vs TRL's DPOTrainer (sigmoid): training-step time and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dpo_trainer.py [--rounds 9]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dpo_trainer.py --model smollm2   # the real model
Writes benchmarks/results/dpo_trainer.json. Same model (a local Llama, hidden 256, 4 layers, vocab 8k), same batch,
one thread. Step time: median of interleaved rounds (A B A B ...) of `trainer.training_step` (forward + backward;
the optimizer step is the same for both) in one process, with the spread. Peak memory: one fresh subprocess per
variant, rise of max RSS over 3 steps after the trainer is built.

`--model smollm2`: SmolLM2-135M-Instruct (ceu_rl.models.smollm2_path: Q4_1 GGUF weights dequantized to float32),
4 pairs, max_length 128, and a second DPOTrainer ("trl_sigmoid_b", its own copy of the weights) timed in the same
rounds as the noise floor (TRL against itself); per-round ratios recorded. Writes
benchmarks/results/dpo_trainer_smollm2.json.
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
from trl import DPOConfig, DPOTrainer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]  # harness; repo root
from experiments.machine import machine_info  # noqa: E402
from harness import code_state, interleaved_times, peak_in_children, report_peak, round_ratios  # noqa: E402

VARIANTS = ("trl_sigmoid", "ceu")
# Every setting named (none from a default that can change), recorded in the JSON.
SETTINGS = dict(beta=0.1, max_length=256, per_device_train_batch_size=8)
# The real model: its variants (TRL twice: the noise floor) and settings (a round of a few seconds on one thread).
REAL_VARIANTS = ("trl_sigmoid", "ceu", "trl_sigmoid_b")
REAL_SETTINGS = dict(beta=0.1, max_length=128, per_device_train_batch_size=4)
LOSS = {"trl_sigmoid": dict(loss_type="sigmoid"), "trl_sigmoid_b": dict(loss_type="sigmoid"),
        "ceu": dict(loss_type="ceu", ceu_weight=1.0, ceu_exact_gradient=False)}
if "rejected_objective" in CEUDPOConfig.__dataclass_fields__:  # named where this version of the config has it
    LOSS["ceu"]["rejected_objective"] = "ceu_full"
# What the JSON records, read back from each trainer's config.
RECORDED = ("loss_type", "beta", "max_length", "per_device_train_batch_size", "ceu_weight", "rejected_objective",
            "ceu_exact_gradient")


def _data():
    rows = load_split("forget10_perturbed").select(range(64))
    return Dataset.from_dict({"prompt": [f"Question: {q}\nAnswer:" for q in rows["question"]],
                              "chosen": [" " + a for a in rows["answer"]],
                              "rejected": [" " + p[0] for p in rows["perturbed_answer"]]})


def _model_dir(root: Path, model: str = "tiny") -> Path:
    if model == "smollm2":
        from ceu_rl.models import smollm2_path

        return Path(smollm2_path())
    path = root / "bench-model"
    if not (path / "config.json").is_file():
        data = _data()
        save_tiny_model(path, [*data["prompt"], *data["chosen"], *data["rejected"]] * 3, vocab_size=8000,
                        hidden_size=256, num_layers=4, num_heads=4)
    return path


def _trainer(variant: str, model_dir: Path, out: Path, settings: dict = SETTINGS):
    common = dict(output_dir=str(out / variant), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[],
                  save_strategy="no", **settings, **LOSS[variant])
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir)
    if variant == "ceu":
        return CEUDPOTrainer(model=model, ref_model=ref, args=CEUDPOConfig(**common),
                             train_dataset=_data(), processing_class=tok)
    return DPOTrainer(model=model, ref_model=ref, args=DPOConfig(**common),
                      train_dataset=_data(), processing_class=tok)


def _batch(trainer):
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step is called directly here
    return next(iter(trainer.get_train_dataloader()))


def memory_worker(variant: str, root: Path, model: str = "tiny") -> None:
    trainer = _trainer(variant, _model_dir(root, model), root, REAL_SETTINGS if model == "smollm2" else SETTINGS)
    batch = _batch(trainer)
    trainer.model.train()
    report_peak(lambda: trainer.training_step(trainer.model, batch))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--worker", choices=REAL_VARIANTS)
    p.add_argument("--root", default=None)
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                   help="tiny: the local Llama (default); smollm2: SmolLM2-135M-Instruct with a TRL-vs-TRL noise floor")
    p.add_argument("--out", default=None,
                   help="default benchmarks/results/dpo_trainer.json (dpo_trainer_smollm2.json with --model smollm2)")
    args = p.parse_args()
    torch.set_num_threads(1)
    real = args.model == "smollm2"
    variants, settings = (REAL_VARIANTS, REAL_SETTINGS) if real else (VARIANTS, SETTINGS)
    out = args.out or str(Path(__file__).parent / "results" / f"dpo_trainer{'_smollm2' if real else ''}.json")
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-dpo-"))
    if args.worker:
        memory_worker(args.worker, root, args.model)
        return
    model_dir = _model_dir(root, args.model)
    mem = peak_in_children(__file__, variants, ["--root", str(root), "--model", args.model])  # first: process small
    trainers = {v: _trainer(v, model_dir, root, settings) for v in variants}
    batch = _batch(trainers["ceu"])
    for t in trainers.values():
        t.current_gradient_accumulation_steps = 1
        t.model.train()
    times = interleaved_times({v: (lambda t=t: t.training_step(t.model, batch)) for v, t in trainers.items()},
                              args.rounds, keep_rounds=True)
    med = {v: x["median"] for v, x in times.items()}
    model_text = ("SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab 49152, tied embeddings; Q4_1 GGUF "
                  "weights dequantized to float32, ceu_rl.models.smollm2_path); "
                  f"batch {settings['per_device_train_batch_size']} pairs (input_ids {list(batch['input_ids'].shape)}: "
                  f"chosen and rejected rows, prompt + answer, padded); max_length {settings['max_length']}"
                  if real else
                  "Llama hidden 256, 4 layers, vocab 8000; batch 8 pairs; max_length 256")
    report = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dpo_trainer.py " + " ".join(sys.argv[1:]),
        "model": model_text,
        "settings": {v: {"trainer": type(t).__name__, **{k: getattr(t.args, k) for k in RECORDED if hasattr(t.args, k)}}
                     for v, t in trainers.items()},
        "note": "2-core machine shared with other jobs: absolute times disturbed; ratios from interleaved rounds",
        "machine": machine_info(),
        "step_time_s": times,
        "peak_extra_mib": mem,
        "time_ratio_ceu_over_trl": med["ceu"] / med["trl_sigmoid"],
        "memory_ratio_ceu_over_trl": mem["ceu"] / mem["trl_sigmoid"] if mem["trl_sigmoid"] else None,
    }
    if real:
        report["code"] = code_state()
        report["batch_input_ids_shape"] = list(batch["input_ids"].shape)
        report["time_ratio_over_trl_per_round"] = round_ratios(times, "trl_sigmoid")
        report["noise_floor_trl_b_over_trl"] = med["trl_sigmoid_b"] / med["trl_sigmoid"]
        report["memory_ratio_over_trl"] = {v: mem[v] / mem["trl_sigmoid"] if mem["trl_sigmoid"] else None
                                           for v in variants}
        report["goal_time_ratio_at_most_1.03"] = med["ceu"] / med["trl_sigmoid"] <= 1.03
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
