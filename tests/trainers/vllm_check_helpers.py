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


def save_tied_tiny_model(path, texts, vocab_size=300):
    """A tiny Llama with tied input/output embeddings (as Qwen2.5-0.5B, Llama-3.2-1B): on CPUs where vLLM packs the
    LM head, its reload used to leave the tied head packed from the first load's weights."""
    import os

    from transformers import LlamaForCausalLM

    from ceu_rl.tiny_models import tiny_llama_config, train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size)
    config = tiny_llama_config(len(tokenizer))
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.tie_weights()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return os.fspath(path)
