"""Finetune a model on a TOFU split (answer tokens only): `full` gives the model to unlearn, `retainXX` the retain
reference for forget quality.

    python recipes/tofu_finetune.py --config recipes/configs/tofu/finetune.yaml [--split retain90 ...] [--cpu]

Per-step logs go to <output_dir>/log.jsonl (the terminal shows one progress bar); `--cpu` and
`--overwrite_output_dir` as in tofu_unlearn.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments
from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import (ModelArguments, check_output_dir, load_model_and_tokenizer, parse_recipe_args,  # noqa: E402
                         peft_config)

from ceu_rl.tofu import load_split  # noqa: E402
from ceu_rl.tofu.finetune import finetune  # noqa: E402


@dataclass
class FinetuneArguments:
    split: str = field(default="full", metadata={"help": "full, retain90, retain95 or retain99"})
    data_source: str | None = field(default=None, metadata={"help": "folder of TOFU JSON files, 'hub', or the shipped copy"})
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain"})
    max_length: int = field(default=512, metadata={"help": "max prompt + answer tokens"})


def main():
    parser = TrlParser((ModelArguments, FinetuneArguments, TrainingArguments))
    model_args, ft, args, overwrite = parse_recipe_args(parser)
    check_output_dir(args.output_dir, overwrite, resume=bool(args.resume_from_checkpoint))
    model, tokenizer = load_model_and_tokenizer(model_args)
    lora = peft_config(model_args)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    trainer = finetune(model, tokenizer, load_split(ft.split, ft.data_source), args, ft.prompt_format, ft.max_length,
                       log_path=Path(args.output_dir, "log.jsonl"))
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    if trainer.accelerator.is_main_process:
        print(f"model: {args.output_dir}, per-step log: {Path(args.output_dir, 'log.jsonl')}")


if __name__ == "__main__":
    main()
