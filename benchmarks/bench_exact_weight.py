"""Step-time cost of `ceu_exact_gradient=True` (CE-U-GRPO's negative tokens, CE-U-DPO's rejected tokens), flag off vs
on, interleaved in one process, 1 thread: a tiny Llama (vocab 320, hidden 64) and a larger vocabulary (32k, hidden 256).

A step is compute_loss + backward on one fixed batch (GRPO: 8 completions of up to 32 tokens from the tiny model,
ceu_full, about half of them negative; at 32k the completion ids are redrawn uniformly over the vocabulary. DPO: 4
pairs). Writes benchmarks/results/exact_weight.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import interleaved_times, random_dpo_batch  # noqa: E402

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, CEUGRPOConfig, CEUGRPOTrainer  # noqa: E402
from ceu_rl.tiny_models import save_tiny_model, tiny_llama_config  # noqa: E402

TEXTS = ["What is the capital of France? Paris is the capital.", "Name a colour of the sky. The sky is blue.",
         "What do bees make? Bees make honey.", "Which animal barks? A dog barks."]
PROMPTS = ["Question: What is the capital of France?\nAnswer:", "Question: Name a colour.\nAnswer:"]
SIZES = {"tiny_V320_H64": dict(vocab=None, hidden=64), "V32000_H256": dict(vocab=32000, hidden=256)}


def _models(root: Path) -> dict[str, Path]:
    tiny = save_tiny_model(root / "tiny", TEXTS * 8, vocab_size=320)
    paths = {"tiny_V320_H64": tiny}
    torch.manual_seed(0)
    big = LlamaForCausalLM(tiny_llama_config(32000, hidden_size=256, num_heads=4))
    big.save_pretrained(root / "big")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(root / "big")
    paths["V32000_H256"] = root / "big"
    return paths


def _reward(completions, **kwargs):
    return [float(len(c) % 7) for c in completions]


def _grpo(path, root, exact):
    args = CEUGRPOConfig(output_dir=str(root / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=8,
                         num_generations=4, max_completion_length=32, report_to=[], save_strategy="no",
                         gradient_checkpointing=False, seed=0, negative_objective="ceu_full", loss_type="dapo",
                         beta=0.0, ceu_exact_gradient=exact)
    torch.manual_seed(0)
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=_reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
                             processing_class=AutoTokenizer.from_pretrained(path))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _dpo(path, root, exact):
    args = CEUDPOConfig(output_dir=str(root / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                        report_to=[], save_strategy="no", gradient_checkpointing=False, beta=0.5, max_length=128,
                        loss_type="ceu", ceu_exact_gradient=exact)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    trainer = CEUDPOTrainer(model=model, ref_model=AutoModelForCausalLM.from_pretrained(path), args=args,
                            train_dataset=Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}),
                            processing_class=AutoTokenizer.from_pretrained(path))
    trainer.model.train()
    return trainer


def _step(trainer, batch):
    def run():
        trainer.compute_loss(trainer.model, batch).backward()
        trainer.model.zero_grad(set_to_none=True)
    return run


def _grpo_batch(tiny_trainer, vocab):
    batch = tiny_trainer._prepare_inputs(next(iter(tiny_trainer.get_train_dataloader())))
    if vocab is not None:
        gen = torch.Generator().manual_seed(0)
        batch["completion_ids"] = torch.randint(3, vocab, batch["completion_ids"].shape, generator=gen)
    return batch


def _dpo_batch(trainer, vocab):
    return random_dpo_batch(trainer, vocab or 320, pairs=4, prompt_len=24, completion_len=32, seed=0)


def _machine() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return {"cpu_model": cpu, "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "note": "shared machine (other jobs running): ratios are measured interleaved in one process"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "exact_weight.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-exact-weight-"))
    paths = _models(root)
    tiny_grpo = _grpo(paths["tiny_V320_H64"], root, False)
    grpo_template = _grpo_batch(tiny_grpo, None)
    results = {}
    for size, spec in SIZES.items():
        path = paths[size]
        grpo_batch = dict(grpo_template)
        if spec["vocab"] is not None:
            grpo_batch = _grpo_batch(tiny_grpo, spec["vocab"])
        negative = (grpo_batch["advantages"] < 0).unsqueeze(1) & grpo_batch["completion_mask"].bool()
        grpo = {exact: _grpo(path, root, exact) for exact in (False, True)}
        dpo = {exact: _dpo(path, root, exact) for exact in (False, True)}
        dpo_batch = _dpo_batch(dpo[False], spec["vocab"])
        steps = {"grpo_default": _step(grpo[False], grpo_batch), "grpo_exact": _step(grpo[True], grpo_batch),
                 "dpo_default": _step(dpo[False], dpo_batch), "dpo_exact": _step(dpo[True], dpo_batch)}
        times = interleaved_times(steps, args.rounds)
        results[size] = {
            "step_time_s": times,
            "grpo_ratio_exact_over_default": times["grpo_exact"]["median"] / times["grpo_default"]["median"],
            "dpo_ratio_exact_over_default": times["dpo_exact"]["median"] / times["dpo_default"]["median"],
            "grpo_tokens": int(grpo_batch["completion_mask"].sum()), "grpo_negative_tokens": int(negative.sum()),
            "dpo_rejected_tokens": int(dpo_batch["completion_mask"][dpo_batch["input_ids"].size(0) // 2:].sum()),
        }
        print(size, json.dumps(results[size], indent=1), flush=True)
    report = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_exact_weight.py " + " ".join(sys.argv[1:]),
              "what": __doc__.strip(), "models": {"tiny_V320_H64": "Llama 2 layers, hidden 64, vocab 320",
                                                  "V32000_H256": "Llama 2 layers, hidden 256, 4 heads, vocab 32000"},
              "machine": _machine(), "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: {r: v[r] for r in ("grpo_ratio_exact_over_default", "dpo_ratio_exact_over_default")}
                      for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
