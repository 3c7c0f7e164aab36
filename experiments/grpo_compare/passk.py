"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", arXiv 2107.03374) and its
evaluation on held-out prompts: n samples per prompt drawn as in training, c of them correct."""

from __future__ import annotations

import numpy as np
import torch
from transformers import GenerationConfig

from experiments.grpo_compare.tasks import all_correct_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    r"""1 - C(n - c, k) / C(n, k): the probability that k of the n samples, drawn without replacement, include a
    correct one. Computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i) (Chen et al.'s stable form: no factorials)."""
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@torch.no_grad()
def sample_correct_counts(model, tokenizer, dataset, cfg, samples: int, seed: int, chunk: int = 1024) -> list[int]:
    """Per prompt of `dataset`: how many of `samples` completions (temperature, top-p, top-k of `cfg`, fixed torch
    seed) earn `all_correct_reward` 1."""
    model.eval()
    tokenizer.padding_side = "left"
    gen = GenerationConfig(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or 0,
                           max_new_tokens=cfg.max_completion_length, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    prompts, targets = list(dataset["prompt"]), list(dataset["target"])
    per_chunk = max(1, chunk // samples)
    torch.manual_seed(seed)
    counts = []
    for start in range(0, len(prompts), per_chunk):
        batch = tokenizer(prompts[start:start + per_chunk], return_tensors="pt", padding=True)
        ids = model.generate(**batch, generation_config=gen, num_return_sequences=samples)
        texts = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        wanted = [t for t in targets[start:start + per_chunk] for _ in range(samples)]
        correct = np.asarray(all_correct_reward(texts, wanted)).reshape(-1, samples)
        counts += [int(x) for x in correct.sum(1)]
    return counts


def pass_at_k_curve(counts: list[int], samples: int, ks) -> dict:
    """Mean over prompts of pass@k for each k (string keys, JSON-ready)."""
    return {str(k): float(np.mean([pass_at_k(samples, c, k) for c in counts])) for k in ks}
