"""A TrainerCallback that records gradient-stability traces with any of our trainers, or TRL's stock ones."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback

# Keys under which our trainers log mean p_y on the targeted tokens (forget / rejected / negative-advantage).
P_KEYS = ("forget/p_y_mean", "ceu/p_rejected_mean", "ceu/p_negative_mean")


class TokenProbabilityProbe:
    """p(label) on fixed targeted tokens: prompts + completions, the completion tokens scored. Call with a model."""

    def __init__(self, tokenizer, prompts, completions):
        rows = []
        for prompt, completion in zip(prompts, completions):
            p_ids = tokenizer(prompt)["input_ids"]
            c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            rows.append((p_ids + c_ids, [-100] * len(p_ids) + c_ids))
        width = max(len(r[0]) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.input_ids = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows])
        self.labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
        self.attention_mask = (torch.arange(width)[None] < torch.tensor([len(r[0]) for r in rows])[:, None]).long()

    @torch.no_grad()
    def __call__(self, model) -> torch.Tensor:
        device = next(model.parameters()).device
        logits = model(input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device)).logits
        labels = self.labels[:, 1:].to(device)
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return logp.exp()[labels != -100].cpu()


class GradientTraceCallback(TrainerCallback):
    """Per logged step: `grad_norm` (whole-model L2 norm of the gradient the optimizer applies, computed here, so
    after any clipping), `logged_grad_norm` (the Trainer's, before clipping), `loss`, and `p_y_mean` on the targeted
    tokens: from the trainer's own log (`P_KEYS`) or, for trainers that log none (TRL's stock ones), from `probe`.
    With a probe, the distribution of p_y on its tokens is kept before and after training (`p_before`, `p_after`).
    """

    def __init__(self, probe: TokenProbabilityProbe | None = None):
        self.probe = probe
        self.records: list[dict] = []
        self.p_before: list[float] | None = None
        self.p_after: list[float] | None = None
        self._grad_norm = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.probe is not None:
            self.p_before = self.probe(model).tolist()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        squares = [p.grad.detach().float().pow(2).sum() for p in model.parameters() if p.grad is not None]
        self._grad_norm = float(torch.stack(squares).sum().sqrt()) if squares else 0.0

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        record = {"step": state.global_step, "loss": logs["loss"], "grad_norm": self._grad_norm,
                  "logged_grad_norm": logs.get("grad_norm")}
        for key in P_KEYS:
            if key in logs:
                record["p_y_mean"] = logs[key]
        if "p_y_mean" not in record and self.probe is not None:
            record["p_y_mean"] = float(self.probe(model).mean())
        self.records.append(record)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.probe is not None:
            self.p_after = self.probe(model).tolist()

    def to_dict(self) -> dict:
        return {"records": self.records, "p_before": self.p_before, "p_after": self.p_after}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
