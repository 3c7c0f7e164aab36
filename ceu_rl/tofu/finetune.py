"""Finetune a causal LM on TOFU question/answer pairs (answer tokens only): gives the model to unlearn (full) and
the retain reference (retainXX)."""

from __future__ import annotations

from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from ..unlearn.data import pad_batch
from .formatting import encode_qa, resolve_prompt_format


class QADataset(Dataset):
    def __init__(self, tokenizer, questions, answers, prompt_format, max_length):
        self.items = [encode_qa(tokenizer, q, a, prompt_format, max_length) for q, a in zip(questions, answers)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def finetune(model, tokenizer, dataset, args: TrainingArguments, prompt_format="auto", max_length=256, callbacks=None):
    """Standard answer-only cross entropy on a dataset with question/answer columns. Returns the Trainer."""
    fmt = resolve_prompt_format(prompt_format, tokenizer, getattr(model.config, "_name_or_path", ""))
    data = QADataset(tokenizer, dataset["question"], dataset["answer"], fmt, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                      data_collator=lambda items: pad_batch(items, pad), callbacks=callbacks)
    trainer.train()
    return trainer
