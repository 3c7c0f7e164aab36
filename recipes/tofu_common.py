"""Shared pieces of the recipes: argument parsing (`--cpu`, `--overwrite_output_dir`), model loading (hub id or local
path, optional LoRA), result writing."""

from __future__ import annotations

import json
import sys
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


# What a GPU-default config (open-unlearning's bf16 + paged AdamW) needs on a machine without a GPU; `--cpu` adds them.
CPU_FLAGS = ("--use_cpu", "true", "--bf16", "false", "--optim", "adamw_torch")
# Files an earlier run leaves in its output folder; a new run there would overwrite or mix with them.
RESULT_FILES = ("results.json", "log_history.json", "log.jsonl", "model.safetensors", "model", "eval_after")


def quiet_library_bars() -> None:
    """No per-dataset-map and weight-loading bars from datasets/transformers: the recipe's one bar is the trainer's."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def parse_recipe_args(parser, argv=None):
    """`parser.parse_args_and_config` plus two recipe switches, read before the dataclasses are built:
    `--cpu` (appends CPU_FLAGS) and `--overwrite_output_dir` (checked by `check_output_dir`). Returns
    (parsed dataclasses..., overwrite_output_dir). A GPU setting on a machine without a GPU stops with the flags to add
    instead of transformers' "Your setup doesn't support bf16/gpu" traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_library_bars()
    overwrite = "--overwrite_output_dir" in argv
    argv = [a for a in argv if a != "--overwrite_output_dir"]
    if "--cpu" in argv:
        argv = [a for a in argv if a != "--cpu"] + list(CPU_FLAGS)
    hint = (f"this config is set up for GPUs and this machine has none: add --cpu (it sets {' '.join(CPU_FLAGS)}), "
            "or set those flags yourself")
    try:
        parsed = parser.parse_args_and_config(argv)
    except ValueError as error:
        if "bf16/gpu" in str(error) or "requires a GPU" in str(error):
            raise SystemExit(f"error: {hint} (transformers: {error})") from None
        raise
    train_args = next((a for a in parsed if hasattr(a, "optim")), None)
    if train_args is not None and not torch.cuda.is_available():
        optim = str(getattr(train_args.optim, "value", train_args.optim))
        if "paged" in optim or "8bit" in optim:  # bitsandbytes optimizers need CUDA
            raise SystemExit(f"error: {hint} (optim={optim} needs a CUDA GPU)")
    return (*parsed, overwrite)


def check_output_dir(output_dir: str | Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse to run into a folder that holds an earlier run's results, unless told to overwrite (or resuming)."""
    out = Path(output_dir)
    found = [name for name in RESULT_FILES if (out / name).exists()]
    if found and not overwrite and not resume:
        raise SystemExit(f"error: {out} already holds results of an earlier run ({', '.join(found)}): choose another "
                         "--output_dir, or pass --overwrite_output_dir to replace them.")


def retain_log_for_questions(retain_log: dict | None, n_questions: int | None) -> dict | None:
    """The retain log restricted to the first n forget questions, when only those are evaluated (`eval_questions`):
    forget quality then compares the same questions (it is a smoke-run number, n being small)."""
    if retain_log is None or not n_questions:
        return retain_log
    key = "forget_truth_ratio"
    values = retain_log[key]["value_by_index"]
    return {**retain_log, key: {**retain_log[key], "value_by_index": {str(i): values[str(i)] for i in range(n_questions)
                                                                      if str(i) in values}}}


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
