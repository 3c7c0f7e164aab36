"""Run by test_ceu_grpo_vllm.py: a colocated vLLM (built by CEUGRPOTrainer) with its CPU GEMM dispatch forced for its
whole life, then two weight syncs of new weights, each checked teacher-forced against transformers. Prints one JSON
line.

vLLM's CPU dispatch (`dispatch_cpu_unquantized_gemm`) either packs a linear weight for its kernel and empties
`layer.weight` (oneDNN, SGL/AMX, zentorch) or keeps it (torch.nn.functional.linear). One vLLM instance cannot switch
between them: the reload copies into the first load's tensors and the compiled graph is traced against one kind. The
colocate test covers this machine's own dispatch; this run covers the other kind: "torch_linear" where this CPU packs,
otherwise "emulated_packed", a pure-torch stand-in that keeps a private copy for the kernel and empties `layer.weight`
exactly as the real packers do, so the packed-weight case is tested on any CPU (and TRL's in-place sync is shown to
fail on it). vLLM has no switch for the dispatch, so "torch_linear" is forced by wrapping it with its capability
checks patched (`check_cpu_sgl_kernel`, `ops._supports_onednn`, `is_zen_cpu`)."""

import contextlib
import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vllm_check_helpers import length_reward as reward, max_teacher_forced_gap  # noqa: E402


@contextlib.contextmanager
def forced_gemm_dispatch(kind):
    import torch
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers import utils
    from vllm.platforms import current_platform

    original = utils.dispatch_cpu_unquantized_gemm
    check_sgl, onednn = utils.check_cpu_sgl_kernel, ops._supports_onednn

    def emulated_packed(layer, remove_weight):
        if layer.weight.ndim != 2:
            return original(layer, remove_weight)
        packed = layer.weight.detach().clone()
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, packed, bias)
        if remove_weight:
            layer.weight = torch.nn.Parameter(torch.empty(0, dtype=packed.dtype), requires_grad=False)

    def forced(layer, remove_weight):
        if kind == "emulated_packed":
            return emulated_packed(layer, remove_weight)
        assert kind == "torch_linear", kind
        utils.check_cpu_sgl_kernel = lambda *a: False  # no SGL/AMX, no oneDNN, no zentorch: the fallback
        ops._supports_onednn = False
        current_platform.is_zen_cpu = lambda: False
        try:
            return original(layer, remove_weight)
        finally:
            utils.check_cpu_sgl_kernel, ops._supports_onednn = check_sgl, onednn
            del current_platform.is_zen_cpu  # back to the class's method

    utils.dispatch_cpu_unquantized_gemm = forced
    try:
        yield
    finally:
        utils.dispatch_cpu_unquantized_gemm = original


def this_cpu_packs():
    """Ask vLLM's own dispatch, on a layer shaped like the test model's qkv projection."""
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randn(192, 64, dtype=torch.bfloat16), requires_grad=False)
    dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    return layer.weight.numel() == 0


def dispatch_to_force(kind):
    if kind == "auto":
        return "torch_linear" if this_cpu_packs() else "emulated_packed"
    return kind


def main(root, kind="auto"):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
    from ceu_rl.tiny_models import save_tiny_model
    from ceu_rl.trainers.vllm_cpu import CPUReloadVLLMGeneration

    path = os.path.join(root, "model")
    save_tiny_model(path, ["hello world the cat sat on the mat"] * 20, vocab_size=300, hidden_size=64, num_heads=2)
    args = CEUGRPOConfig(output_dir=os.path.join(root, "out"), negative_objective="ceu_min",  # a CE-U variant
                         use_cpu=True, bf16=False, per_device_train_batch_size=4,
                         num_generations=4, max_completion_length=8, max_steps=1, report_to=[], save_strategy="no",
                         gradient_checkpointing=False, use_vllm=True, vllm_mode="colocate",
                         vllm_gpu_memory_utilization=0.3, vllm_max_model_length=128, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    kind = dispatch_to_force(kind)
    with forced_gemm_dispatch(kind):  # for vLLM's whole life: the first load and every sync
        trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward, args=args,
                                 train_dataset=Dataset.from_dict({"prompt": ["the cat", "hello"] * 4}),
                                 processing_class=tok)
    generation = trainer.vllm_generation
    vllm_model = generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    qkv = vllm_model.model.layers[0].self_attn.qkv_proj
    model, prompts = trainer.model.eval(), ["the cat", "hello world"]
    results = {"sync_class": type(generation).__name__, "forced": kind, "runs": []}

    for round_ in range(2):
        before = AutoModelForCausalLM.from_pretrained(path).eval()  # not deepcopy: the trainer wraps model.forward
        before.load_state_dict(model.state_dict())
        generator = torch.Generator().manual_seed(round_)
        with torch.no_grad():  # new weights, far from the previous ones: greedy tokens change
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * p.std().clamp(min=0.05))
        run = {}
        with forced_gemm_dispatch(kind):
            if kind == "emulated_packed":
                try:  # TRL's in-place copy: the bug this module fixes, now reproduced on any CPU
                    super(CPUReloadVLLMGeneration, generation).sync_weights()
                    run["trl_inplace_error"] = None
                except AttributeError as e:
                    run["trl_inplace_error"] = str(e)
            generation.sync_weights()
        run["weight_numel"] = qkv.weight.numel()
        outs = generation.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        run["gap_synced"] = max(max_teacher_forced_gap(model, tok, p, t) for p, t in zip(prompts, tokens))
        run["gap_before"] = max(max_teacher_forced_gap(before, tok, p, t) for p, t in zip(prompts, tokens))
        results["runs"].append(run)
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])  # optional second argument: torch_linear|emulated_packed, to run the other one by hand
