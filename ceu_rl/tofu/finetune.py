"""Finetune a causal LM on TOFU question/answer pairs (answer tokens only): gives the model to unlearn (full) and
the retain reference (retainXX)."""

from __future__ import annotations

from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from ..unlearn.data import pad_batch
from .formatting import encode_qa, record_prompt_format, resolve_prompt_format


class QADataset(Dataset):
    def __init__(self, tokenizer, questions, answers, prompt_format, max_length):
        self.items = [encode_qa(tokenizer, q, a, prompt_format, max_length) for q, a in zip(questions, answers)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def finetune(model, tokenizer, dataset, args: TrainingArguments, prompt_format="auto", max_length=256, callbacks=None,
             log_path=None):
    """Standard answer-only cross entropy on a dataset with question/answer columns. Returns the Trainer.
    `log_path`: per-step logs to that JSONL file instead of the terminal (`ceu_rl.console.quiet_trainer`).
    The prompt format is recorded in `model.config` (`record_prompt_format`): the saved model carries it, and
    "auto" finds it there."""
    fmt = resolve_prompt_format(prompt_format, tokenizer, model=model)
    record_prompt_format(model, fmt)
    data = QADataset(tokenizer, dataset["question"], dataset["answer"], fmt, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                      data_collator=lambda items: pad_batch(items, pad), callbacks=callbacks)
    if log_path is not None:
        from ..console import quiet_trainer

        quiet_trainer(trainer, log_path, progress=not args.disable_tqdm)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    return trainer


def warm_started_tiny_model(out, texts, qa, epochs: int, seed: int = 0, prompt_format: str = "plain",
                            max_length: int = 256, batch_size: int = 16, learning_rate: float = 3e-3,
                            **model_kwargs) -> str:
    """A tiny local Llama (tokenizer trained on `texts`) supervised on `qa` (question/answer) for `epochs`, saved
    under out/"warm" and reused when already there: the starting point of the offline recipes and traces."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..tiny_models import save_tiny_model

    out = Path(out)
    path = out / "warm"
    if (path / "config.json").is_file():
        return str(path)
    base = save_tiny_model(out / "init", texts, seed=seed, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    args = TrainingArguments(output_dir=str(out / "warm_run"), use_cpu=True, num_train_epochs=epochs,
                             learning_rate=learning_rate, per_device_train_batch_size=batch_size, save_strategy="no",
                             report_to="none", disable_tqdm=True, logging_steps=1000, seed=seed)
    finetune(model, tokenizer, qa, args, prompt_format=prompt_format, max_length=max_length,
             log_path=out / "warm_run" / "log.jsonl")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
