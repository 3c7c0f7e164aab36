"""The RL unlearning job of mini-TOFU (issue 16): GRPO or a CE-U-GRPO variant on the forget prompts of the seed's
full model, reward `forget_answer_penalty` (1 - ROUGE-L recall of the sampled answer against the forget answer),
rollouts with transformers `generate`, optionally anchored (KL to the full model, or GradDiff's retain NLL).

Returns the same record as `jobs.unlearn_job` (TOFU eval logs at the evaluated steps, a per-step trace), plus the
generated tokens and the CPU seconds spent evaluating. The per-step trace holds the mechanism of the study: p of the
forget answers' tokens (teacher-forced, all forget questions, after the step's update), and TRL's/CEUGRPOTrainer's
rollout metrics: mean p of the negative-advantage tokens, of those a positive completion of the group shares
(`ceu/p_shared_mean`), reward, entropy, completion length, KL, retain NLL.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from ceu_rl import CEUGRPOConfig
from ceu_rl.console import quiet_trainer
from ceu_rl.tofu.formatting import encode_qa, format_prompt
from ceu_rl.tofu.rewards import forget_answer_penalty
from ceu_rl.unlearn.data import pad_batch
from ceu_rl.unlearn.rl_unlearn_trainer import RetainAnchoredGRPOTrainer

from .config import MiniTofuConfig, rl_objective
from .jobs import _Clock, _EvaluateAt, attacked, evaluate, load_full_model, splits

# per-step keys kept in the trace (those present in TRL's / CEUGRPOTrainer's logs)
TRACE_KEYS = ("step", "loss", "grad_norm", "reward", "entropy", "completions/mean_length", "kl", "retain/nll",
              "ceu/negative_fraction", "ceu/p_negative_mean", "ceu/shared_fraction", "ceu/p_shared_mean",
              "ceu/weight_mean")


def rl_steps(cfg: MiniTofuConfig, forget_size: int) -> int:
    return cfg.rl_epochs * -(-forget_size // cfg.rl_prompts_per_step)


def rl_eval_steps(cfg: MiniTofuConfig, forget_size: int) -> list[int]:
    """`rl_eval_points` evenly spaced steps, the last the final step."""
    total = rl_steps(cfg, forget_size)
    return sorted({max(1, round(total * k / cfg.rl_eval_points)) for k in range(1, cfg.rl_eval_points + 1)})


def forget_answer_p(model, tokenizer, forget, batch_size: int = 64) -> float:
    """Mean p of the forget answers' tokens given their questions (teacher-forced, plain prompts): the probability
    mass the memorised answers still have."""
    items = [encode_qa(tokenizer, q, a, "plain", 256) for q, a in zip(forget["question"], forget["answer"])]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            batch = pad_batch(items[i:i + batch_size], tokenizer.pad_token_id or 0)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            valid = labels != -100
            logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            total += logp.exp()[valid].sum().item()
            count += int(valid.sum())
    model.train(was_training)
    return total / max(count, 1)


class _ForgetAnswerP(TrainerCallback):
    """p of the forget answers' tokens after every step's update (step 0: the full model)."""

    def __init__(self, fn):
        self.fn, self.values = fn, {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.values[0] = self.fn(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.values[state.global_step] = self.fn(model)


def rl_config(cfg: MiniTofuConfig, seed: int, objective: str, lr: float, output_dir: Path) -> CEUGRPOConfig:
    negative_objective, anchor = rl_objective(objective)
    return CEUGRPOConfig(
        output_dir=str(output_dir), use_cpu=True, seed=seed, learning_rate=lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, num_train_epochs=cfg.rl_epochs,
        per_device_train_batch_size=cfg.rl_prompts_per_step * cfg.rl_generations, num_generations=cfg.rl_generations,
        max_completion_length=cfg.rl_max_new_tokens, temperature=cfg.rl_temperature, loss_type=cfg.rl_loss_type,
        beta=cfg.rl_kl_beta if anchor == "kl" else 0.0, use_bias_correction_kl=False,
        negative_objective=negative_objective, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, gradient_checkpointing=False)  # TRL's default is on: on a 2-layer model it only costs
    # time (13% of an RL run's CPU). Results are bit-identical: the main job's RL runs without it equal the committed
    # --full --rl runs, made with it, value by value.


def rl_trainer(cfg: MiniTofuConfig, seed: int, objective: str, lr: float, out: Path, callbacks=(),
               log_name: str | None = None) -> RetainAnchoredGRPOTrainer:
    """The trainer of one RL run (the seed's full model, the RL `objective` at `lr`), quiet, not yet trained:
    `rl_unlearn_job` evaluates it along the way; the attack study stops it at an operating point."""
    retain, forget, _ = splits(cfg)
    tokenizer, model = load_full_model(out, seed)
    name = f"{objective}_lr{lr:g}"
    _, anchor = rl_objective(objective)
    prompts = Dataset.from_dict({"prompt": [format_prompt(q, tokenizer, "plain") for q in forget["question"]],
                                 "answer": list(forget["answer"])})
    trainer = RetainAnchoredGRPOTrainer(
        model=model, reward_funcs=forget_answer_penalty, args=rl_config(cfg, seed, objective, lr,
                                                                       out / "runs" / f"seed{seed}" / name),
        train_dataset=prompts, processing_class=tokenizer, callbacks=list(callbacks),
        retain_dataset=retain if anchor == "retain" else None, retain_coef=cfg.rl_retain_coef if anchor == "retain"
        else 0.0, retain_batch_size=cfg.rl_retain_batch_size,
        sam_rho=cfg.objective_overrides.get(objective, {}).get("sam_rho", 0.0))  # SAM on the RL loss (issue 25)
    quiet_trainer(trainer, out / "logs" / f"seed{seed}" / f"{log_name or name}.jsonl")
    return trainer


def rl_unlearn_job(cfg: MiniTofuConfig, seed: int, objective: str, lr: float, out: Path) -> dict:
    """Unlearn the seed's full model with the RL `objective` at `lr`; eval logs at `rl_eval_steps`, the per-step
    trace, generated tokens, and the CPU seconds of the evaluations (the rest is training: rollouts + updates)."""
    clock = _Clock()
    _, forget, _ = splits(cfg)
    name = f"{objective}_lr{lr:g}"
    eval_cpu = [0.0]

    def timed_eval(m):  # called during training, when `trainer` exists
        start = time.process_time()
        log = evaluate(m, trainer.processing_class, cfg)
        eval_cpu[0] += time.process_time() - start
        return log

    steps = rl_eval_steps(cfg, len(forget))
    evaluator = _EvaluateAt(steps, timed_eval)
    p_forget = _ForgetAnswerP(lambda m: forget_answer_p(m, trainer.processing_class, forget))
    trainer = rl_trainer(cfg, seed, objective, lr, out, [evaluator, p_forget])
    trainer.train()
    missing = sorted(set(steps) - {int(k) for k in evaluator.logs})
    if missing:
        raise RuntimeError(f"{name} seed {seed}: no evaluation at steps {missing} (ran {trainer.state.global_step}).")
    trace = [{k: h[k] for k in TRACE_KEYS if k in h} for h in trainer.state.log_history if "loss" in h]
    for row in trace:
        row["forget/p_y_mean"] = p_forget.values[row["step"]]
    per_step = cfg.rl_prompts_per_step * cfg.rl_generations
    generated = sum(round(row.get("completions/mean_length", 0.0) * per_step) for row in trace)
    return {"seed": seed, "name": name, "objective": objective, "lr": lr, "eval_logs": evaluator.logs,
            **attacked(trainer.model, trainer.processing_class, cfg, seed, objective),
            "trace": trace, "forget_p_start": p_forget.values[0], "generated_tokens": generated,
            "eval_cpu_s": eval_cpu[0], **clock.seconds()}
