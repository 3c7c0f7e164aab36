"""Run by test_ceu_grpo_vllm.py in a subprocess (vLLM wants its own process and a __main__ guard): CE-U-GRPO with
vLLM colocate rollouts for 3 steps on a tiny local Llama with tied embeddings, then a weight sync and a greedy
generation by vLLM and by transformers on the updated weights. Prints one JSON line."""

import json
import os
import sys


os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


from vllm_check_helpers import length_reward as reward, max_teacher_forced_gap, save_tied_tiny_model  # noqa: E402


def main(root):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
    path = os.path.join(root, "model")
    save_tied_tiny_model(path, ["hello world the cat sat on the mat"] * 20, vocab_size=300)  # tied: the harder case
    args = CEUGRPOConfig(output_dir=os.path.join(root, "out"), negative_objective="ceu_min",  # a CE-U variant
                         use_cpu=True, bf16=False, per_device_train_batch_size=4,
                         num_generations=4, max_completion_length=8, max_steps=3, learning_rate=3e-2, report_to=[],
                         save_strategy="no", logging_steps=1, gradient_checkpointing=False, use_vllm=True,
                         vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=128, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": ["the cat", "hello", "the mat", "world"] * 3}),
                             processing_class=tok)
    trainer.train()
    trainer.vllm_generation.sync_weights()
    prompts = ["the cat", "hello world"]
    outs = trainer.vllm_generation.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
    model = trainer.model.eval()
    initial = AutoModelForCausalLM.from_pretrained(path).eval()

    def greedy(m, p):
        ids = tok(p, return_tensors="pt").input_ids
        return m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)[0, ids.shape[1]:].tolist()

    vllm_tokens = [list(o.outputs[0].token_ids) for o in outs]
    # The synced weights themselves, read from vLLM's model: the embedding keeps its Parameter on every CPU dispatch
    # (vLLM packs only a copy of it for the LM head; linear layers may be packed and emptied).
    vllm_model = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    trained_embed = model.model.embed_tokens.weight.detach().float()
    synced = vllm_model.model.embed_tokens.weight.detach().float()[: trained_embed.shape[0]]  # vLLM pads the vocab
    initial_embed = initial.model.embed_tokens.weight.detach().float()
    print(json.dumps({
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "ceu_logged": all("ceu/p_negative_mean" in h for h in trainer.state.log_history if "loss" in h),
        "vllm": vllm_tokens,
        "gap_trained": max(max_teacher_forced_gap(model, tok, p, t) for p, t in zip(prompts, vllm_tokens)),
        "gap_initial": max(max_teacher_forced_gap(initial, tok, p, t) for p, t in zip(prompts, vllm_tokens)),
        "vllm_dtype": str(trainer.vllm_generation.llm.llm_engine.model_config.dtype),
        "embed_scale": trained_embed.abs().max().item(),
        "embed_err_trained": (synced - trained_embed).abs().max().item(),
        "embed_err_initial": (synced - initial_embed).abs().max().item(),
        "transformers": [greedy(model, p) for p in prompts],
        "initial": [greedy(initial, p) for p in prompts],
    }))


if __name__ == "__main__":
    main(sys.argv[1])
