"""The UNDO study's jobs (one process, one torch thread; each finished job kept as JSON for resume): a reference model
(full, retain) measured; a teacher rebuilt at its operating point, saved and measured; a teacher's students at one
alpha, distilled once and measured at each length. Compute is counted in units of N (the model's parameters) x
tokens: 2 per non-padding token forwarded without gradient, 6 with gradient (forward + backward)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from ceu_rl.console import quiet_trainer
from ceu_rl.tofu.attacks import forget_metrics
from ceu_rl.tofu.formatting import encode_qa
from ceu_rl.unlearn import UndoConfig, UndoTrainer

from ..attacks.config import AttackStudyConfig, model_config
from ..attacks.jobs import _StopAfter, ensure_model
from ..attacks.suite import FMT, _relearn, forget_rows
from ..mini_tofu import jobs as mt
from ..mini_tofu.config import rl_objective
from ..mini_tofu.rl_jobs import rl_trainer
from .config import UndoStudyConfig, student_name


def attack_config(cfg: UndoStudyConfig) -> AttackStudyConfig:
    """The attack study's settings with only its relearning attack at `relearn_lr` (all 40, held-out half, seen
    half), over the same mini-TOFU models."""
    return AttackStudyConfig(out=cfg.out, seeds=cfg.seeds, relearn_lrs=(cfg.relearn_lr,), studies=cfg.studies,
                             model_overrides=cfg.model_overrides, quant_bits=(), leak_paraphrased=False,
                             leak_n=max(cfg.leak_after_relearn, 1),
                             leak_after_relearn=(cfg.relearn_lr,) if cfg.leak_after_relearn else ())


class FlopCounter:
    """Forward pre-hooks on whole models: 2 x tokens per forward without gradient (or in eval mode), 6 x tokens with
    gradient in train mode. Tokens: attention_mask.sum() when the mask matches input_ids (training, a generation's
    prefill), else input_ids.numel() (a cached generation step: the new tokens)."""

    def __init__(self, *models):
        self.flops, self.enabled = 0, True
        self.handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in models if m is not None]

    def _hook(self, module, args, kwargs):
        if not self.enabled:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None and mask.shape == ids.shape else ids.numel()
        self.flops += (6 if torch.is_grad_enabled() and module.training else 2) * tokens

    def remove(self):
        for h in self.handles:
            h.remove()


def retain_training_flops(cfg: UndoStudyConfig, tokenizer) -> int:
    """The retain model's training compute: mini-TOFU's finetune, `finetune_epochs` passes with gradient over the
    non-padding tokens of its 200 questions (prompt and answer: the forward/backward covers both)."""
    mcfg = model_config(attack_config(cfg))
    retain, _, general = mt.splits(mcfg)
    tokens = sum(len(encode_qa(tokenizer, q, a, "plain", 256)["input_ids"])
                 for d in (retain, general) for q, a in zip(d["question"], d["answer"]))
    return 6 * mcfg.finetune_epochs * tokens


def measure(model, tokenizer, cfg: UndoStudyConfig, seed: int) -> dict:
    """TOFU evaluation and the relearning attack (experiments/attacks/suite.py's record layout; leak@k only after
    relearning, no quantization), on copies: `model` is left unchanged."""
    acfg = attack_config(cfg)
    mcfg = model_config(acfg)
    rows = forget_rows(mcfg.forget_split)
    model.eval()
    attacks = {"before": forget_metrics(model, tokenizer, rows, **FMT), "leak": {}, "quantize": {}}
    attacks["relearn"] = _relearn(model, tokenizer, rows, acfg, seed)
    return {"eval_log": mt.evaluate(model, tokenizer, mcfg), "attacks": attacks}


def reference_job(cfg: UndoStudyConfig, seed: int, name: str, out: Path) -> dict:
    clock = mt._Clock()
    path = ensure_model(attack_config(cfg), seed, name, out)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    record = {"seed": seed, "name": name, **measure(model, tokenizer, cfg, seed), "unlearn_flops": 0}
    if name == "retain":
        record["retain_training_flops"] = retain_training_flops(cfg, tokenizer)
    return {**record, **clock.seconds()}


def teacher_path(out: Path, seed: int, teacher: str) -> Path:
    return out / "models" / f"seed{seed}" / ("full" if teacher == "full" else f"teacher_{teacher}")


def teacher_job(cfg: UndoStudyConfig, seed: int, teacher: str, lr: float, step: int, out: Path) -> dict:
    """Rebuild `teacher` at its operating point (lr, step) as the attack study does (the committed run, stopped after
    `step`), count its compute, save it and measure it (the plain unlearned model)."""
    clock = mt._Clock()
    acfg = attack_config(cfg)
    ensure_model(acfg, seed, "full", out)
    build = rl_trainer if rl_objective(teacher) else mt.unlearn_trainer
    trainer = build(model_config(acfg, teacher), seed, teacher, lr, out, [_StopAfter(step)],
                    log_name=f"undo_teacher_{teacher}")
    counter = FlopCounter(trainer.model, getattr(trainer, "ref_model", None))
    trainer.train()
    counter.remove()
    if trainer.state.global_step != step:
        raise RuntimeError(f"{teacher} seed {seed}: stopped at step {trainer.state.global_step}, not {step}.")
    model = trainer.accelerator.unwrap_model(trainer.model)
    path = teacher_path(out, seed, teacher)
    model.save_pretrained(path)
    trainer.processing_class.save_pretrained(path)
    return {"seed": seed, "name": teacher, "objective": teacher, "lr": lr, "step": step,
            "unlearn_flops": counter.flops, **measure(model, trainer.processing_class, cfg, seed), **clock.seconds()}


class _SnapshotAt(TrainerCallback):
    """The student's weights (a state_dict copy) and the distillation compute so far at the end of each of
    `epochs`."""

    def __init__(self, epochs, counter: FlopCounter):
        self.epochs, self.counter, self.snapshots = set(epochs), counter, {}

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch)
        if epoch in self.epochs:
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.snapshots[epoch] = (weights, self.counter.flops, state.global_step)


def students_job(cfg: UndoStudyConfig, seed: int, teacher: str, alpha: float, out: Path) -> dict:
    """Noise a copy of `teacher` with `alpha`, distil the teacher into it for max(epochs) epochs, and measure the
    student after each of `epochs`. {"students": {name: record}}."""
    clock = mt._Clock()
    mcfg = model_config(attack_config(cfg))
    retain, _, general = mt.splits(mcfg)
    from datasets import concatenate_datasets

    data = concatenate_datasets([d.select_columns(["question", "answer"]) for d in (retain, general)])
    path = teacher_path(out, seed, teacher)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    name = f"undo_{teacher}_a{alpha:g}"
    args = UndoConfig(output_dir=str(out / "runs" / f"seed{seed}" / name), use_cpu=True,
                      num_train_epochs=max(cfg.epochs), learning_rate=cfg.distill_lr,
                      per_device_train_batch_size=cfg.distill_batch_size, lr_scheduler_type="constant", warmup_steps=0,
                      weight_decay=0.0, save_strategy="no", report_to="none", logging_steps=1, seed=seed,
                      disable_tqdm=True, noise_alpha=alpha, noise_seed=seed + cfg.noise_seed_offset,
                      prompt_format="plain", max_length=256)
    trainer = UndoTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    quiet_trainer(trainer, out / "logs" / f"seed{seed}" / f"{name}.jsonl")
    counter = FlopCounter(trainer.model, trainer.teacher_model)
    snap = _SnapshotAt(cfg.epochs, counter)
    trainer.add_callback(snap)
    trainer.train()
    counter.remove()
    missing = sorted(set(cfg.epochs) - set(snap.snapshots))
    if missing:
        raise RuntimeError(f"{name} seed {seed}: no snapshot at epochs {missing}.")
    trace = [{k: h[k] for k in ("step", "loss", "grad_norm") if k in h} for h in trainer.state.log_history
             if "loss" in h]
    students = {}
    student = AutoModelForCausalLM.from_pretrained(path)
    for epochs, (weights, flops, step) in sorted(snap.snapshots.items()):
        student.load_state_dict(weights)
        students[student_name(teacher, alpha, epochs)] = {
            "seed": seed, "teacher": teacher, "alpha": alpha, "epochs": epochs, "steps": step,
            "distill_flops": flops, **measure(student, tokenizer, cfg, seed)}
    return {"seed": seed, "teacher": teacher, "alpha": alpha, "students": students, "trace": trace,
            "noised_fraction": trainer.noised_fraction, **clock.seconds()}


def save(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


