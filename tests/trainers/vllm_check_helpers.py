"""Shared by vllm_colocate_run.py and vllm_server_run.py (run as scripts from this folder)."""

import torch


def length_reward(completions, **kwargs):
    return [float(len(c) % 5) for c in completions]


def max_teacher_forced_gap(model, tokenizer, prompt, tokens):
    """Teacher-forced on vLLM's greedy tokens: the largest log-prob gap between the model's top-1 and vLLM's choice
    (0 when the model would have chosen every token itself)."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    full = torch.cat([ids, torch.tensor([tokens])], 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0, ids.shape[1] - 1:-1].float(), -1)
    return (logp.max(-1).values - logp[torch.arange(len(tokens)), torch.tensor(tokens)]).max().item()
