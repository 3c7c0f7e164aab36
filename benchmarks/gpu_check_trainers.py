"""gpu_check, part (c): one training step of each CE-U trainer vs its TRL counterpart, on the same batch.

A Llama-shaped model with random weights (on a GPU: the Llama-3.2-1B architecture of gpu_memory.py, bf16; in the
dry run: a tiny Llama, float32, CPU). Every variant starts from a copy of the same weights. A step is what differs
between the trainers, forward + backward (the optimizer step is the same for all and left out):
  dpo:     trainer.training_step on one collated batch of random token ids (harness.random_dpo_batch);
  grpo:    compute_loss(...).backward() on one generated batch (TRL's rollout code, the same in every variant, left
           out), with the advantages set to +1 / -1 on alternate completions so that half the tokens are negative
           (a random-weight model's rewards carry no signal);
  unlearn: trainer.training_step on the first batch of the forget set.
Time: median of interleaved rounds after a warm-up each; peak memory (CUDA): torch.cuda.max_memory_allocated during
one step above what was allocated before it (a base that holds the previous step's gradients, which the step frees
before its backward allocates new ones: the same for every variant). Every objective and setting is
named here and recorded in the JSON (no default that can change is relied on).
"""

from __future__ import annotations

import copy
import tempfile

import torch
from datasets import Dataset
from harness import cuda_peak_extra_mib, interleaved_times, random_dpo_batch
from transformers import LlamaConfig, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, CEUGRPOConfig, CEUGRPOTrainer, UnlearnConfig, UnlearnTrainer
from ceu_rl.tiny_models import train_tokenizer

TINY_ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True)
# Sizes: GPU (realistic) and dry run (tiny).
SIZES = {
    "gpu": dict(dpo_pairs=4, dpo_prompt=128, dpo_completion=384, grpo_batch=16, grpo_generations=8,
                grpo_completion=256, unlearn_batch=4, unlearn_length=512),
    "dry": dict(dpo_pairs=2, dpo_prompt=8, dpo_completion=16, grpo_batch=4, grpo_generations=2, grpo_completion=8,
                unlearn_batch=2, unlearn_length=48),
}
DPO_VARIANTS = {"trl_sigmoid": (DPOTrainer, DPOConfig, dict(loss_type="sigmoid")),
                "ceu": (CEUDPOTrainer, CEUDPOConfig, dict(loss_type="ceu", ceu_weight=1.0, ceu_exact_gradient=False))}
if "rejected_objective" in CEUDPOConfig.__dataclass_fields__:  # named where this version of the config has it
    DPO_VARIANTS["ceu"][2]["rejected_objective"] = "ceu_full"
GRPO_VARIANTS = {"trl": (GRPOTrainer, GRPOConfig, {}),
                 "pg": (CEUGRPOTrainer, CEUGRPOConfig, dict(negative_objective="pg", ceu_exact_gradient=False)),
                 "ceu_min": (CEUGRPOTrainer, CEUGRPOConfig, dict(negative_objective="ceu_min",
                                                                 ceu_exact_gradient=False)),
                 "ceu_min_exact": (CEUGRPOTrainer, CEUGRPOConfig, dict(negative_objective="ceu_min",
                                                                       ceu_exact_gradient=True))}
UNLEARN_VARIANTS = {"ce_u_fused_linear": dict(ce_u_fused_linear=True, ce_u_from_logits=False),
                    "ce_u_from_logits": dict(ce_u_fused_linear=False, ce_u_from_logits=True),
                    "ce_u_logprob_head": dict(ce_u_fused_linear=False, ce_u_from_logits=False)}
# Settings read back from each trainer's config into the JSON.
RECORDED = ("loss_type", "beta", "max_length", "per_device_train_batch_size", "num_generations",
            "max_completion_length", "ceu_weight", "rejected_objective", "negative_objective", "ceu_exact_gradient",
            "objective", "ce_u_fused_linear", "ce_u_from_logits", "bf16", "gradient_checkpointing")


class Bench:
    """The model, tokenizer and common training arguments of one run (GPU or dry run)."""

    def __init__(self, device: str):
        self.device, self.sizes = device, SIZES["gpu" if device == "cuda" else "dry"]
        if device == "cuda":
            from gpu_memory import ARCHS

            arch, self.dtype, self.arch_name = ARCHS["Llama-3.2-1B"], torch.bfloat16, "Llama-3.2-1B"
        else:
            arch, self.dtype, self.arch_name = TINY_ARCH, torch.float32, "tiny Llama (hidden 64, 2 layers, vocab 512)"
        self.config = LlamaConfig(**arch, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        words = "the author was born in a small town and wrote many novels about Question number".split()
        self.tokenizer = train_tokenizer([" ".join(words)] * 4, 300)
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)  # build the weights in bf16 directly (no float32 transient)
        with torch.device(device):
            self.base = LlamaForCausalLM(self.config)
        torch.set_default_dtype(default)
        self.sync = torch.cuda.synchronize if device == "cuda" else None

    def model(self):
        return copy.deepcopy(self.base)

    def common(self, **extra):
        on_gpu = self.device == "cuda"
        return dict(output_dir=tempfile.mkdtemp(prefix="gpu-check-"), use_cpu=not on_gpu, bf16=on_gpu,
                    report_to=[], save_strategy="no", gradient_checkpointing=False, seed=0, **extra)

    def measure(self, steps: dict, rounds: int) -> dict:
        """Warm-up each, peak memory (CUDA) of one more step each, then interleaved timing rounds."""
        for step in steps.values():
            step()
        on_cuda = self.device == "cuda"
        mem = {k: cuda_peak_extra_mib(step) if on_cuda else None for k, step in steps.items()}
        times = interleaved_times(steps, rounds, sync=self.sync, warmup=False)
        return {"step_time_s": times, "peak_extra_mib": mem}


