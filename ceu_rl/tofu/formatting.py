"""Prompt formats per model family, the format a model was trained with (recorded in its config), and QA
tokenization with the prompt masked out of the labels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

PROMPT_FORMATS = ("auto", "llama2", "chat", "plain", "raw")
IGNORE_INDEX = -100
# Keys of a model's config (config.json) that record how the library trained and evaluated it, read back by "auto"
# and by the CLIs' defaults. `ceu_rl_prompt_format`: the prompt format it was trained with, written by every trainer
# of the library that formats prompts (finetune, UnlearnTrainer, RetainAnchoredGRPOTrainer with a retain set) and so
# by the recipes and studies. `ceu_rl_max_new_tokens`: the generation length its recipe or study evaluated it with
# (mini-TOFU: 48), the default of the CLIs' --max_new_tokens. Plain config attributes: `save_pretrained`,
# `Trainer.save_model` and checkpoints write them, `from_pretrained` reads them, a reloaded model saves them again.
PROMPT_FORMAT_KEY = "ceu_rl_prompt_format"
MAX_NEW_TOKENS_KEY = "ceu_rl_max_new_tokens"
DEFAULT_MAX_NEW_TOKENS = 200  # TOFU's and open-unlearning's generation length


def _config_of(source):
    """The config of a model (PEFT-wrapped too), a config itself, or a config dict; a local model folder's
    config.json as a dict; None otherwise (no folder, unreadable)."""
    if isinstance(source, (str, Path)):
        path = Path(source) / "config.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None
    return getattr(source, "config", source)


def _recorded(source, key):
    config = _config_of(source)
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def _record(model, key, value) -> None:
    config = _config_of(model) if not isinstance(model, (str, Path)) else None
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config to record {key} in.")
    if isinstance(config, dict):
        config[key] = value
    else:
        setattr(config, key, value)


def record_prompt_format(model, prompt_format: str) -> None:
    """Record on `model.config` (or on a config) that the model is trained with `prompt_format` (a resolved format,
    not "auto"): `save_pretrained` writes it into config.json as `ceu_rl_prompt_format`, where "auto" finds it."""
    if prompt_format not in PROMPT_FORMATS or prompt_format == "auto":
        raise ValueError(f"prompt_format={prompt_format!r}: record a resolved format, one of {PROMPT_FORMATS[1:]}.")
    _record(model, PROMPT_FORMAT_KEY, prompt_format)


def recorded_prompt_format(source) -> str | None:
    """The prompt format recorded with a model (`record_prompt_format`): `source` is a model, its config, a config
    dict, or a local model folder (its config.json is read). None when nothing (valid) is recorded, e.g. a hub model."""
    value = _recorded(source, PROMPT_FORMAT_KEY)
    if value is None:
        return None
    if value not in PROMPT_FORMATS or value == "auto":
        warnings.warn(f"The model's config records {PROMPT_FORMAT_KEY}={value!r}, not one of {PROMPT_FORMATS[1:]}: "
                      "ignored (\"auto\" falls back to the model name and the chat template).", stacklevel=2)
        return None
    return value


def record_max_new_tokens(model, max_new_tokens: int) -> None:
    """Record on `model.config` the generation length the model is evaluated with (config.json's
    `ceu_rl_max_new_tokens`): the default of the CLIs' --max_new_tokens for that model (`resolve_max_new_tokens`)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer.")
    _record(model, MAX_NEW_TOKENS_KEY, max_new_tokens)


def resolve_max_new_tokens(max_new_tokens: int | None, model=None, default: int = DEFAULT_MAX_NEW_TOKENS) -> int:
    """`max_new_tokens` when given; else the length recorded with `model` (a model, its config or a local folder),
    else `default` (200, TOFU's)."""
    if max_new_tokens is not None:
        return max_new_tokens
    value = None if model is None else _recorded(model, MAX_NEW_TOKENS_KEY)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        warnings.warn(f"The model's config records {MAX_NEW_TOKENS_KEY}={value!r}, not a positive integer: ignored "
                      f"(default {default}).", stacklevel=2)
        value = None
    return default if value is None else value


def resolve_prompt_format(prompt_format: str, tokenizer, model_name: str = "", model=None) -> str:
    """An explicit format is returned as is. "auto": the format recorded with the model (`model=`: a model, its
    config or a local folder; config.json's `ceu_rl_prompt_format`, written when the library trained it), else
    Llama-2 chat models get `[INST] q [/INST]` (as TOFU and open-unlearning), tokenizers with a chat template use it,
    anything else gets the plain `Question: ... Answer:` format (the tiny local models)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={prompt_format!r} is not one of {PROMPT_FORMATS}.")
    if prompt_format != "auto":
        return prompt_format
    if model is not None:
        recorded = recorded_prompt_format(model)
        if recorded is not None:
            return recorded
        if not model_name:
            model_name = (str(model) if isinstance(model, (str, Path))
                          else getattr(_config_of(model), "_name_or_path", ""))
    name = (model_name or getattr(tokenizer, "name_or_path", "") or "").lower()
    if "llama-2" in name:
        return "llama2"
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def format_prompt(question: str, tokenizer, prompt_format: str) -> str:
    if prompt_format == "llama2":
        return f"[INST] {question} [/INST]"
    if prompt_format == "raw":  # the question is already the whole prompt (e.g. RL tasks with their own format)
        return question
    if prompt_format == "chat":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return f"Question: {question}\nAnswer:"


def prompt_ids(tokenizer, question: str, prompt_format: str) -> list[int]:
    text = format_prompt(question, tokenizer, prompt_format)
    # chat templates write their own special tokens
    return tokenizer(text, add_special_tokens=prompt_format != "chat")["input_ids"]


def encode_qa(tokenizer, question: str, answer: str, prompt_format: str, max_length: int) -> dict[str, list[int]]:
    """input_ids = prompt + answer + eos; labels = -100 on the prompt. Clear errors for unusable items.

    The answer follows the prompt after a space ("Answer: The ...", "[/INST] The ...", as TOFU writes them), except in
    the chat format, whose generation prompt ends the line ("<|im_start|>assistant\n"): there the answer starts the
    assistant turn as the chat template writes it (open-unlearning does the same). Before 0.2.0 the chat format got
    the space too, and a chat model's first answer token (" The" for "The") had p ~ 0."""
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"Empty answer for question {question!r}: every TOFU item needs a non-empty answer.")
    p_ids = prompt_ids(tokenizer, question, prompt_format)
    text = answer.strip() if prompt_format == "chat" else " " + answer.strip()
    a_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        a_ids = a_ids + [tokenizer.eos_token_id]
    if len(p_ids) >= max_length:
        raise ValueError(
            f"The prompt of question {question[:60]!r}... is {len(p_ids)} tokens, not shorter than max_length={max_length}:"
            " raise max_length (nothing of the answer would be scored)."
        )
    ids = (p_ids + a_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(p_ids) + a_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}
