"""vLLM weight sync when vLLM runs on CPU. Generation and everything else stays TRL's.

Colocate mode: TRL copies each trained tensor into vLLM's model in place (`model.load_weights`). vLLM's CPU backend,
however, post-processes linear weights at load time (`dispatch_cpu_unquantized_gemm`): on CPUs where it picks oneDNN,
the SGL/AMX kernels or zentorch it packs the weight into a kernel-owned buffer and replaces `layer.weight` by an empty
Parameter, so TRL's in-place copy fails ("'Parameter' object has no attribute 'weight_loader'") or, for layers that keep
their Parameter next to a packed copy, would update a tensor the kernel no longer reads. Which dispatch a CPU gets
depends on its ISA, so on CPU we always sync through vLLM's own `reload_weights` with the trained tensors as the
weights iterator: it restores the checkpoint-format parameters, loads, and re-runs the post-load processing (packing)
for whatever dispatch this machine uses. GPU users keep TRL's in-place path unchanged.

Server mode: TRL's weight sync streams tensors over NCCL, which needs CUDA. On CPU the trainer instead writes the
weights to a folder and asks the server to reload them (`/collective_rpc` `reload_weights`, a vLLM dev endpoint: start
the server with VLLM_SERVER_DEV_MODE=1).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from trl.generation import vllm_generation
from trl.generation.vllm_client import VLLMClient
from trl.trainer import grpo_trainer


class CPUWeightReloadVLLMClient(VLLMClient):
    """TRL's VLLMClient with the NCCL weight transfer replaced by save-and-reload."""

    def init_communicator(self, device: torch.device | str | int = 0):
        self._weights_dir = Path(tempfile.mkdtemp(prefix="ceu-rl-vllm-weights-"))

    def update_named_params(self, metadata, named_params):
        tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in named_params}
        save_file(tensors, str(self._weights_dir / "model.safetensors"))
        result = self._post(f"{self.base_url}/collective_rpc",
                            json={"method": "reload_weights", "kwargs": {"weights_path": str(self._weights_dir)}})
        if result is None:
            raise RuntimeError(f"The vLLM server at {self.base_url} did not reload the weights.")

    def close_communicator(self):
        pass


def vllm_runs_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class CPUReloadVLLMGeneration(vllm_generation.VLLMGeneration):
    """TRL's VLLMGeneration; in colocate mode on a CPU vLLM, weights are synced through vLLM's `reload_weights`."""

    def sync_weights(self):
        if self.mode != "colocate" or not vllm_runs_on_cpu():
            return super().sync_weights()
        if self.enable_sleep_mode:  # as TRL does: map the weights before writing them
            self.llm.wake_up(tags=["weights"])
            self._llm_weights_sleeping = False
        # Copies: vLLM buffers a layer's tensors until the layer is complete, and with PEFT TRL's iterator unmerges
        # the adapter (in place) when it ends.
        weights = ((name, tensor.detach().clone()) for name, tensor in self._iter_named_params())
        self.llm.llm_engine.model_executor.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        refresh_vocab_kernels(self.llm.llm_engine.model_executor.driver_worker.model_runner.model)
        self.llm.reset_prefix_cache()


def refresh_vocab_kernels(model) -> None:
    """Re-pack the embedding and LM head kernels from their (already reloaded) weights.

    vLLM's CPU backend keeps `weight` on these layers but also packs a copy for the LM head GEMM. With tied embeddings
    the two layers share one Parameter, vLLM's reload processes only the layer the weight was loaded through, and the
    other keeps a kernel packed from the first load's weights: greedy tokens then came from the initial LM head
    (measured on an AVX-512 oneDNN CPU: 1.7 nats off the trained model). Packing again from the current weight is
    exact on every dispatch (on the unpacked one it only rebinds `torch.nn.functional.linear`)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            module.quant_method.process_weights_after_loading(module)


def _has_tied_embeddings(model) -> bool:
    config = getattr(model, "config", None)
    if config is None:
        return False
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text_config, "tie_word_embeddings", False))


@contextlib.contextmanager
def cpu_vllm_weight_sync(args, model=None):
    """While building a GRPO trainer: on a CPU trainer in server mode, TRL's VLLMGeneration creates the
    save-and-reload client instead of its NCCL one; in colocate mode it is the reload-on-CPU subclass above (which
    defers to TRL's sync when vLLM runs on a GPU)."""
    use_vllm = args is not None and getattr(args, "use_vllm", False)
    server_on_cpu = use_vllm and args.vllm_mode == "server" and args.device.type == "cpu"
    colocate = use_vllm and args.vllm_mode == "colocate"
    if server_on_cpu and _has_tied_embeddings(model):
        warnings.warn(
            "vllm_mode='server' with a tied-embedding model: if the vLLM server runs on a CPU where vLLM packs the LM "
            "head (oneDNN, AMX or zentorch, e.g. AVX-512 CPUs), its reload_weights leaves the tied LM head packed from "
            "the first load, so generations after a weight sync come from the initial head (measured: 1.2 nats off). "
            "The server cannot be told to re-pack it; on such CPUs use vllm_mode='colocate' (re-packed, tested).",
            stacklevel=3)
    patches = []
    if server_on_cpu:
        patches.append((vllm_generation, "VLLMClient", CPUWeightReloadVLLMClient))
    if colocate:
        patches.append((grpo_trainer, "VLLMGeneration", CPUReloadVLLMGeneration))
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, replacement in patches:
            setattr(module, name, replacement)
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
