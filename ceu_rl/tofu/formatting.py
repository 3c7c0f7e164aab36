"""Prompt formats per model family and QA tokenization with the prompt masked out of the labels."""

from __future__ import annotations

PROMPT_FORMATS = ("auto", "llama2", "chat", "plain", "raw")
IGNORE_INDEX = -100


def resolve_prompt_format(prompt_format: str, tokenizer, model_name: str = "") -> str:
    """"auto": Llama-2 chat models get `[INST] q [/INST]` (as TOFU and open-unlearning), tokenizers with a chat template
    use it, anything else gets the plain `Question: ... Answer:` format (the tiny local models)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={prompt_format!r} is not one of {PROMPT_FORMATS}.")
    if prompt_format != "auto":
        return prompt_format
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
    """input_ids = prompt + " answer" + eos; labels = -100 on the prompt. Clear errors for unusable items."""
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"Empty answer for question {question!r}: every TOFU item needs a non-empty answer.")
    p_ids = prompt_ids(tokenizer, question, prompt_format)
    a_ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
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
