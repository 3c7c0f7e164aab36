"""vLLM server mode on CPU: TRL's weight sync streams tensors over NCCL, which needs CUDA. On CPU the trainer instead
writes the weights to a folder and asks the server to reload them (`/collective_rpc` `reload_weights`, a vLLM dev
endpoint: start the server with VLLM_SERVER_DEV_MODE=1). Generation and everything else is TRL's client. Used only
when the trainer runs on CPU; GPU users get TRL's NCCL path unchanged."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from trl.generation import vllm_generation
from trl.generation.vllm_client import VLLMClient


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


@contextlib.contextmanager
def cpu_server_client(enabled: bool):
    """While building the trainer, make TRL's VLLMGeneration create the CPU client instead of its NCCL one."""
    if not enabled:
        yield
        return
    original = vllm_generation.VLLMClient
    vllm_generation.VLLMClient = CPUWeightReloadVLLMClient
    try:
        yield
    finally:
        vllm_generation.VLLMClient = original
