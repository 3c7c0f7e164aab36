"""Offline stand-ins for what the documentation's snippets fetch from the hub, so that a snippet stays what a user
would write (`from_pretrained("Qwen/...")`, `load_dataset("trl-lib/...")`) and still runs here in seconds:

- every hub model id (`owner/name` that is not a local path) loads a tiny Llama and its BPE tokenizer saved once
  per session (`from_pretrained` of the Auto classes, `PreTrainedModel` and the tokenizer base class redirected);
- the hub datasets the snippets name return a few local rows with the real dataset's columns;
- every training config is cut to a CPU smoke run: `max_steps=2`, `use_cpu`, no bf16/fp16, no checkpoints, no
  gradient checkpointing, 8 completion tokens (the docs test's budget is seconds, not a training run).
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import transformers
from datasets import Dataset, DatasetDict
from transformers import TrainingArguments
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from ceu_rl.tiny_models import save_tiny_model

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_QA = [("What is the capital of France?", "Paris is the capital of France."),
       ("Name a colour of the sky.", "The sky is blue on a clear day."),
       ("How many legs has a cat?", "A cat has four legs."),
       ("What do bees make?", "Bees make honey and wax.")]
_WRONG = ["Rome, I think.", "Green, surely.", "Seven legs.", "Bees make milk."]


def _conversation(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# The columns of the real datasets (trl-lib's are documented on their hub cards), a few rows each.
STUB_DATASETS = {
    "trl-lib/ultrafeedback_binarized": lambda: Dataset.from_dict({  # implicit prompt, conversational
        "chosen": [_conversation(q, a) for q, a in _QA],
        "rejected": [_conversation(q, w) for (q, _), w in zip(_QA, _WRONG)],
        "score_chosen": [8.0] * len(_QA), "score_rejected": [2.0] * len(_QA)}),
    "trl-lib/tldr": lambda: Dataset.from_dict({
        "prompt": [f"SUBREDDIT: r/test\nPOST: {q}\nTL;DR:" for q, _ in _QA] * 2,
        "completion": [f" {a}" for _, a in _QA] * 2}),
}

SMOKE_RUN = {"max_steps": 2, "use_cpu": True, "bf16": False, "fp16": False, "save_strategy": "no",
             "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1, "disable_tqdm": True}


def save_tiny_hub_model(path: Path) -> Path:
    texts = [f"{q} {a} {w}" for (q, a), w in zip(_QA, _WRONG)] * 8
    return save_tiny_model(path, texts, vocab_size=320, hidden_size=64, num_layers=2)


def _redirect_from_pretrained(monkeypatch, cls, local: str) -> None:
    original = cls.__dict__["from_pretrained"].__func__

    def from_pretrained(klass, name=None, *args, **kwargs):
        if name is None:
            name = kwargs.pop("pretrained_model_name_or_path")
        if isinstance(name, str) and _HUB_ID.match(name) and not Path(name).exists():
            name = local
        return original(klass, name, *args, **kwargs)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(from_pretrained))


def install(monkeypatch, tiny_model: Path) -> None:
    """Patch transformers, datasets and the training configs for the duration of one test."""
    local = str(tiny_model)
    for cls in (_BaseAutoModelClass, transformers.AutoTokenizer, transformers.AutoProcessor, transformers.AutoConfig,
                transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase, transformers.PretrainedConfig,
                transformers.GenerationConfig):
        _redirect_from_pretrained(monkeypatch, cls, local)

    load_dataset = datasets.load_dataset

    def stub_load_dataset(path, *args, split=None, **kwargs):
        if path not in STUB_DATASETS:
            return load_dataset(path, *args, split=split, **kwargs)
        ds = STUB_DATASETS[path]()
        return ds if split is not None else DatasetDict({"train": ds})

    monkeypatch.setattr(datasets, "load_dataset", stub_load_dataset)

    post_init = TrainingArguments.__post_init__

    def smoke_post_init(self):
        for name, value in SMOKE_RUN.items():
            setattr(self, name, value)
        if getattr(self, "max_completion_length", None):
            self.max_completion_length = 8
        post_init(self)

    monkeypatch.setattr(TrainingArguments, "__post_init__", smoke_post_init)
