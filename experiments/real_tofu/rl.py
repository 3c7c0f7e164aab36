"""RL unlearning on the real model (issue 30, claim a): GRPO + retain vs CE-U-GRPO (`ceu_full`) + retain on the full
model's forget prompts, reward `forget_answer_penalty` (1 - ROUGE-L recall of the sampled answer against the forget
answer), GradDiff's retain NLL as the anchor, rollouts by TRL's vLLM colocate engine on CPU (eager, float32:
experiments/real_rl/grpo.py's `_eager_llm`). The mini-TOFU RL job (experiments/mini_tofu/rl_jobs.py) with the real
model's chat prompts, evaluation and relearning attack; the record has unlearn_job's format, so the report and the
operating-point rule apply unchanged.

vLLM wants a process of its own (a second engine in a reused worker process is not released cleanly), so `rl_job`
runs each run as a child process: `python -m experiments.real_tofu.rl --job JOB.pkl` writes the record next to it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from ..mini_tofu.jobs import _Clock, _EvaluateAt
from ..mini_tofu.rl_jobs import TRACE_KEYS, rl_eval_steps
from .config import RealTofuConfig

ROOT = Path(__file__).resolve().parents[2]
RL_METHODS = {"grpo_retain": "pg", "ceu_full_retain": "ceu_full"}  # objective: CEUGRPOConfig.negative_objective


def rl_config(cfg: RealTofuConfig, seed: int, objective: str, lr: float, output_dir: Path):
    from ceu_rl import CEUGRPOConfig

    return CEUGRPOConfig(
        output_dir=str(output_dir), use_cpu=True, bf16=False, seed=seed, learning_rate=lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, num_train_epochs=cfg.rl_epochs,
        per_device_train_batch_size=cfg.rl_prompts_per_step * cfg.rl_generations, num_generations=cfg.rl_generations,
        max_completion_length=cfg.rl_max_new_tokens, temperature=cfg.rl_temperature, loss_type=cfg.rl_loss_type,
        beta=0.0, negative_objective=RL_METHODS[objective], use_vllm=True, vllm_mode="colocate",
        vllm_max_model_length=cfg.max_length, vllm_gpu_memory_utilization=0.3, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, gradient_checkpointing=False)


def run_in_process(cfg: RealTofuConfig, seed: int, objective: str, lr: float, out: Path) -> dict:
    """One RL run (must be the process's only vLLM engine): train, evaluate at `rl_eval_steps`, keep the final model
    if attacked, relearn it at the highest lr."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl.console import quiet_trainer
    from ceu_rl.tofu.formatting import format_prompt
    from ceu_rl.tofu.rewards import forget_answer_penalty
    from ceu_rl.unlearn.rl_unlearn_trainer import RetainAnchoredGRPOTrainer

    from ..real_rl.grpo import _eager_llm
    from .jobs import evaluate, model_dir, relearn_attack, splits

    torch.set_num_threads(1)
    _eager_llm()
    clock = _Clock()
    retain, forget = splits(cfg)
    full = model_dir(out, "full")
    tokenizer, model = AutoTokenizer.from_pretrained(full), AutoModelForCausalLM.from_pretrained(full)
    name = f"{objective}_lr{lr:g}"
    prompts = Dataset.from_dict({"prompt": [format_prompt(q, tokenizer, cfg.prompt_format) for q in forget["question"]],
                                 "answer": list(forget["answer"])})
    steps = rl_eval_steps(cfg, len(forget))
    evaluator = _EvaluateAt(steps, lambda m: evaluate(m, tokenizer, cfg))
    trainer = RetainAnchoredGRPOTrainer(
        model=model, reward_funcs=forget_answer_penalty,
        args=rl_config(cfg, seed, objective, lr, Path(out) / "runs" / f"seed{seed}" / name), train_dataset=prompts,
        processing_class=tokenizer, callbacks=[evaluator], retain_dataset=retain, retain_coef=cfg.rl_retain_coef,
        retain_batch_size=cfg.rl_retain_batch_size, prompt_format=cfg.prompt_format, max_length=cfg.max_length)
    quiet_trainer(trainer, Path(out) / "logs" / f"seed{seed}" / f"{name}.jsonl")
    trainer.train()
    missing = sorted(set(steps) - {int(k) for k in evaluator.logs})
    if missing:
        raise RuntimeError(f"{name} seed {seed}: no evaluation at steps {missing} (ran {trainer.state.global_step}).")
    trace = [{k: h[k] for k in TRACE_KEYS if k in h} for h in trainer.state.log_history if "loss" in h]
    if objective in cfg.attacked:
        trainer.save_model(str(model_dir(out, f"seed{seed}/{name}")))
        tokenizer.save_pretrained(model_dir(out, f"seed{seed}/{name}"))
    attack = {}
    if objective in cfg.attacked and lr == max(cfg.lrs_of(objective)):
        attack = {"relearn": relearn_attack(trainer.model, tokenizer, cfg, seed)}
    return {"seed": seed, "name": name, "objective": objective, "lr": lr, "eval_logs": evaluator.logs,
            "trace": trace, "rollouts": "vllm colocate (CPU, eager, float32)", **attack, **clock.seconds()}


def rl_job(cfg: RealTofuConfig, seed: int, objective: str, lr: float, out: Path) -> dict:
    """`run_in_process` in a child process (the runner's job function for RL objectives)."""
    job = Path(out) / "jobs" / f"seed{seed}" / f"{objective}_lr{lr:g}.rl.pkl"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_bytes(pickle.dumps((cfg, seed, objective, lr, Path(out))))
    log = Path(out) / "logs" / f"seed{seed}" / f"{objective}_lr{lr:g}.child.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", "experiments.real_tofu.rl", "--job", str(job)], stdout=fh,
                              stderr=fh, env=env, cwd=ROOT)
    record = job.with_suffix(".record.pkl")
    if done.returncode or not record.is_file():
        raise RuntimeError(f"RL run {objective} lr {lr:g} seed {seed} failed (exit {done.returncode}); see {log}.")
    result = pickle.loads(record.read_bytes())
    job.unlink()
    record.unlink()
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--job":
        raise SystemExit("usage: python -m experiments.real_tofu.rl --job JOB.pkl (written by rl_job)")
    path = Path(sys.argv[2])
    path.with_suffix(".record.pkl").write_bytes(pickle.dumps(run_in_process(*pickle.loads(path.read_bytes()))))
