"""Verifiable rewards on TOFU for RL-style unlearning (GRPO / CE-U-GRPO)."""

from __future__ import annotations

from .metrics import rouge_scores


def forget_answer_penalty(completions, answer, **kwargs):
    """1 - ROUGE-L recall of the completion against the forget answer: highest when the answer is not reproduced."""
    return [1.0 - rouge_scores(c if isinstance(c, str) else c[-1]["content"], a)["rougeL_recall"]
            for c, a in zip(completions, answer)]
