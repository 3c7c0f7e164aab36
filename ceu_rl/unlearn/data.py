"""Forget/retain pairing and padding for UnlearnTrainer (as open-unlearning's ForgetRetainDataset: each forget item
is paired with a random retain item; here the pairing is seeded per index, so it does not depend on the process
count)."""

from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset

from ..tofu.formatting import IGNORE_INDEX, encode_qa


def _encode_all(tokenizer, dataset, prompt_format, max_length, name, answer_key="answer"):
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty: pass at least one question/answer row.")
    for key in ("question", answer_key):
        if key not in dataset.column_names:
            raise ValueError(f"The {name} dataset has no {key!r} column (columns: {dataset.column_names}): rename "
                             f"yours, e.g. dataset.rename_column('prompt', 'question').")
    for column in ("question", answer_key):
        for i, value in enumerate(dataset[column]):
            if not isinstance(value, str):
                raise ValueError(f"The {name} dataset's {column!r} at row {i} is a {type(value).__name__}, not a "
                                 "string: "
                                 "UnlearnTrainer takes plain question/answer text (prompt_format='chat' applies the "
                                 "tokenizer's chat template itself), not conversational message lists.")
            if column == "question" and not value.strip():  # an empty answer: encode_qa's error
                raise ValueError(f"The {name} dataset has an empty {column!r} at row {i}: drop or fix that row.")
    if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format='chat' needs a tokenizer with a chat template, and this one has none: set "
                         "tokenizer.chat_template, or use prompt_format='plain' (or 'auto', which picks it).")
    return [encode_qa(tokenizer, q, a, prompt_format, max_length)
            for q, a in zip(dataset["question"], dataset[answer_key])]


class ForgetRetainDataset(Dataset):
    """Items {"forget": ..., "retain": ..., "idk": ...}; length = the forget set's."""

    def __init__(self, tokenizer, forget, retain=None, prompt_format="plain", max_length=256, idk_answers=None,
                 seed=0):
        self.forget = _encode_all(tokenizer, forget, prompt_format, max_length, "forget")
        self.retain = None if retain is None else _encode_all(tokenizer, retain, prompt_format, max_length, "retain")
        self.idk = None
        if idk_answers:
            rng = random.Random(seed)
            self.idk = [encode_qa(tokenizer, q, rng.choice(idk_answers), prompt_format, max_length)
                        for q in forget["question"]]
        self.seed = seed

    def __len__(self):
        return len(self.forget)

    def __getitem__(self, i):
        item = {"forget": self.forget[i]}
        if self.retain is not None:
            # a retain partner fixed by (seed, index): the same pairs whatever the number of processes
            item["retain"] = self.retain[random.Random(self.seed * 1_000_003 + i).randrange(len(self.retain))]
        if self.idk is not None:
            item["idk"] = self.idk[i]
        return item


def pad_batch(items, pad_token_id):
    width = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    for row, x in enumerate(items):
        n = len(x["input_ids"])
        ids[row, :n] = torch.tensor(x["input_ids"])
        labels[row, :n] = torch.tensor(x["labels"])
        attn[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attn}


class ForgetRetainCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items):
        return {key: pad_batch([it[key] for it in items], self.pad_token_id) for key in items[0]}
