"""Issue 17: the GRPO token-reweighting family on binary-success tasks, judged by pass@k and entropy.

    python -m experiments.grpo_compare.family [--out outputs/grpo_family] [--tasks sort shift]
        [--learning_rates 2e-4 5e-4] [--seeds 0 1 2] [--methods grpo ceu_min ...] [--max_steps 160]

Per seed and task one tiny model is warm-started (SFT) and shared by every method and learning rate (paired). The
reward is `all_correct_reward` (1 iff the whole answer is right). Each run is scored on held-out prompts with the
unbiased pass@k (`passk.py`) at k = 1, 4, 16, 64 from 64 samples per prompt, drawn as in training with a fixed seed;
the warm start is scored the same way. Per step: training reward, entropy, gradient norm. Each run writes
family_runs/<task>/lr<lr>/<method>/seed<seed>.json when it ends (resumable); `--aggregate_only` rebuilds the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "recipes"), str(ROOT)]
import grpo  # noqa: E402
from experiments.grpo_compare.passk import pass_at_k_curve, sample_correct_counts  # noqa: E402
from experiments.grpo_compare.tasks import all_correct_reward, make_dataset  # noqa: E402
from experiments.machine import machine_info  # noqa: E402

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer  # noqa: E402
from ceu_rl.console import JobLines, quiet_trainer  # noqa: E402

# name: CEUGRPOConfig fields (on top of BASE). Papers in docs/grpo_compare/README.md.
METHODS = {
    "grpo": {},
    "ceu_min": {"negative_objective": "ceu_min"},
    "ceu_mix_0.25": {"negative_objective": "ceu_mix", "ceu_mix_lambda": 0.25},
    "ceu_mix_0.5": {"negative_objective": "ceu_mix", "ceu_mix_lambda": 0.5},
    "w_reinforce": {"positive_weight": 0.1},
    "nsr": {"positive_weight": 0.0},
    "ar": {"token_weighting": "advantage_reweighting", "ar_alpha": 0.3},
    "clip_higher": {"epsilon_high": 0.28},
    "entropy_bonus": {"entropy_coef": 0.01},
    # ~150 valid tokens per loss batch here: 0.02 detaches the top 3 (the paper's 2e-4 would detach none)
    "clip_cov": {"token_weighting": "clip_cov", "clip_cov_ratio": 0.02},
    "shared_negative": {"shared_negative_weight": 0.5},  # NTHR-style: half the push on shared negative tokens
}
# 8 prompts x 8 completions per generation, used for 4 optimizer steps (steps 2-4 are off-policy: clipping acts)
BASE = dict(use_cpu=True, bf16=False, loss_type="dapo", beta=0.0, per_device_train_batch_size=16, num_generations=8,
            steps_per_generation=4, max_completion_length=12, temperature=1.0, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, gradient_checkpointing=False)
WORD_LENGTH = {"sort": 4, "reverse": 4, "shift": 6}
KS = (1, 4, 16, 64)
EVAL_PROMPTS, EVAL_SAMPLES, EVAL_SEED = 32, 64, 10_000
STEP_KEYS = ("reward", "entropy", "grad_norm")


def warm_model(out: Path, task: str, seed: int, args) -> tuple[str, dict]:
    """The task's SFT model for `seed` (built once; shared by every method and rate) and its held-out pass@k."""
    task_args = grpo.TaskArguments(task=task, word_length=WORD_LENGTH[task], sft_epochs=args.sft_epochs,
                                   sft_examples=args.sft_examples)
    folder = out / "models" / f"{task}_seed{seed}"
    with open(out / "build.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        path = grpo.build_tiny_model(folder, task_args, seed)
    cache = folder / "passk.json"
    if not cache.is_file():
        cache.write_text(json.dumps(evaluate(AutoModelForCausalLM.from_pretrained(path),
                                             AutoTokenizer.from_pretrained(path), task, _config(out, task, "grpo",
                                                                                                "5e-4", seed, args))))
    return path, json.loads(cache.read_text())


def evaluate(model, tokenizer, task: str, cfg) -> dict:
    counts = sample_correct_counts(model, tokenizer, make_dataset(task, EVAL_PROMPTS, WORD_LENGTH[task], EVAL_SEED),
                                   cfg, EVAL_SAMPLES, EVAL_SEED)
    return {"pass_at_k": pass_at_k_curve(counts, EVAL_SAMPLES, KS), "correct_counts": counts}


def _config(out, task, method, lr, seed, args) -> CEUGRPOConfig:
    return CEUGRPOConfig(**BASE, **METHODS[method], learning_rate=float(lr), seed=seed, max_steps=args.max_steps,
                         output_dir=str(_run_path(out, seed, task, lr, method).with_suffix("")))


def run_one(out: Path, task: str, lr: str, method: str, seed: int, args) -> dict:
    path, warm = warm_model(out, task, seed, args)
    cfg = _config(out, task, method, lr, seed, args)
    tokenizer = AutoTokenizer.from_pretrained(path)
    per_generation = BASE["per_device_train_batch_size"] * BASE["steps_per_generation"] // BASE["num_generations"]
    prompts = make_dataset(task, per_generation * -(-args.max_steps // BASE["steps_per_generation"]),
                           WORD_LENGTH[task], seed)  # one epoch of whole generation batches covers max_steps
    start, cpu = time.time(), time.process_time()
    with open(out / "build.log", "a") as log, contextlib.redirect_stderr(log):
        trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=all_correct_reward,
                                 args=cfg, train_dataset=prompts, processing_class=tokenizer)
        quiet_trainer(trainer, Path(cfg.output_dir, "log.jsonl"))
        trainer.train()
    train_seconds = time.time() - start
    final = evaluate(trainer.model, tokenizer, task, cfg)
    history = [{k: h.get(k) for k in ("step", *STEP_KEYS)} for h in trainer.state.log_history if "loss" in h]
    return {"task": task, "learning_rate": float(lr), "method": method, "config": METHODS[method], "seed": seed,
            "steps": len(history), "train_seconds": round(train_seconds, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "pass_at_k_warm": warm["pass_at_k"], "pass_at_k_final": final["pass_at_k"],
            "correct_counts_warm": warm["correct_counts"], "correct_counts_final": final["correct_counts"],
            "history": history}


def _run_path(out: Path, seed: int, task: str, lr: str, method: str) -> Path:
    return out / "family_runs" / task / f"lr{lr}" / method / f"seed{seed}.json"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/grpo_family")
    p.add_argument("--tasks", nargs="+", default=["sort", "shift"], choices=sorted(WORD_LENGTH))
    p.add_argument("--learning_rates", nargs="+", default=["2e-4", "5e-4"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max_steps", type=int, default=160)
    p.add_argument("--sft_epochs", type=int, default=12)
    p.add_argument("--sft_examples", type=int, default=128)
    p.add_argument("--aggregate_only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # seed-major: a stopped sweep has whole seeds (every method paired on the same warm start)
    grid = [(s, t, lr, m) for s in args.seeds for t in args.tasks for lr in args.learning_rates for m in args.methods]
    todo = [g for g in grid if not _run_path(out, *g).is_file()]
    lines = JobLines(len(todo), "grpo_family")
    start = time.time()
    for seed, task, lr, method in [] if args.aggregate_only else todo:
        row = run_one(out, task, lr, method, seed, args)
        _run_path(out, seed, task, lr, method).write_text(json.dumps(row, indent=1))
        lines.done(f"{task} lr={lr} {method} seed={seed}", row["train_seconds"],
                   **{f"pass@{k}": row["pass_at_k_final"][str(k)] for k in (1, 64)},
                   warm_pass64=row["pass_at_k_warm"]["64"])
    from experiments.grpo_compare.family_report import write_family_report

    command = "python -m experiments.grpo_compare.family " + " ".join(argv if argv is not None else sys.argv[1:])
    return write_family_report(out, [_run_path(out, *g) for g in grid if _run_path(out, *g).is_file()],
                               list(args.methods), {"command": command, "machine": machine_info(),
                                                    "sweep_seconds_this_call": round(time.time() - start)})


if __name__ == "__main__":
    main()
