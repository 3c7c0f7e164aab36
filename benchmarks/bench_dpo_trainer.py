"""CEUDPOTrainer (loss_type="ceu") vs TRL's DPOTrainer (sigmoid): training-step time and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dpo_trainer.py [--rounds 9]
Writes benchmarks/results/dpo_trainer.json. Same model (a local Llama, hidden 256, 4 layers, vocab 8k), same batch,
one thread. Step time: median of interleaved rounds (A B A B ...) of `trainer.training_step` (forward + backward;
the optimizer step is the same for both) in one process, with the spread. Peak memory: one fresh subprocess per variant, rise of max RSS over 3 steps after the trainer is built.
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
from harness import interleaved_times, peak_in_children, report_peak  # noqa: E402

VARIANTS = ("trl_sigmoid", "ceu")
# Every setting named (none from a default that can change), recorded in the JSON.
SETTINGS = dict(beta=0.1, max_length=256, per_device_train_batch_size=8)
LOSS = {"trl_sigmoid": dict(loss_type="sigmoid"),
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


def _model_dir(root: Path) -> Path:
    path = root / "bench-model"
    if not (path / "config.json").is_file():
        data = _data()
        save_tiny_model(path, [*data["prompt"], *data["chosen"], *data["rejected"]] * 3, vocab_size=8000,
                        hidden_size=256, num_layers=4, num_heads=4)
    return path


def _trainer(variant: str, model_dir: Path, out: Path):
    common = dict(output_dir=str(out / variant), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[],
                  save_strategy="no", **SETTINGS, **LOSS[variant])
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


def memory_worker(variant: str, root: Path) -> None:
    trainer = _trainer(variant, _model_dir(root), root)
    batch = _batch(trainer)
    trainer.model.train()
    report_peak(lambda: trainer.training_step(trainer.model, batch))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--worker", choices=VARIANTS)
    p.add_argument("--root", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dpo_trainer.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-dpo-"))
    if args.worker:
        memory_worker(args.worker, root)
        return
    _model_dir(root)
    mem = peak_in_children(__file__, VARIANTS, ["--root", str(root)])  # first, while this process is small
    trainers = {v: _trainer(v, _model_dir(root), root) for v in VARIANTS}
    batch = _batch(trainers["ceu"])
    for t in trainers.values():
        t.current_gradient_accumulation_steps = 1
        t.model.train()
    times = interleaved_times({v: (lambda t=t: t.training_step(t.model, batch)) for v, t in trainers.items()},
                              args.rounds)
    med = {v: x["median"] for v, x in times.items()}
    report = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dpo_trainer.py " + " ".join(sys.argv[1:]),
        "model": "Llama hidden 256, 4 layers, vocab 8000; batch 8 pairs; max_length 256",
        "settings": {v: {"trainer": type(t).__name__, **{k: getattr(t.args, k) for k in RECORDED if hasattr(t.args, k)}}
                     for v, t in trainers.items()},
        "note": "2-core machine shared with other jobs: absolute times disturbed; ratios from interleaved rounds",
        "machine": machine_info(),
        "step_time_s": times,
        "peak_extra_mib": mem,
        "time_ratio_ceu_over_trl": med["ceu"] / med["trl_sigmoid"],
        "memory_ratio_ceu_over_trl": mem["ceu"] / mem["trl_sigmoid"] if mem["trl_sigmoid"] else None,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
