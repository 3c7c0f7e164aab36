"""leak@k: does an unlearned model still state the forgotten answer when it is sampled instead of decoded greedily?

Reference: Reisizadeh et al., "Leak@k: Unlearning Does Not Make LLMs Forget Under Probabilistic Decoding" (arXiv
2511.04934; code: OptimAI-Lab/Leak-k, `TOFU/whole_eval.py`). Their protocol on TOFU: n = 200 samples per forget
question at temperature 1, top-p 1; a sample *leaks* when an NLI model (`sileod/deberta-v3-base-tasksource-nli`,
premise = the sample, hypothesis = the answer) says it entails the answer (samples with ROUGE-L recall < 0.1 are
counted as not leaking before the NLI model is asked); leak@k = the unbiased pass@k estimator
1 - C(n-c, k) / C(n, k) (Chen et al. 2021), averaged over questions, k in 1, 2, 4, ..., 128.

No NLI model can be loaded where this project is developed, so the default leak event is a documented proxy:
ROUGE-L recall of the sample against the answer >= a threshold (0.3 / 0.5 / 0.7 reported), with the scorer of the TOFU
ROUGE metric (`ceu_rl.tofu.metrics.rouge_scores`: rouge-score, stemmer on). `leak_event=` takes a callable
(question, answer, sample) -> bool, so that a user with an NLI model or an LLM judge plugs the paper's event in.
A threshold-free companion: the expected maximum ROUGE-L recall over k samples, estimated without bias from the n
samples (order statistics, as pass@k is for a binary event).

Choices the Leak-k code does not settle: `top_k=0` by default, i.e. plain sampling at temperature 1 and top-p 1 as
the paper states (`transformers`' `generate` would otherwise apply the generation config's top_k, 50 by default;
their sampling code is not among the repository's readable files, so whether it did is not known here); leak@k for
k > n is refused (their `calculate_pass_at_k` returns 0.0 there).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..formatting import prompt_ids, resolve_prompt_format
from ..metrics import rouge_scores

DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7)
LeakEvent = Callable[[str, str, str], bool]


def default_ks(n: int, largest: int = 128) -> tuple[int, ...]:
    """1, 2, 4, ... up to min(largest, n): the paper's k grid, cut at the number of samples."""
    if n < 1:
        raise ValueError(f"n={n}: the number of samples per question must be at least 1.")
    ks, k = [], 1
    while k <= min(largest, n):
        ks.append(k)
        k *= 2
    return tuple(ks)


def _check_nck(n: int, k: int) -> None:
    if not (isinstance(n, (int, np.integer)) and isinstance(k, (int, np.integer))):
        raise ValueError(f"n={n!r} and k={k!r} must be integers.")
    if n < 1 or k < 1 or k > n:
        raise ValueError(f"k={k} must satisfy 1 <= k <= n={n}: an estimate over k draws needs n >= k samples "
                         "(draw more samples with n=, or drop the larger k).")


def leak_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples leaks) from c leaking samples out of n:
    1 - C(n-c, k) / C(n, k), in the product form 1 - prod_{i=n-c+1}^{n} (1 - k / i) (no huge binomials)."""
    _check_nck(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"c={c} leaking samples must lie in [0, n={n}].")
    if n - c < k:  # every k-subset holds a leaking sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def expected_max_at_k(scores: Sequence[float], k: int) -> float:
    """Unbiased estimate of E[max of k scores drawn without replacement] from n scores: with s_(1) <= ... <= s_(n)
    sorted, sum_i s_(i) * C(i-1, k-1) / C(n, k) (s_(i) is the maximum of exactly C(i-1, k-1) of the k-subsets).
    Exact integer binomials, one correctly rounded division each."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    _check_nck(n, k)
    total = math.comb(n, k)
    weights = np.array([math.comb(i - 1, k - 1) / total for i in range(1, n + 1)])
    return float(weights @ s)


def rouge_l_recalls(samples: Sequence[str], answer: str) -> list[float]:
    """ROUGE-L recall of each sample against the answer, with the TOFU ROUGE metric's scorer (stemmer on)."""
    return [rouge_scores(s, answer)["rougeL_recall"] for s in samples]


