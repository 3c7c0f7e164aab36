"""Shared pieces of the TOFU recipes: model loading (hub id or local path, optional LoRA) and result writing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "hub id (e.g. open-unlearning/tofu_Llama-2-7b-chat-hf_full) or local path"})
    dtype: str = field(default="auto", metadata={"help": "auto, bfloat16, float16 or float32"})
    use_peft: bool = field(default=False, metadata={"help": "train a LoRA adapter (PEFT) instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "modules LoRA adapts"})


def load_model_and_tokenizer(args: ModelArguments):
    if not args.model_name_or_path:
        raise SystemExit("error: --model_name_or_path is required (a hub id or a local folder)")
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=dtype)
    return model, tokenizer


def peft_config(args: ModelArguments):
    if not args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=args.lora_target_modules,
                      task_type="CAUSAL_LM")


def write_results(path: str | Path, record: dict) -> str:
    """Write the run's record (JSON) and append its Markdown row (model, objective, the `after` summary) beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    after = record["after"]
    fq = after.get("forget_quality")
    row = (f"| {record['model']} | {record['objective']} | {'n/a' if fq is None else f'{fq:.3g}'} | "
           f"{after['model_utility']:.3f} | {after['forget_truth_ratio']:.3f} | {after['forget_Q_A_ROUGE']:.3f} |")
    md = path.with_suffix(".md")
    if not md.exists():
        md.write_text("| model | objective | forget quality | model utility | forget truth ratio | forget ROUGE-L |\n"
                      "|---|---|---|---|---|---|\n")
    with md.open("a") as f:
        f.write(row + "\n")
    return row
