"""Run by test_ceu_grpo_vllm.py: CE-U-GRPO against a vLLM server (started by the test) for 3 steps, then a weight
sync and a greedy generation by the server, compared teacher-forced with transformers. Prints one JSON line."""

import json
import os
import sys


os.environ.setdefault("HF_HUB_OFFLINE", "1")


from vllm_check_helpers import length_reward as reward, max_teacher_forced_gap  # noqa: E402


def main(root, model_path, base_url):
    import requests
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer

    args = CEUGRPOConfig(output_dir=os.path.join(root, "out"), negative_objective="ceu_min",  # a CE-U variant
                         use_cpu=True, bf16=False, per_device_train_batch_size=4,
                         num_generations=4, max_completion_length=8, max_steps=3, learning_rate=3e-2, report_to=[],
                         save_strategy="no", logging_steps=1, gradient_checkpointing=False, use_vllm=True,
                         vllm_mode="server", vllm_server_base_url=base_url, seed=0,
                         generation_kwargs={"seed": 0})  # seeded sampling on the server: a reproducible run
    tok = AutoTokenizer.from_pretrained(model_path)
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), reward_funcs=reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": ["the cat", "hello", "the mat", "world"] * 3}),
                             processing_class=tok)
    trainer.train()
    model = trainer.model.eval()
    # Then new weights far from the trained ones (seeded noise of each tensor's own scale), synced: the check below
    # then separates "synced" from "not synced" by the noise, not by what 3 training steps happened to change (which
    # depends on the CPU's rounding in the server's bfloat16 rollouts).
    trained = AutoModelForCausalLM.from_pretrained(model_path).eval()
    trained.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.std().clamp(min=0.05))
    trainer.vllm_generation.sync_weights()
    prompts = ["the cat", "hello world"]
    model_id = requests.get(f"{base_url}/v1/models").json()["data"][0]["id"]
    choices = requests.post(f"{base_url}/v1/completions", json={
        "model": model_id, "prompt": [tok(p).input_ids for p in prompts], "max_tokens": 8, "temperature": 0.0,
        "return_token_ids": True}).json()["choices"]
    server_tokens = [c["token_ids"] for c in choices]

    print(json.dumps({
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "server": server_tokens,
        "gap_trained": max(max_teacher_forced_gap(model, tok, p, t) for p, t in zip(prompts, server_tokens)),
        "gap_previous": max(max_teacher_forced_gap(trained, tok, p, t) for p, t in zip(prompts, server_tokens)),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
