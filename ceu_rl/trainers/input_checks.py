"""Clear errors for bad input to the GRPO trainer, where TRL would fail deep inside (KeyError 'prompt', an IndexError
in generate), train on nothing silently (an empty dataset) or turn a reward function's NaN into a silently skipped
completion. Each error names the field, the row and the fix."""

from __future__ import annotations

import functools
import inspect
import math

import torch


def _message_text(prompt) -> str | None:
    """The text of a conversational prompt; None when some part is not text (e.g. an image): not empty then."""
    parts = []
    for message in prompt:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return None
        parts.append(content)
    return "".join(parts)


def check_prompt_dataset(dataset, name: str, processing_class) -> None:
    """A GRPO prompt dataset: not empty, a 'prompt' column, no empty prompt, a chat template for conversations."""
    columns = getattr(dataset, "column_names", None)
    if dataset is None or columns is None or not hasattr(dataset, "__len__"):
        return  # iterable datasets: TRL's own checks
    if len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty: GRPO needs at least one prompt.")
    if "prompt" not in columns:
        raise ValueError(f"The {name} dataset has no 'prompt' column (columns: {columns}): GRPO generates from "
                         "'prompt'; rename yours, e.g. dataset.rename_column('question', 'prompt').")
    conversational = False
    for i, prompt in enumerate(dataset["prompt"]):
        if isinstance(prompt, list):
            conversational = True
            text = _message_text(prompt)
        else:
            text = prompt if isinstance(prompt, str) else str(prompt)
        if text is not None and not text.strip():
            raise ValueError(f"The {name} dataset has an empty 'prompt' at row {i}: generation needs at least one "
                             "prompt token. Drop or fix that row.")
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if conversational and processing_class is not None and not getattr(tokenizer, "chat_template", None) \
            and not getattr(processing_class, "chat_template", None):
        raise ValueError(f"The {name} dataset is conversational (lists of role/content messages) but the tokenizer has "
                         "no chat template: set tokenizer.chat_template, use a chat model's tokenizer, or give plain "
                         "text prompts.")


def _checked_reward(func):
    name = getattr(func, "__name__", type(func).__name__)

    @functools.wraps(func)
    def checked(*args, **kwargs):
        try:
            rewards = func(*args, **kwargs)
        except Exception as error:
            error.add_note(f"(raised by the reward function {name!r}: fix it, or have it return None for the "
                           "completions it cannot score)")
            raise
        for i, reward in enumerate(rewards if rewards is not None else []):
            if reward is None:
                continue
            value = float(reward.item() if isinstance(reward, torch.Tensor) else reward)
            if not math.isfinite(value):
                raise ValueError(f"The reward function {name!r} returned {value} for completion {i}: return a finite "
                                 "number, or None where the function does not apply (TRL then leaves it out of that "
                                 "completion's reward).")
        return rewards

    return checked


def checked_reward_funcs(reward_funcs):
    """Plain synchronous reward functions (and methods) wrapped so that NaN/inf rewards raise and exceptions name
    the function; model ids, reward models, async functions, partials and callable objects go to TRL unchanged (TRL
    names those itself, and a wrapper would change the name it logs under)."""
    from trl.trainer.utils import is_async_callable

    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    wrapped = [_checked_reward(f) if (inspect.isfunction(f) or inspect.ismethod(f)) and not is_async_callable(f)
               else f for f in funcs]
    return wrapped if isinstance(reward_funcs, list) else wrapped[0]


def check_grpo_inputs(reward_funcs, pargs, kwargs):
    """GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class, ...): check the datasets,
    wrap the reward functions. Returns the reward functions to pass on."""
    positional = dict(zip(("train_dataset", "eval_dataset", "processing_class"), pargs))
    get = lambda key: kwargs.get(key, positional.get(key))  # noqa: E731
    check_prompt_dataset(get("train_dataset"), "train", get("processing_class"))
    eval_dataset = get("eval_dataset")
    for name, dataset in (eval_dataset.items() if isinstance(eval_dataset, dict) else [("eval", eval_dataset)]):
        check_prompt_dataset(dataset, name, get("processing_class"))
    return checked_reward_funcs(reward_funcs)


def check_preference_inputs(pargs, kwargs) -> None:
    """DPOTrainer(model, ref_model, args, data_collator, train_dataset, eval_dataset, processing_class, ...): an empty
    dataset (TRL: a bare StopIteration), empty prompt/chosen strings (TRL trains on them silently) and conversations
    without a chat template. Missing columns: CEUDPOTrainer's own check."""
    positional = dict(zip(("data_collator", "train_dataset", "eval_dataset", "processing_class"), pargs))
    get = lambda key: kwargs.get(key, positional.get(key))  # noqa: E731
    eval_dataset = get("eval_dataset")
    datasets = [("train", get("train_dataset"))]
    datasets += eval_dataset.items() if isinstance(eval_dataset, dict) else [("eval", eval_dataset)]
    processing_class = get("processing_class")
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    for name, dataset in datasets:
        columns = getattr(dataset, "column_names", None)
        if dataset is None or columns is None or not hasattr(dataset, "__len__") or "input_ids" in columns:
            continue
        if len(dataset) == 0:
            raise ValueError(f"The {name} dataset is empty: DPO needs at least one prompt/chosen/rejected row.")
        for column in ("prompt", "chosen", "rejected"):
            if column not in columns:
                continue
            for i, value in enumerate(dataset[column]):
                text = _message_text(value) if isinstance(value, list) else value
                if isinstance(text, str) and not text.strip():
                    what = "" if column == "prompt" else " completion"
                    raise ValueError(f"The {name} dataset has an empty {column!r}{what} at row {i}: every pair needs "
                                     f"a non-empty {column}. Drop or fix that row.")
                if isinstance(value, list) and processing_class is not None and not getattr(tokenizer, "chat_template",
                                                                                             None):
                    raise ValueError(f"The {name} dataset is conversational (lists of role/content messages) but the "
                                     "tokenizer has no chat template: set tokenizer.chat_template, use a chat model's "
                                     "tokenizer, or give plain-text prompt/chosen/rejected.")