def _settings(trainer) -> dict:
    return {"trainer": type(trainer).__name__,
            **{k: getattr(trainer.args, k) for k in RECORDED if hasattr(trainer.args, k)}}


def _ratios(result: dict, reference: str) -> dict:
    t, m = result["step_time_s"], result["peak_extra_mib"]
    result["time_ratio"] = {k: t[k]["median"] / t[reference]["median"] for k in t}
    result["memory_ratio"] = {k: (m[k] / m[reference] if m[reference] else None) for k in m}
    result["reference_variant"] = reference
    return result


def _measure_training_steps(bench, trainers: dict, batch, rounds: int) -> dict:
    """One `training_step` per trainer on the same batch, timed side by side (interleaved rounds)."""
    def step(trainer):
        def run():
            trainer.model.zero_grad(set_to_none=True)
            trainer.training_step(trainer.model, batch)
        return run

    for t in trainers.values():
        t.model.train()
        t.current_gradient_accumulation_steps = 1
    return bench.measure({k: step(t) for k, t in trainers.items()}, rounds)


def dpo(bench: Bench, rounds: int) -> dict:
    s = bench.sizes
    data = Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]})
    trainers = {}
    for name, (cls, config_cls, loss) in DPO_VARIANTS.items():
        args = config_cls(**bench.common(per_device_train_batch_size=s["dpo_pairs"], beta=0.1,
                                         max_length=s["dpo_prompt"] + s["dpo_completion"], **loss))
        trainers[name] = cls(model=bench.model(), ref_model=bench.model(), args=args, train_dataset=data,
                             processing_class=bench.tokenizer)
    batch = random_dpo_batch(trainers["ceu"], bench.config.vocab_size, s["dpo_pairs"], s["dpo_prompt"],
                             s["dpo_completion"])

    result = _measure_training_steps(bench, trainers, batch, rounds)
    result["settings"] = {k: _settings(t) for k, t in trainers.items()}
    result["batch"] = f"{s['dpo_pairs']} pairs x ({s['dpo_prompt']} prompt + {s['dpo_completion']} completion) tokens"
    return _ratios(result, "trl_sigmoid")


def _reward(completions, **kwargs):
    return [float(len(c) % 7) for c in completions]


def grpo(bench: Bench, rounds: int) -> dict:
    s = bench.sizes
    prompt = "Question number {} about the author: where was the author born and what did the author write?"
    data = Dataset.from_dict({"prompt": [prompt.format(i) for i in range(s["grpo_batch"])]})
    trainers = {}
    for name, (cls, config_cls, extra) in GRPO_VARIANTS.items():
        args = config_cls(**bench.common(per_device_train_batch_size=s["grpo_batch"], loss_type="dapo", beta=0.0,
                                         num_generations=s["grpo_generations"],
                                         max_completion_length=s["grpo_completion"], **extra))
        trainers[name] = cls(model=bench.model(), reward_funcs=_reward, args=args, train_dataset=data,
                             processing_class=bench.tokenizer)
    for t in trainers.values():
        t.model.train()
        t.current_gradient_accumulation_steps = 1
    maker = trainers["pg"]  # its batch carries every key the CE-U variants read (TRL's ignores the extra one)
    inputs = maker._prepare_inputs(next(iter(maker.get_train_dataloader())))
    signs = torch.tensor([1.0, -1.0], device=inputs["advantages"].device).repeat(len(inputs["advantages"]) // 2 + 1)
    inputs["advantages"] = signs[:len(inputs["advantages"])].to(inputs["advantages"].dtype)

    def step(trainer):
        def run():
            trainer.model.zero_grad(set_to_none=True)
            trainer.compute_loss(trainer.model, inputs).backward()
        return run

    result = bench.measure({k: step(t) for k, t in trainers.items()}, rounds)
    mask = inputs["completion_mask"]
    result["settings"] = {k: _settings(t) for k, t in trainers.items()}
    result["batch"] = {"completions": int(mask.shape[0]), "completion_tokens": int(mask.sum()),
                       "max_completion_length": int(mask.shape[1]), "prompt_tokens": int(inputs["prompt_mask"].sum()),
                       "negative_token_fraction": float((inputs["advantages"] < 0).float().unsqueeze(1).mul(mask).sum()
                                                        / mask.sum())}
    return _ratios(result, "trl")


def unlearn(bench: Bench, rounds: int) -> dict:
    from gpu_memory import _data

    s = bench.sizes
    data = _data(bench.tokenizer)
    trainers = {}
    for name, flags in UNLEARN_VARIANTS.items():
        args = UnlearnConfig(**bench.common(objective="ce_u", per_device_train_batch_size=s["unlearn_batch"],
                                            max_length=s["unlearn_length"], prompt_format="plain", **flags))
        trainers[name] = UnlearnTrainer(model=bench.model(), args=args, forget_dataset=data,
                                        processing_class=bench.tokenizer)
    batch = next(iter(trainers["ce_u_fused_linear"].get_train_dataloader()))

    result = _measure_training_steps(bench, trainers, batch, rounds)
    result["settings"] = {k: _settings(t) for k, t in trainers.items()}
    result["batch"] = f"{s['unlearn_batch']} forget items x up to {s['unlearn_length']} tokens"
    return _ratios(result, "ce_u_from_logits")


SECTIONS = {"dpo": dpo, "grpo": grpo, "unlearn": unlearn}
