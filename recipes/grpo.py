"""GRPO or CE-U-GRPO with TRL on a verifiable-reward task (CEUGRPOTrainer is TRL's GRPOTrainer plus
negative_objective).

    python recipes/grpo.py --config recipes/configs/grpo/reverse_tiny.yaml [--negative_objective pg ...]

Offline default (`model_name_or_path: tiny`): reverse a short string of letters ("Reverse: abcd =" -> " dcba"),
data generated locally, reward = fraction of positions right (partial credit). A random tiny model earns nothing,
so it is first supervised on a few reversals. With a hub model: `--model_name_or_path Qwen/Qwen2.5-0.5B-Instruct`.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import ModelArguments, peft_config  # noqa: E402

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer  # noqa: E402
from ceu_rl.tofu.finetune import warm_started_tiny_model  # noqa: E402

LETTERS = "abcdef"


@dataclass
class TaskArguments:
    word_length: int = field(default=4, metadata={"help": "letters per word to reverse"})
    num_prompts: int = field(default=256, metadata={"help": "RL prompts"})
    sft_examples: int = field(default=128, metadata={"help": "tiny model: supervised reversals before RL"})
    sft_epochs: int = field(default=12, metadata={"help": "tiny model: SFT epochs (reward ~0.4 after it: room for RL)"})


def _word(rng, n):
    return " ".join(rng.choice(LETTERS) for _ in range(n))  # spaced letters: one token each


def reverse_reward(completions, target, **kwargs):
    """Fraction of target letters in the right position (partial credit); verifiable."""
    scores = []
    for completion, t in zip(completions, target):
        got, want = completion.split(), t.split()
        scores.append(sum(g == w for g, w in zip(got, want)) / len(want))
    return scores


def make_dataset(n, length, seed):
    rng = random.Random(seed)
    words = [_word(rng, length) for _ in range(n)]
    return Dataset.from_dict({"prompt": [f"Reverse: {w} =" for w in words],
                              "target": [" ".join(reversed(w.split())) for w in words]})


def build_tiny_model(out: Path, task: TaskArguments, seed: int) -> str:
    sft = make_dataset(task.sft_examples, task.word_length, seed + 1)
    texts = [f"{p} {t}" for p, t in zip(sft["prompt"], sft["target"])]
    qa = Dataset.from_dict({"question": sft["prompt"], "answer": sft["target"]})
    # "raw": the SFT prompt is exactly the RL prompt ("Reverse: a b c d =")
    return warm_started_tiny_model(out / "tiny", texts * 4, qa, epochs=task.sft_epochs, seed=seed,
                                   prompt_format="raw", max_length=64, vocab_size=64, hidden_size=64, num_layers=2)


def main(argv=None):
    model_args, task, cfg = TrlParser((ModelArguments, TaskArguments, CEUGRPOConfig)).parse_args_and_config(argv)
    model_path = model_args.model_name_or_path
    if model_path == "tiny":
        model_path = build_tiny_model(Path(cfg.output_dir), task, cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), reward_funcs=reverse_reward,
                             args=cfg, train_dataset=make_dataset(task.num_prompts, task.word_length, cfg.seed),
                             processing_class=tokenizer, peft_config=peft_config(model_args))
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    Path(cfg.output_dir, "log_history.json").write_text(json.dumps(history, indent=2))
    return history


if __name__ == "__main__":
    main()
