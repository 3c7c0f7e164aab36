"""GRPO or CE-U-GRPO with TRL on a verifiable-reward task (CEUGRPOTrainer is TRL's GRPOTrainer plus
negative_objective).

    python recipes/grpo.py --config recipes/configs/grpo/reverse_tiny.yaml [--negative_objective ceu_min] [--task sort]

Offline default (`model_name_or_path: tiny`): a task from `experiments/grpo_compare/tasks.py` ("reverse": "Reverse: a b c d =" ->
" d c b a"; "sort": "Sort: d a c b =" -> " ( a b c d )"), data generated locally, reward = fraction of positions
right (partial credit). A random tiny model earns nothing, so it is first supervised on a few examples. With a hub
model: `--model_name_or_path Qwen/Qwen2.5-0.5B-Instruct`. Per-step logs go to `<output_dir>/log.jsonl`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from trl import TrlParser

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]  # recipes; repo root
from experiments.grpo_compare.tasks import TASKS, make_dataset, positional_reward  # noqa: E402
from tofu_common import ModelArguments, peft_config  # noqa: E402

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer  # noqa: E402
from ceu_rl.console import quiet_trainer  # noqa: E402
from ceu_rl.tofu.finetune import warm_started_tiny_model  # noqa: E402


@dataclass
class TaskArguments:
    task: str = field(default="reverse", metadata={"help": f"one of {sorted(TASKS)} (experiments/grpo_compare/tasks.py)"})
    word_length: int = field(default=4, metadata={"help": "letters per prompt"})
    num_prompts: int = field(default=256, metadata={"help": "RL prompts"})
    sft_examples: int = field(default=128, metadata={"help": "tiny model: supervised examples before RL"})
    sft_epochs: int = field(default=12, metadata={"help": "tiny model: SFT epochs (reward ~0.4 after it: room for RL)"})


def build_tiny_model(out: Path, task: TaskArguments, seed: int) -> str:
    """A tiny Llama supervised on `task` (reused when `out`/tiny/warm exists)."""
    sft = make_dataset(task.task, task.sft_examples, task.word_length, seed + 1)
    texts = [f"{p} {t}" for p, t in zip(sft["prompt"], sft["target"])]
    qa = Dataset.from_dict({"question": sft["prompt"], "answer": sft["target"]})
    # "raw": the SFT prompt is exactly the RL prompt ("Reverse: a b c d =")
    return warm_started_tiny_model(out / "tiny", texts * 4, qa, epochs=task.sft_epochs, seed=seed,
                                   prompt_format="raw", max_length=64, vocab_size=64, hidden_size=64, num_layers=2)


def build_trainer(model_args: ModelArguments, task: TaskArguments, cfg: CEUGRPOConfig,
                  trainer_class=CEUGRPOTrainer) -> CEUGRPOTrainer:
    model_path = model_args.model_name_or_path
    if model_path == "tiny":
        model_path = build_tiny_model(Path(cfg.output_dir), task, cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = make_dataset(task.task, task.num_prompts, task.word_length, cfg.seed)
    trainer = trainer_class(model=AutoModelForCausalLM.from_pretrained(model_path), reward_funcs=positional_reward,
                            args=cfg, train_dataset=prompts, processing_class=tokenizer,
                            peft_config=peft_config(model_args))
    return quiet_trainer(trainer, Path(cfg.output_dir, "log.jsonl"))


@torch.no_grad()
def evaluate_reward(model, tokenizer, dataset: Dataset, cfg: CEUGRPOConfig, samples: int, seed: int) -> dict:
    """Mean reward on `dataset`: greedy, and `samples` completions per prompt sampled as in training (temperature,
    top-p, top-k of `cfg`), with a fixed torch seed so two models are scored on the same random stream."""
    model.eval()
    tokenizer.padding_side = "left"
    batch = tokenizer(list(dataset["prompt"]), return_tensors="pt", padding=True)
    common = {"max_new_tokens": cfg.max_completion_length, "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": tokenizer.eos_token_id}
    result = {}
    for name, gen in (("greedy", GenerationConfig(do_sample=False, **common)),
                      ("sampled", GenerationConfig(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                                   top_k=cfg.top_k or 0, num_return_sequences=samples, **common))):
        torch.manual_seed(seed)
        ids = model.generate(**batch, generation_config=gen)[:, batch["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        repeat = 1 if name == "greedy" else samples
        targets = [t for t in dataset["target"] for _ in range(repeat)]
        result[name] = sum(positional_reward(texts, targets)) / len(texts)
    return result


def main(argv=None):
    model_args, task, cfg = TrlParser((ModelArguments, TaskArguments, CEUGRPOConfig)).parse_args_and_config(argv)
    trainer = build_trainer(model_args, task, cfg)
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    Path(cfg.output_dir, "log_history.json").write_text(json.dumps(history, indent=2))
    return history


if __name__ == "__main__":
    main()
