"""Run by test_ceu_grpo_vllm.py in a subprocess: one CE-U-GRPO (`ceu_full`) step with vLLM colocate rollouts on the
real model (SmolLM2-135M-Instruct, 30 layers, vocab 49,152, tied embeddings) on the real-model study's chat tasks,
then a weight sync and vLLM's greedy tokens teacher-forced through the trained and the initial transformers model.
Prints one JSON line."""

import functools
import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vllm_check_helpers import max_teacher_forced_gap  # noqa: E402


def main(root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.generation import vllm_generation
    from vllm import LLM, SamplingParams

    from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
    from ceu_rl.models import smollm2_path
    from experiments.real_rl.tasks import exact_answer_reward, make_dataset

    torch.set_num_threads(1)
    vllm_generation.LLM = functools.partial(LLM, enforce_eager=True)  # as the study: no torch.compile start-up
    path = str(smollm2_path())
    args = CEUGRPOConfig(output_dir=os.path.join(root, "out"), negative_objective="ceu_full", use_cpu=True, bf16=False,
                         per_device_train_batch_size=4, num_generations=4, max_completion_length=8, max_steps=1,
                         learning_rate=1e-4, temperature=0.7, report_to=[], save_strategy="no", logging_steps=1,
                         gradient_checkpointing=False, use_vllm=True, vllm_mode="colocate",
                         vllm_max_model_length=256, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=exact_answer_reward,
                             args=args, train_dataset=make_dataset(2, 0), processing_class=tok)
    trainer.train()
    trainer.vllm_generation.sync_weights()
    prompts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
               for p in make_dataset(2, 1)["prompt"]]
    outs = trainer.vllm_generation.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    initial = AutoModelForCausalLM.from_pretrained(path).eval()
    model = trainer.model.eval()
    moved = max((p - q).abs().max().item() for p, q in zip(model.parameters(), initial.parameters()))
    history = [h for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({
        "steps": len(history), "loss": history[0]["loss"], "reward": history[0].get("reward"),
        "ceu_logged": "ceu/p_negative_mean" in history[0] or history[0].get("reward_std", 1) == 0,
        "vllm_dtype": str(trainer.vllm_generation.llm.llm_engine.model_config.dtype), "weights_moved": moved,
        "gap_trained": max(max_teacher_forced_gap(model, tok, p, t) for p, t in zip(prompts, tokens)),
        "gap_initial": max(max_teacher_forced_gap(initial, tok, p, t) for p, t in zip(prompts, tokens)),
    }))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    main(sys.argv[1])
