"""Relearning attack: fine-tune an unlearned model a little on forget data and measure how much comes back.

References: Hu, Fu, Wu, Smith, "Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign
Relearning" (arXiv 2406.13356: a little fine-tuning on part of the forget set, or on loosely related text, brings
"unlearned" knowledge back on WMDP, TOFU and WHP); OpenUnlearning's meta-evaluation (Dorna et al., arXiv 2506.12618,
robustness; Eq. 2 as reproductions quote it, the paper's text could not be read here; the formula issue 24 states):
fine-tune the unlearned model and the retain model on the forget set (forget10, 1 epoch, lr 2e-5, answer-only NLL) and
compare the two changes of a metric m (higher = more knowledge):

    R = min( (m_retain_after - m_retain_before) / (m_unlearned_after - m_unlearned_before), 1 )

R = 1: the unlearned model regains no more than a model that never saw the forget set learns from the same attack;
R -> 0: the attack restores far more than it teaches, i.e. the knowledge was hidden, not removed.

Sign handling and edge cases (where the literal ratio is undefined or flips sign):
  * metrics where higher = less knowledge (the forget truth-ratio score, mean min(R, 1/R)) are negated first
    (`KNOWLEDGE_DIRECTIONS`);
  * delta_unlearned <= 0 (the attack moved the unlearned model's metric down or not at all: nothing came back): R = 1,
    whatever the retain model did (the literal ratio is 0/0, +-inf, or negative for an unlearned model that lost
    knowledge);
  * delta_unlearned > 0 > delta_retain: R < 0, kept as the formula gives it (the retain model lost knowledge while
    the unlearned one gained: the least robust case; clip at 0 yourself to aggregate as OpenUnlearning's HM).

The held-out form (`heldout_split`): relearn on a seeded half of the forget questions, measure on the other half; the
fully trained and the retain model under the same attack are the reference points. Their lr 2e-5 is for a pretrained
1B model; the defaults here are theirs (batch 8 x 4 accumulation steps, linear schedule from lr, no warm-up, no
weight decay, as OpenUnlearning's finetune trainer), each a keyword.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..evaluate import evaluate_split
from ..formatting import resolve_prompt_format
from .quantize import copy_model

# +1: higher = more knowledge of the forget set; -1: higher = less (negated before the deltas are taken)
KNOWLEDGE_DIRECTIONS = {"forget_Q_A_Prob": 1, "forget_Q_A_PARA_Prob": 1, "forget_Q_A_ROUGE": 1,
                        "forget_truth_ratio": -1}


def heldout_split(n_questions: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(relearn indices, held-out indices): a seeded random half (floor) and the rest, each sorted."""
    if n_questions < 2:
        raise ValueError(f"n_questions={n_questions}: a held-out split needs at least 2 questions.")
    order = np.random.default_rng(seed).permutation(n_questions)
    half = n_questions // 2
    return sorted(order[:half].tolist()), sorted(order[half:].tolist())


def relearn_robustness(before_unlearned: float, after_unlearned: float, before_retain: float, after_retain: float,
                       direction: int = 1) -> float:
    """OpenUnlearning's R for one metric (module docstring: sign handling and edge cases)."""
    values = (before_unlearned, after_unlearned, before_retain, after_retain)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ValueError(f"relearn_robustness needs four finite numbers, got {values}.")
    if direction not in (1, -1):
        raise ValueError(f"direction={direction} must be +1 (higher = more knowledge) or -1.")
    delta_unlearned = direction * (after_unlearned - before_unlearned)
    delta_retain = direction * (after_retain - before_retain)
    if delta_unlearned <= 0:
        return 1.0
    return min(delta_retain / delta_unlearned, 1.0)


def relearn_robustness_table(unlearned_before: Mapping, unlearned_after: Mapping, retain_before: Mapping,
                             retain_after: Mapping, directions: Mapping[str, int] = KNOWLEDGE_DIRECTIONS) -> dict:
    """R of every metric named in `directions` that all four summaries carry."""
    keys = [k for k in directions if all(k in d for d in (unlearned_before, unlearned_after, retain_before,
                                                          retain_after))]
    if not keys:
        raise ValueError(f"No metric of {sorted(directions)} is in all four summaries: pass summaries of the same "
                         "metrics (e.g. forget_metrics' output), or directions= for your metric names.")
    return {k: relearn_robustness(unlearned_before[k], unlearned_after[k], retain_before[k], retain_after[k],
                                  directions[k]) for k in keys}


@contextmanager
def _preserved_rng():
    """transformers' Trainer seeds python, numpy and torch globally; give the caller its RNG state back."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def relearn(model, tokenizer, qa_rows, lr: float = 2e-5, epochs: float = 1, batch_size: int = 8,
            gradient_accumulation_steps: int = 4, prompt_format: str = "auto", seed: int = 0, max_length: int = 512,
            lr_scheduler_type: str = "linear", weight_decay: float = 0.0, log_path: str | Path | None = None):
    """A fine-tuned deep copy of `model`: answer-only NLL on `qa_rows` (question/answer columns, a `datasets.Dataset`
    or a dict of lists) with `transformers.Trainer` (AdamW), quiet, nothing saved. bf16 autocast when the model's
    weights are bf16 (as OpenUnlearning trains). The input model is left untouched."""
    from transformers import TrainingArguments

    from ..finetune import finetune

    if not lr >= 0:
        raise ValueError(f"lr={lr} must be >= 0 (lr=0 returns an unchanged copy).")
    if len(qa_rows["question"]) == 0:
        raise ValueError("qa_rows is empty: pass at least one question/answer row to relearn on.")
    attacked = copy_model(model)
    fmt = resolve_prompt_format(prompt_format, tokenizer, model=model)
    with tempfile.TemporaryDirectory() as tmp, _preserved_rng():
        args = TrainingArguments(output_dir=tmp, use_cpu=attacked.device.type == "cpu", num_train_epochs=epochs,
                                 learning_rate=lr, per_device_train_batch_size=batch_size,
                                 gradient_accumulation_steps=gradient_accumulation_steps,
                                 lr_scheduler_type=lr_scheduler_type, warmup_steps=0, weight_decay=weight_decay,
                                 bf16=next(attacked.parameters()).dtype == torch.bfloat16, save_strategy="no",
                                 report_to="none", disable_tqdm=True, logging_steps=1, seed=seed)
        finetune(attacked, tokenizer, qa_rows, args, prompt_format=fmt, max_length=max_length,
                 log_path=log_path if log_path is not None else Path(tmp) / "log.jsonl")
    attacked.eval()
    return attacked


def forget_metrics(model, tokenizer, rows: Mapping, prompt_format: str = "auto", max_new_tokens: int = 200,
                   batch_size: int = 16, max_length: int = 512) -> dict[str, float]:
    """The forget-set aggregates of `ceu_rl.tofu.evaluate` (open-unlearning's keys) on `rows` (a dict of columns of a
    forget*_perturbed split, or of a subset of its rows): Q_A_Prob, Q_A_PARA_Prob, Q_A_PERT_Prob, truth ratio, ROUGE."""
    fmt = resolve_prompt_format(prompt_format, tokenizer, model=model)
    model.eval()
    log = evaluate_split(model, tokenizer, rows, prefix="forget", fmt=fmt, has_paraphrase=True, forget=True,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, max_length=max_length)
    return {key: float(value["agg_value"]) for key, value in log.items()}
