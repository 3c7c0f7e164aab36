"""The mini-TOFU jobs, each run in a worker process with one torch thread: finetune (full or retain model) and
evaluate it; unlearn the full model with one objective and learning rate, evaluating it at several steps.

Jobs return raw TOFU eval logs (open-unlearning's layout); forget quality needs the retain model's log of the same
seed and is computed by the runner. Every job reports its wall and CPU seconds (CPU time is what a shared machine
does not inflate much: the estimate of the unshared runtime).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainingArguments

from ceu_rl.console import quiet_trainer
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu.data import load_idk, load_split
from ceu_rl.tofu.evaluate import evaluate_tofu
from ceu_rl.tofu.finetune import finetune
from ceu_rl.tofu.formatting import record_max_new_tokens
from ceu_rl.unlearn import UnlearnConfig, UnlearnTrainer

from .config import MiniTofuConfig

AUTHOR_SIZE = 20  # TOFU: 200 authors x 20 questions, in order


def splits(cfg: MiniTofuConfig):
    """(retain, forget, general): the retain authors, the forget split, and the real-authors and world-facts
    questions that are evaluated, as plain QA: the tiny model has no pretraining, so the full and the retain model
    both learn them, as a pretrained model would already know them (so that model utility means something)."""
    from datasets import Dataset

    retain = load_split("full").select(range(cfg.num_retain_authors * AUTHOR_SIZE))
    forget = load_split(cfg.forget_split)
    rows = {"question": [], "answer": []}
    for split in ("real_authors_perturbed", "world_facts_perturbed"):
        d = load_split(split).select(range(cfg.eval_questions))
        rows["question"] += list(d["question"])
        rows["answer"] += list(d["answer"])
    return retain, forget, Dataset.from_dict(rows)


def corpus(cfg: MiniTofuConfig) -> list[str]:
    """Every text the models see or are scored on: the tokenizer is trained on it (the same for every seed)."""
    retain, forget, _ = splits(cfg)
    texts = [*retain["question"], *retain["answer"], *forget["question"], *forget["answer"]]
    for split in (f"{cfg.forget_split}_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        d = load_split(split)
        texts += [*d["question"], *d["answer"], *(p for ps in d["perturbed_answer"] for p in ps)]
        if "paraphrased_answer" in d.column_names:
            texts += list(d["paraphrased_answer"])
    return texts + ["Question: Answer:"] + load_idk()


def build_init(cfg: MiniTofuConfig, seed: int, path: Path) -> Path:
    """The tokenizer and the randomly initialised tiny Llama of one seed."""
    if (path / "config.json").is_file():
        return path
    return save_tiny_model(path, corpus(cfg), vocab_size=cfg.vocab_size, seed=seed, hidden_size=cfg.hidden_size,
                           num_layers=cfg.num_layers, num_heads=4)


def training_args(cfg: MiniTofuConfig, out: Path, epochs: int, lr: float, seed: int) -> dict:
    return dict(output_dir=str(out), use_cpu=True, num_train_epochs=epochs, learning_rate=lr,
                per_device_train_batch_size=cfg.batch_size, save_strategy="no", report_to="none", logging_steps=1,
                seed=seed, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, disable_tqdm=True)


def evaluate(model, tokenizer, cfg: MiniTofuConfig) -> dict:
    n = cfg.eval_questions
    subsets = {"retain": range(n), "ra": range(n), "wf": range(n)}
    return evaluate_tofu(model, tokenizer, cfg.forget_split, prompt_format="plain", max_new_tokens=cfg.max_new_tokens,
                         batch_size=32, max_length=256, subsets=subsets, gradnorm=cfg.eval_gradnorm)


def attacked(model, tokenizer, cfg: MiniTofuConfig, seed: int, name: str) -> dict:
    """{"attacks": the cheap attack suite (experiments/attacks, main_job_preset) on the final model} when `name` is in
    `cfg.attacks` (the main job's), else {}."""
    if name not in cfg.attacks:
        return {}
    from ..attacks.config import main_job_preset
    from ..attacks.suite import attack_suite

    clock = _Clock()
    # leak@k sampled as long as the study generates (and as long as its saved models record: the CLI's default)
    result = attack_suite(model, tokenizer, main_job_preset(leak_max_new_tokens=cfg.max_new_tokens), seed,
                          cfg.forget_split)
    return {"attacks": result, "attack_cpu_s": clock.seconds()["cpu_s"]}


def unlearn_steps(cfg: MiniTofuConfig, forget_size: int) -> list[int]:
    """The steps at which an unlearning run is evaluated: `eval_points` evenly spaced, the last the final step."""
    total = cfg.unlearn_epochs * -(-forget_size // cfg.batch_size)
    return sorted({max(1, round(total * k / cfg.eval_points)) for k in range(1, cfg.eval_points + 1)})


class _Clock:
    def __init__(self):
        self.wall, self.cpu = time.time(), time.process_time()

    def seconds(self) -> dict:
        return {"wall_s": time.time() - self.wall, "cpu_s": time.process_time() - self.cpu}


def finetune_job(cfg: MiniTofuConfig, seed: int, name: str, out: Path) -> dict:
    """Finetune the seed's initial model into "full" (retain + general + forget) or "retain" (without the forget
    authors), save it and evaluate it."""
    from datasets import concatenate_datasets

    clock = _Clock()
    retain, forget, general = splits(cfg)
    data = concatenate_datasets([retain, general, forget] if name == "full" else [retain, general])
    init = build_init(cfg, seed, out / "models" / f"seed{seed}" / "init")
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = AutoModelForCausalLM.from_pretrained(init)
    logs = out / "logs" / f"seed{seed}"
    logs.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(**training_args(cfg, out / "runs" / f"seed{seed}" / name, cfg.finetune_epochs,
                                             cfg.finetune_lr, seed))
    # the Trainer prints every step's log dict: into the log file
    with open(logs / f"finetune_{name}.log", "w") as log, contextlib.redirect_stdout(log):
        finetune(model, tokenizer, data, args, prompt_format="plain")  # recorded in the config: plain
    # the study's generation length, recorded beside the format: the CLIs (evaluate, attacks) pointed at the saved
    # model measure it as the study does
    record_max_new_tokens(model, cfg.max_new_tokens)
    path = out / "models" / f"seed{seed}" / name
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    train = clock.seconds()
    log = evaluate(model, tokenizer, cfg)
    return {"seed": seed, "name": name, "eval_log": log, "train": train,
            **attacked(model, tokenizer, cfg, seed, name), **clock.seconds(), "qa": len(data)}


class _EvaluateAt(TrainerCallback):
    """Evaluates the model being unlearned at the given steps (after that step's update)."""

    def __init__(self, steps, fn):
        self.steps, self.fn, self.logs = set(steps), fn, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self.logs[str(state.global_step)] = self.fn(model)  # str keys: the same after a JSON round trip
            model.train()


def load_full_model(out: Path, seed: int):
    """The seed's finetuned full model and its tokenizer: where every unlearning job, offline or RL, starts."""
    full = out / "models" / f"seed{seed}" / "full"
    return AutoTokenizer.from_pretrained(full), AutoModelForCausalLM.from_pretrained(full)


def unlearn_trainer(cfg: MiniTofuConfig, seed: int, objective: str, lr: float, out: Path, callbacks=(),
                    log_name: str | None = None):
    """The UnlearnTrainer of one offline run (the seed's full model, `objective` at `lr`), quiet, not yet trained:
    `unlearn_job` evaluates it along the way; the attack study stops it at an operating point."""
    retain, forget, _ = splits(cfg)
    tokenizer, model = load_full_model(out, seed)
    name = f"{objective}_lr{lr:g}"
    args = UnlearnConfig(**training_args(cfg, out / "runs" / f"seed{seed}" / name, cfg.unlearn_epochs, lr, seed),
                         objective=objective, prompt_format="plain", max_length=256,
                         **cfg.objective_overrides.get(objective, {}))
    trainer = UnlearnTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer, idk_answers=load_idk(), callbacks=list(callbacks))
    quiet_trainer(trainer, out / "logs" / f"seed{seed}" / f"{log_name or name}.jsonl")
    return trainer


def unlearn_job(cfg: MiniTofuConfig, seed: int, objective: str, lr: float, out: Path) -> dict:
    """Unlearn the seed's full model with `objective` at `lr`; the eval logs at `unlearn_steps` and the per-step
    trace (loss, gradient norm, mean p_y on forget tokens)."""
    clock = _Clock()
    name = f"{objective}_lr{lr:g}"
    steps = unlearn_steps(cfg, len(load_split(cfg.forget_split)))
    evaluator = _EvaluateAt(steps, lambda m: evaluate(m, trainer.processing_class, cfg))
    trainer = unlearn_trainer(cfg, seed, objective, lr, out, [evaluator])
    trainer.train()
    missing = sorted(set(steps) - {int(k) for k in evaluator.logs})
    if missing:
        raise RuntimeError(f"{name} seed {seed}: no evaluation at steps {missing} (ran {trainer.state.global_step}).")
    trace = [{k: h[k] for k in ("step", "loss", "grad_norm", "forget/p_y_mean") if k in h}
             for h in trainer.state.log_history if "loss" in h]
    return {"seed": seed, "name": name, "objective": objective, "lr": lr, "eval_logs": evaluator.logs,
            **attacked(trainer.model, trainer.processing_class, cfg, seed, objective),
            "trace": trace, **clock.seconds()}


def quiet_progress_bars() -> None:
    """No per-call bars from datasets and transformers (model saving/loading, dataset maps): one line per job."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def init_worker() -> None:
    torch.set_num_threads(1)
    quiet_progress_bars()