@torch.no_grad()
def sample_answers(model, tokenizer, questions: Sequence[str], n: int = 200, temperature: float = 1.0,
                   top_p: float = 1.0, top_k: int = 0, max_new_tokens: int = 200, prompt_format: str = "auto",
                   batch_size: int = 256, seed: int = 0) -> list[list[str]]:
    """n sampled answers per question (ancestral sampling at `temperature`, nucleus `top_p`, `top_k`=0: off).

    Rows (question, sample) are generated `batch_size` at a time, left-padded, each cut at EOS. The torch RNG is
    seeded with `seed` inside a forked RNG state (the caller's is left as it was): the same seed, batch size and
    device give the same samples."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n={n} and batch_size={batch_size} must be at least 1.")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (greedy decoding is `greedy_answers`).")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must lie in (0, 1].")
    fmt = resolve_prompt_format(prompt_format, tokenizer, model=model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [prompt_ids(tokenizer, q, fmt) for q in questions]
    rows = [i for i in range(len(questions)) for _ in range(n)]
    texts: list[str] = []
    device = model.device
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(rows), batch_size):
            batch = [encoded[i] for i in rows[start : start + batch_size]]
            width = max(len(e) for e in batch)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in batch], device=device)
            attn = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in batch], device=device)
            gen = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens, do_sample=True,
                                 temperature=temperature, top_p=top_p, top_k=top_k, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
            texts.extend(t.strip() for t in tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True))
    return [texts[i * n : (i + 1) * n] for i in range(len(questions))]


_SAMPLING_DEFAULTS = {name: p.default for name, p in inspect.signature(sample_answers).parameters.items()
                      if p.default is not inspect.Parameter.empty and name != "n"}


def _curves(per_question: list[dict], n: int, ks: Sequence[int], thresholds: Sequence[float], with_event: bool):
    curves = {"leak_at_k": {f"{t:g}": [float(np.mean([leak_at_k(n, q["counts"][f"{t:g}"], k) for q in per_question]))
                                       for k in ks] for t in thresholds},
              "expected_max_rougeL_recall": [float(np.mean([expected_max_at_k(q["rougeL_recall"], k)
                                                            for q in per_question])) for k in ks]}
    if with_event:
        curves["event_leak_at_k"] = [float(np.mean([leak_at_k(n, q["event_count"], k) for q in per_question]))
                                     for k in ks]
    return curves


def score_samples(questions: Sequence[str], answers: Sequence[str], samples: Sequence[Sequence[str]],
                  ks: Sequence[int] | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  leak_event: LeakEvent | None = None, keep_samples: bool = False) -> dict:
    """leak@k per threshold (and for `leak_event`), the expected-max-ROUGE curve and per-question counts, from
    already drawn samples (one list of n per question)."""
    if not (len(questions) == len(answers) == len(samples)) or not questions:
        raise ValueError(f"questions ({len(questions)}), answers ({len(answers)}) and samples ({len(samples)}) must "
                         "be non-empty and of one length: one list of samples per question.")
    n = len(samples[0])
    if any(len(s) != n for s in samples):
        raise ValueError("Every question needs the same number of samples n (leak@k averages one estimator).")
    ks = tuple(ks) if ks is not None else default_ks(n)
    for k in ks:
        _check_nck(n, k)
    per_question = []
    for q, a, s in zip(questions, answers, samples):
        recalls = rouge_l_recalls(s, a)
        item = {"question": q, "answer": a, "counts": {f"{t:g}": int(sum(r >= t for r in recalls))
                                                       for t in thresholds},
                "max_rougeL_recall": max(recalls), "mean_rougeL_recall": float(np.mean(recalls)),
                "rougeL_recall": recalls}
        if leak_event is not None:
            item["event_count"] = int(sum(bool(leak_event(q, a, x)) for x in s))
        if keep_samples:
            item["samples"] = list(s)
        per_question.append(item)
    report = {"n": n, "ks": list(ks), "thresholds": [float(t) for t in thresholds], "questions": len(questions),
              **_curves(per_question, n, ks, thresholds, leak_event is not None), "per_question": per_question}
    if not keep_samples:
        for item in per_question:
            del item["rougeL_recall"]
    return report


def leak_report(model, tokenizer, questions: Sequence[str], answers: Sequence[str], n: int = 200,
                ks: Sequence[int] | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                leak_event: LeakEvent | None = None, paraphrased_questions: Sequence[str] | None = None,
                keep_samples: bool = False, **sampling) -> dict:
    """leak@k of a model on forget questions (and, if given, on their paraphrases: TOFU's `paraphrased_question`,
    the question key Leak-k's TOFU config uses), with the sampling settings recorded.

    Returns {"settings": ..., "question": score_samples(...), "paraphrased_question": ...}. `sampling`: the keyword
    arguments of `sample_answers` (temperature, top_p, top_k, max_new_tokens, prompt_format, batch_size, seed)."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers: pass one answer per question.")
    unknown = set(sampling) - set(_SAMPLING_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown sampling option(s) {sorted(unknown)}; sample_answers takes "
                         f"{sorted(_SAMPLING_DEFAULTS)}.")
    settings = {**_SAMPLING_DEFAULTS, **sampling, "n": n,
                "leak_event": "rougeL_recall >= threshold" + (" and a user leak_event" if leak_event else "")}
    out = {"settings": settings}
    sets = {"question": questions}
    if paraphrased_questions is not None:
        if len(paraphrased_questions) != len(answers):
            raise ValueError("paraphrased_questions must have one entry per question.")
        sets["paraphrased_question"] = paraphrased_questions
    for key, qs in sets.items():
        samples = sample_answers(model, tokenizer, qs, n=n, **sampling)
        out[key] = score_samples(qs, answers, samples, ks, thresholds, leak_event, keep_samples)
    return out
