"""FSDP2 through accelerate on 2 CPU processes (gloo): UnlearnTrainer (CE-U, through linear_ce_u_loss with a sharded
LM head) and CEUDPOTrainer give the same per-step losses as one process at the same global batch.

accelerate 1.15 never selects FSDP on CPU (its FSDP branch is for GPU-type backends; on CPU `--use_fsdp` silently
runs DDP), so the 2-process run applies the test-only shim `sharded_run.allow_fsdp_on_cpu`; the test checks both
that accelerate alone chose MULTI_CPU and that the model really was sharded (each rank holds half the elements)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ceu_rl.tiny_models import save_tiny_model

from .sharded_run import FORGET, PAIRS, run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("sharded_run.py")
FSDP2_FLAGS = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
               "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--fsdp_reshard_after_forward", "true",
               "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_cpu_ram_efficient_loading", "false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp2_two_processes_equal_one_process(tmp_path):
    texts = [*FORGET["question"], *FORGET["answer"], *PAIRS["prompt"], *PAIRS["chosen"], *PAIRS["rejected"]]
    model = str(save_tiny_model(tmp_path / "model", texts * 4, vocab_size=300))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *FSDP2_FLAGS, "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(SCRIPT), "--model", model, "--trainers", "unlearn", "dpo", "--per_device", "2", "--steps", "3",
           "--out", str(tmp_path / "two"), "--fsdp_on_cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "runs.json").read_text())
    for kind in ("unlearn", "dpo"):
        one = run(kind, per_device=4, steps=3, model_path=model, out=str(tmp_path / "one" / kind))
        sharded = two[kind]
        assert one["world_size"] == 1 and sharded["world_size"] == 2
        assert sharded["accelerate_chose"][0] == "DistributedType.MULTI_CPU"  # accelerate alone: DDP, not FSDP
        assert sharded["fsdp_enabled"] and sharded["fsdp_version"] == 2
        assert sharded["local_fraction"] == pytest.approx(0.5, abs=0.01)  # really sharded: half per rank
        if kind == "unlearn":
            assert one["linear_ce_u"] and sharded["linear_ce_u"]
        assert len(one["losses"]) == len(sharded["losses"]) == 3
        # float32 sums in another order (per-rank means, then the mean over ranks): 1e-5 relative
        assert sharded["losses"] == pytest.approx(one["losses"], rel=1e-5), kind
        assert len(set(one["losses"])) == 3  # the steps changed the model
