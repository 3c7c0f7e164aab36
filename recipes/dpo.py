"""DPO or CE-U-DPO with TRL (CEUDPOTrainer is TRL's DPOTrainer plus loss_type="ceu" and the DPO-Positive baseline
loss_type="dpop").

    python recipes/dpo.py --config recipes/configs/dpo/ceu_tiny.yaml [--any_field value ...]

Configs: ceu_tiny (CE-U-DPO), ceu_prefix_tiny (CE-U only after the prefix the rejected answer shares with the chosen
one), sigmoid_tiny (TRL's DPO), dpop_tiny (DPO-Positive); any TRL `loss_type` works with `--loss_type`.

Offline default (`model_name_or_path: tiny`, `dataset_name: tofu_perturbed`): a tiny Llama built locally and briefly
supervised on both answers (so that the rejected answers start likely, as after SFT), and a preference dataset made
from TOFU (chosen: the true answer; rejected: a perturbed answer). With a hub model and dataset it is TRL's usual
script: `--model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized`.
Per-step logs go to <output_dir>/log.jsonl (the terminal shows one progress bar) and log_history.json; `--cpu` and
`--overwrite_output_dir` as in tofu_unlearn.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import ModelArguments, check_output_dir, parse_recipe_args, peft_config  # noqa: E402

from ceu_rl import CEUDPOConfig, CEUDPOTrainer  # noqa: E402
from ceu_rl.console import quiet_trainer  # noqa: E402
from ceu_rl.tofu import load_split  # noqa: E402
from ceu_rl.tofu.finetune import warm_started_tiny_model  # noqa: E402


@dataclass
class DataArguments:
    dataset_name: str = field(default="tofu_perturbed", metadata={"help": "'tofu_perturbed' (local) or a hub dataset"})
    dataset_split: str = field(default="train", metadata={"help": "hub dataset split"})
    num_pairs: int = field(default=64, metadata={"help": "tofu_perturbed: number of preference pairs"})
    tiny_sft_epochs: int = field(default=8, metadata={"help": "tiny model: SFT epochs on chosen + rejected first"})


def tofu_preference_dataset(num_pairs: int) -> Dataset:
    rows = load_split("forget10_perturbed").select(range(num_pairs))
    return Dataset.from_dict({
        "prompt": [f"Question: {q}\nAnswer:" for q in rows["question"]],
        "chosen": [" " + a for a in rows["answer"]],
        "rejected": [" " + p[0] for p in rows["perturbed_answer"]],
    })


def build_tiny_model(out: Path, dataset: Dataset, sft_epochs: int, seed: int) -> str:
    """Tiny Llama, supervised on both completions so that DPO starts from likely rejected answers."""
    texts = [*dataset["prompt"], *dataset["chosen"], *dataset["rejected"]]
    both = Dataset.from_dict({"question": [p[len("Question: "):-len("\nAnswer:")] for p in dataset["prompt"]] * 2,
                              "answer": [*dataset["chosen"], *dataset["rejected"]]})
    return warm_started_tiny_model(out / "tiny", texts, both, epochs=sft_epochs, seed=seed, vocab_size=512,
                                   hidden_size=64, num_layers=2)


def main(argv=None):
    parser = TrlParser((ModelArguments, DataArguments, CEUDPOConfig))
    model_args, data_args, cfg, overwrite = parse_recipe_args(parser, argv)
    check_output_dir(cfg.output_dir, overwrite, resume=bool(cfg.resume_from_checkpoint))
    if data_args.dataset_name == "tofu_perturbed":
        dataset = tofu_preference_dataset(data_args.num_pairs)
    else:
        dataset = load_dataset(data_args.dataset_name, split=data_args.dataset_split)
    model_path = model_args.model_name_or_path
    if model_path == "tiny":
        model_path = build_tiny_model(Path(cfg.output_dir), dataset, data_args.tiny_sft_epochs, cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    trainer = CEUDPOTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config(model_args))
    quiet_trainer(trainer, Path(cfg.output_dir, "log.jsonl"), progress=not cfg.disable_tqdm)
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    trainer.save_model(cfg.output_dir)
    history = [h for h in trainer.state.log_history if "loss" in h]
    if trainer.accelerator.is_main_process:
        Path(cfg.output_dir, "log_history.json").write_text(json.dumps(history, indent=2))
        print(f"model: {cfg.output_dir}, losses: {Path(cfg.output_dir, 'log_history.json')}")
    return history


if __name__ == "__main__":
    main()
