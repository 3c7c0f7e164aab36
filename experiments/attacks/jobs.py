"""The attack study's jobs, each in a worker process with one torch thread: a reference model (the seed's full or
retain model, finetuned as in mini-TOFU) or an unlearned model rebuilt at its operating point (the committed study's
run, stopped at the picked step), evaluated (TOFU metrics with open-unlearning's privacy metrics) and attacked."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from ceu_rl.unlearn.sam import WeightAveragingCallback

from ..mini_tofu import jobs as mt
from ..mini_tofu.config import rl_objective
from ..mini_tofu.rl_jobs import rl_trainer
from .config import AttackStudyConfig, base_objective, model_config
from .suite import attack_suite


def ensure_model(cfg: AttackStudyConfig, seed: int, name: str, out: Path) -> Path:
    """The seed's finetuned full or retain model, finetuned (as mini-TOFU's finetune job) if not yet in `out`."""
    path = out / "models" / f"seed{seed}" / name
    if not (path / "config.json").is_file():
        mt.finetune_job(model_config(cfg), seed, name, out)
    return path


class _StopAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def _attacked(model, tokenizer, cfg: AttackStudyConfig, seed: int) -> dict:
    return {"eval_log": mt.evaluate(model, tokenizer, model_config(cfg)),
            "attacks": attack_suite(model, tokenizer, cfg, seed, model_config(cfg).forget_split)}


def reference_job(cfg: AttackStudyConfig, seed: int, name: str, out: Path) -> dict:
    clock = mt._Clock()
    path = ensure_model(cfg, seed, name, out)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    return {"seed": seed, "name": name, **_attacked(model, tokenizer, cfg, seed), **clock.seconds()}


def point_job(cfg: AttackStudyConfig, seed: int, objective: str, lr: float, step: int, out: Path) -> dict:
    """Rebuild `objective` at (`lr`, `step`) of the committed study (the same run, stopped after `step`), then
    evaluate and attack it."""
    clock = mt._Clock()
    ensure_model(cfg, seed, "full", out)
    base = base_objective(objective)
    build = rl_trainer if rl_objective(base) else mt.unlearn_trainer
    trainer = build(model_config(cfg, objective), seed, base, lr, out, [_StopAfter(step)],
                    log_name=f"attacks_{objective}")
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, WeightAveragingCallback):  # "+wa": the window ends at the operating point
            callback.horizon = step
    trainer.train()
    if trainer.state.global_step != step:
        raise RuntimeError(f"{objective} seed {seed}: stopped at step {trainer.state.global_step}, not {step}.")
    model = trainer.accelerator.unwrap_model(trainer.model)  # the attacks copy it with ceu_rl's copy_model
    return {"seed": seed, "name": objective, "objective": base, "lr": lr, "step": step,
            **_attacked(model, trainer.processing_class, cfg, seed), **clock.seconds()}
