"""The comparison's data and starting model: TOFU preference pairs (chosen: the true answer, rejected: a perturbed
one) split into training and held-out pairs, unrelated retain answers for collateral damage, and a tiny Llama
supervised on all of them (so that every scored text starts likely, as after SFT)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from datasets import Dataset

from ceu_rl.tofu import load_split
from ceu_rl.tofu.finetune import warm_started_tiny_model


def _prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


PAIR_KINDS = ("perturbed", "shared_prefix")


def _shared_prefix_rejected(answer: str, perturbed: str) -> str:
    """The first half of the true answer's words, then the second half of the perturbed answer's: a rejected answer
    that shares a long prefix with the chosen one (a low edit-distance pair, as in Pal et al. 2024)."""
    words, other = answer.split(), perturbed.split()
    return " ".join(words[:len(words) // 2] + other[len(other) // 2:])


def preference_pairs(start: int, count: int, kind: str = "perturbed") -> Dataset:
    """forget10_perturbed rows [start, start + count) as prompt / chosen / rejected. `kind`: "perturbed" (rejected =
    the perturbed answer, as recipes/dpo.py; the two rarely share a first token) or "shared_prefix" (rejected =
    `_shared_prefix_rejected`)."""
    if kind not in PAIR_KINDS:
        raise ValueError(f"pair kind {kind!r}: use one of {PAIR_KINDS}.")
    rows = load_split("forget10_perturbed").select(range(start, start + count))
    rejected = [p[0] if kind == "perturbed" else _shared_prefix_rejected(a, p[0])
                for a, p in zip(rows["answer"], rows["perturbed_answer"])]
    return Dataset.from_dict({"prompt": [_prompt(q) for q in rows["question"]],
                              "chosen": [" " + a for a in rows["answer"]],
                              "rejected": [" " + r for r in rejected]})


def shared_prefix_fraction(tokenizer, pairs: Dataset) -> dict:
    """How much the pairs share: the fraction of rejected completion tokens (with EOS) in the common prefix of the
    pair's tokenised completions, and the fraction of pairs sharing at least their first token."""
    shared = total = sharing_pairs = 0
    for chosen, rejected in zip(pairs["chosen"], pairs["rejected"]):
        a = tokenizer(chosen)["input_ids"] + [tokenizer.eos_token_id]
        b = tokenizer(rejected)["input_ids"] + [tokenizer.eos_token_id]
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        shared, total, sharing_pairs = shared + k, total + len(b), sharing_pairs + (k > 0)
    return {"rejected_tokens_shared": shared / total, "pairs_sharing_first_token": sharing_pairs / len(pairs)}


def retain_texts(count: int) -> Dataset:
    """Unrelated question/answer text (TOFU retain90, other authors): prompt / answer."""
    rows = load_split("retain90").select(range(count))
    return Dataset.from_dict({"prompt": [_prompt(q) for q in rows["question"]],
                              "answer": [" " + a for a in rows["answer"]]})


def build_model(out: Path, train: Dataset, held_out: Dataset, retain: Dataset, sft_epochs: int, seed: int) -> str:
    """Tiny Llama (vocab 512, hidden 64, 2 layers) supervised on both answers of every pair and on the retain
    answers; reused when already built (resumable)."""
    texts, questions, answers = [], [], []
    for pairs in (train, held_out):
        texts += [*pairs["prompt"], *pairs["chosen"], *pairs["rejected"]]
        questions += [p[len("Question: "):-len("\nAnswer:")] for p in pairs["prompt"]] * 2
        answers += [*pairs["chosen"], *pairs["rejected"]]
    texts += [*retain["prompt"], *retain["answer"]]
    questions += [p[len("Question: "):-len("\nAnswer:")] for p in retain["prompt"]]
    answers += list(retain["answer"])
    qa = Dataset.from_dict({"question": questions, "answer": answers})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sft_log.txt", "a") as log, contextlib.redirect_stdout(log):
        return warm_started_tiny_model(out / "tiny", texts, qa, epochs=sft_epochs, seed=seed, vocab_size=512,
                                       hidden_size=64, num_layers=2)


@torch.no_grad()
def completion_logps(model, tokenizer, prompts, completions) -> torch.Tensor:
    """Summed log p(completion tokens + EOS | prompt) per text, in float64 from full logits (as TRL tokenizes:
    prompt and completion separately)."""
    model.eval()
    out = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = torch.tensor([prompt_ids + tokenizer(completion)["input_ids"] + [tokenizer.eos_token_id]])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        out.append(logp.gather(-1, ids[0, 1:, None])[len(prompt_ids) - 1:].sum().item())
    return torch.tensor(out, dtype=torch.float64)


def pair_logps(model, tokenizer, pairs: Dataset) -> torch.Tensor:
    """(pairs, 2): summed log-prob of the chosen and the rejected completion."""
    return torch.stack([completion_logps(model, tokenizer, pairs["prompt"], pairs[key])
                        for key in ("chosen", "rejected")], dim=1)
