"""The jobs of TOFU on a real model: evaluate the pretrained model; finetune it into the full and the retain model
(once: the pretrained model is fixed); unlearn the full model with one objective, learning rate and seed. Each job
returns a record in mini-TOFU's format (experiments/mini_tofu/jobs.py), so its report and plots apply unchanged."""

from __future__ import annotations

import contextlib
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from ceu_rl.console import quiet_trainer
from ceu_rl.tofu.data import load_idk, load_split
from ceu_rl.tofu.evaluate import evaluate_tofu
from ceu_rl.tofu.finetune import finetune
from ceu_rl.unlearn import UnlearnConfig, UnlearnTrainer

from ..mini_tofu.jobs import AUTHOR_SIZE, _Clock, _EvaluateAt, training_args, unlearn_steps
from .config import RealTofuConfig, base_model_path


def splits(cfg: RealTofuConfig):
    """(retain authors, forget split). Unlike mini-TOFU, no real-author / world-facts QA is trained: the pretrained
    model brings that knowledge, and model utility measures what finetuning and unlearning leave of it."""
    return load_split("full").select(range(cfg.num_retain_authors * AUTHOR_SIZE)), load_split(cfg.forget_split)


def evaluate(model, tokenizer, cfg: RealTofuConfig) -> dict:
    subsets = {"retain": range(cfg.eval_retain), "ra": range(cfg.eval_general), "wf": range(cfg.eval_general)}
    return evaluate_tofu(model, tokenizer, cfg.forget_split, prompt_format=cfg.prompt_format,
                         max_new_tokens=cfg.max_new_tokens, batch_size=20, max_length=cfg.max_length, subsets=subsets,
                         gradnorm=cfg.eval_gradnorm)


def relearn_attack(model, tokenizer, cfg: RealTofuConfig, seed: int) -> dict:
    """Forget metrics after relearning on all forget questions (OpenUnlearning's R protocol), on a copy of `model`."""
    from ceu_rl.tofu.attacks import forget_metrics, relearn

    rows = load_split(f"{cfg.forget_split}_perturbed").to_dict()
    clock = _Clock()
    attacked = relearn(model, tokenizer, rows, cfg.relearn_lr, epochs=1, batch_size=8, gradient_accumulation_steps=1,
                       prompt_format=cfg.prompt_format, seed=seed, max_length=cfg.max_length)
    after = forget_metrics(attacked, tokenizer, rows, prompt_format=cfg.prompt_format,
                           max_new_tokens=cfg.max_new_tokens, batch_size=20, max_length=cfg.max_length)
    return {"lr": cfg.relearn_lr, "after": after, **clock.seconds()}


def relearn_job(cfg: RealTofuConfig, seed, name: str, out: Path) -> dict:
    """The relearning attack on the saved full or retain model ("relearn_full", "relearn_retain")."""
    clock = _Clock()
    path = model_dir(out, name.removeprefix("relearn_"))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    return {"seed": seed, "name": name, "relearn": relearn_attack(model, tokenizer, cfg, 0), **clock.seconds()}


def model_dir(out: Path, name: str) -> Path:
    return Path(out) / "models" / name


def base_job(cfg: RealTofuConfig, seed: int, out: Path) -> dict:
    """The pretrained model before any TOFU finetuning: what finetuning costs in utility is measured against it."""
    clock = _Clock()
    path = base_model_path(cfg)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    return {"seed": seed, "name": "base", "eval_log": evaluate(model, tokenizer, cfg), "path": path, **clock.seconds()}


def finetune_job(cfg: RealTofuConfig, seed: int, name: str, out: Path) -> dict:
    """Finetune the pretrained model into "full" (retain authors + forget authors) or "retain" (retain authors),
    answer-only NLL in the chat format, with `finetune_seed`; save and evaluate it."""
    import json

    from datasets import concatenate_datasets

    done = Path(out) / "jobs" / f"seed{seed}" / f"{name}.json"
    if done.is_file():  # finished meanwhile by another process on the same folder (the runner checked at submission)
        return {k: v for k, v in json.loads(done.read_text()).items() if k != "settings"}
    clock = _Clock()
    retain, forget = splits(cfg)
    data = concatenate_datasets([retain, forget]) if name == "full" else retain
    path = base_model_path(cfg)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args = training_args(cfg, Path(out) / "runs" / name, cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_seed)
    args["per_device_train_batch_size"] = cfg.finetune_batch_size
    with open(logs / f"finetune_{name}.log", "w") as log, contextlib.redirect_stdout(log):
        finetune(model, tokenizer, data, TrainingArguments(**args), prompt_format=cfg.prompt_format,
                 max_length=cfg.max_length)
    target = model_dir(out, name)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    train = clock.seconds()
    return {"seed": seed, "name": name, "eval_log": evaluate(model, tokenizer, cfg), "train": train, "qa": len(data),
            **clock.seconds()}


def unlearn_trainer(cfg: RealTofuConfig, seed: int, objective: str, lr: float, out: Path, callbacks=(),
                    log_name: str | None = None, max_steps: int = -1):
    retain, forget = splits(cfg)
    full = model_dir(out, "full")
    tokenizer, model = AutoTokenizer.from_pretrained(full), AutoModelForCausalLM.from_pretrained(full)
    name = f"{objective}_lr{lr:g}"
    args = UnlearnConfig(**training_args(cfg, Path(out) / "runs" / f"seed{seed}" / name, cfg.unlearn_epochs, lr, seed),
                         objective=objective, prompt_format=cfg.prompt_format, max_length=cfg.max_length,
                         max_steps=max_steps, **cfg.objective_overrides.get(objective, {}))
    trainer = UnlearnTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer, idk_answers=load_idk(), callbacks=list(callbacks))
    quiet_trainer(trainer, Path(out) / "logs" / f"seed{seed}" / f"{log_name or name}.jsonl")
    return trainer


def unlearn_job(cfg: RealTofuConfig, seed: int, objective: str, lr: float, out: Path) -> dict:
    """Unlearn the full model with `objective` at `lr` (seed: data order, retain pairing, IdK answers); evaluated at
    `unlearn_steps`; the per-step trace (loss, gradient norm, mean p_y on forget tokens)."""
    clock = _Clock()
    steps = unlearn_steps(cfg, len(load_split(cfg.forget_split)))
    evaluator = _EvaluateAt(steps, lambda m: evaluate(m, trainer.processing_class, cfg))
    trainer = unlearn_trainer(cfg, seed, objective, lr, out, [evaluator])
    trainer.train()
    name = f"{objective}_lr{lr:g}"
    missing = sorted(set(steps) - {int(k) for k in evaluator.logs})
    if missing:
        raise RuntimeError(f"{name} seed {seed}: no evaluation at steps {missing} (ran {trainer.state.global_step}).")
    trace = [{k: h[k] for k in ("step", "loss", "grad_norm", "forget/p_y_mean") if k in h}
             for h in trainer.state.log_history if "loss" in h]
    if objective in cfg.attacked:  # kept: the teachers of the real-model UNDO run (experiments/real_tofu/undo.py)
        trainer.save_model(str(model_dir(out, f"seed{seed}/{name}")))
        trainer.processing_class.save_pretrained(model_dir(out, f"seed{seed}/{name}"))
    attack = {}
    if objective in cfg.attacked and lr == max(cfg.lrs_of(objective)):
        attack = {"relearn": relearn_attack(trainer.model, trainer.processing_class, cfg, seed)}
    return {"seed": seed, "name": name, "objective": objective, "lr": lr, "eval_logs": evaluator.logs,
            "trace": trace, **attack, **clock.seconds()}
