"""Verifiable toy tasks for the GRPO recipes: prompts generated locally, reward = positional partial credit.

Both tasks use spaced letters (one token each) so a tiny warm-started model can learn them, and both have
completions that share confident tokens within a group (the same first letters; the brackets of "sort"), the case
where GRPO's and CE-U-GRPO's pushes on negative-advantage tokens differ most.

- "reverse": "Reverse: a b c d =" -> " d c b a"
- "sort":    "Sort: d a c b =" -> " ( a b c d )" (a fixed format around the answer: tokens every completion shares)
- "shift":   "Shift: a c f =" -> " b d a" (each letter to the next one, f wraps to a; issue 17's new task)

Rewards: `positional_reward` (partial credit, dense) and `all_correct_reward` (binary success: 1 iff every target
position is right, issue 17's regime, scored with pass@k).
"""

from __future__ import annotations

import random

from datasets import Dataset

LETTERS = "abcdef"


def positional_reward(completions, target, **kwargs):
    """Fraction of the target's whitespace-separated tokens found at the same position (partial credit)."""
    scores = []
    for completion, t in zip(completions, target):
        got, want = completion.split(), t.split()
        scores.append(sum(g == w for g, w in zip(got, want)) / len(want))
    return scores


def all_correct_reward(completions, target, **kwargs):
    """Binary success: 1.0 iff every whitespace-separated target token is at its position (what follows the
    answer is ignored, as in `positional_reward`), else 0.0."""
    return [float(score == 1.0) for score in positional_reward(completions, target)]


def _reverse(letters: list[str]) -> str:
    return " ".join(reversed(letters))


def _sort_in_brackets(letters: list[str]) -> str:
    return "( " + " ".join(sorted(letters)) + " )"


def _shift(letters: list[str]) -> str:
    return " ".join(LETTERS[(LETTERS.index(x) + 1) % len(LETTERS)] for x in letters)


TASKS = {  # name: (prompt word, target builder)
    "reverse": ("Reverse", _reverse),
    "sort": ("Sort", _sort_in_brackets),
    "shift": ("Shift", _shift),
}
REWARDS = {"positional": positional_reward, "all_correct": all_correct_reward}


def make_dataset(task: str, n: int, length: int, seed: int) -> Dataset:
    """`n` prompts of `length` random letters; columns prompt and target (the reward function's `target`)."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: use one of {sorted(TASKS)}.")
    word, build_target = TASKS[task]
    rng = random.Random(seed)
    letters = [[rng.choice(LETTERS) for _ in range(length)] for _ in range(n)]
    return Dataset.from_dict({"prompt": [f"{word}: {' '.join(x)} =" for x in letters],
                              "target": [build_target(x) for x in letters]})
