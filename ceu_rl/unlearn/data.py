"""Forget/retain pairing and padding for UnlearnTrainer (as open-unlearning's ForgetRetainDataset: each forget item
is paired with a random retain item; here the pairing is seeded per index, so it does not depend on the process
count)."""

from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset

from ..tofu.formatting import IGNORE_INDEX, encode_qa


def _encode_all(tokenizer, dataset, prompt_format, max_length, answer_key="answer"):
    for key in ("question", answer_key):
        if key not in dataset.column_names:
            raise ValueError(f"The dataset has no {key!r} column (columns: {dataset.column_names}).")
    return [encode_qa(tokenizer, q, a, prompt_format, max_length)
            for q, a in zip(dataset["question"], dataset[answer_key])]


class ForgetRetainDataset(Dataset):
    """Items {"forget": ..., "retain": ..., "idk": ...}; length = the forget set's."""

    def __init__(self, tokenizer, forget, retain=None, prompt_format="plain", max_length=256, idk_answers=None,
                 seed=0):
        if forget is None or len(forget) == 0:
            raise ValueError("The forget dataset is empty: nothing to unlearn.")
        self.forget = _encode_all(tokenizer, forget, prompt_format, max_length)
        self.retain = _encode_all(tokenizer, retain, prompt_format, max_length) if retain is not None else None
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
