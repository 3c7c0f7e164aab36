"""Finetune a model on a TOFU split (answer tokens only): `full` gives the model to unlearn, `retainXX` the retain
reference for forget quality.

    python recipes/tofu_finetune.py --config recipes/configs/tofu/finetune.yaml [--split retain90 ...]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments
from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import ModelArguments, load_model_and_tokenizer, peft_config  # noqa: E402

from ceu_rl.tofu import load_split  # noqa: E402
from ceu_rl.tofu.finetune import finetune  # noqa: E402


@dataclass
class FinetuneArguments:
    split: str = field(default="full", metadata={"help": "full, retain90, retain95 or retain99"})
    data_source: str | None = field(default=None, metadata={"help": "folder of TOFU JSON files, 'hub', or the shipped copy"})
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain"})
    max_length: int = field(default=512, metadata={"help": "max prompt + answer tokens"})


def main():
    model_args, ft, args = TrlParser((ModelArguments, FinetuneArguments, TrainingArguments)).parse_args_and_config()
    model, tokenizer = load_model_and_tokenizer(model_args)
    lora = peft_config(model_args)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    trainer = finetune(model, tokenizer, load_split(ft.split, ft.data_source), args, ft.prompt_format, ft.max_length)
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)


if __name__ == "__main__":
    main()
