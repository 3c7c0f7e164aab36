"""RL-style TOFU unlearning: GRPO (negative_objective pg) or CE-U-GRPO (ceu) on the forget questions, with a
verifiable reward that penalises reproducing the forget answer (1 - ROUGE-L recall). Evaluates before and after like
tofu_unlearn.py and writes the same results files.

    python recipes/tofu_grpo.py --config recipes/configs/tofu/grpo.yaml [--negative_objective pg ...] [--cpu]

Per-step logs go to <output_dir>/log.jsonl (the terminal shows one progress bar); `--cpu` and
`--overwrite_output_dir` as in tofu_unlearn.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import (ModelArguments, check_output_dir, load_model_and_tokenizer, parse_recipe_args,  # noqa: E402
                         peft_config, retain_log_for_questions, write_results)
from tofu_unlearn import TofuArguments, _evaluate  # noqa: E402

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer  # noqa: E402
from ceu_rl.console import quiet_trainer  # noqa: E402
from ceu_rl.tofu import FORGET_TO_RETAIN, load_split  # noqa: E402
from ceu_rl.tofu.formatting import format_prompt, resolve_prompt_format  # noqa: E402
from ceu_rl.tofu.rewards import forget_answer_penalty  # noqa: E402


@dataclass
class PromptArguments:
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain (prompts and evaluation)"})
    max_length: int = field(default=512, metadata={"help": "evaluation: max prompt + answer tokens"})


def main(argv=None):
    parser = TrlParser((ModelArguments, TofuArguments, PromptArguments, CEUGRPOConfig))
    model_args, tofu, prompt_args, cfg, overwrite = parse_recipe_args(parser, argv)
    check_output_dir(cfg.output_dir, overwrite, resume=bool(cfg.resume_from_checkpoint))
    if tofu.forget_split not in FORGET_TO_RETAIN:
        raise SystemExit(f"error: forget_split must be one of {sorted(FORGET_TO_RETAIN)}, got {tofu.forget_split!r}")
    model, tokenizer = load_model_and_tokenizer(model_args)
    fmt = resolve_prompt_format(prompt_args.prompt_format, tokenizer, model_args.model_name_or_path)
    forget = load_split(tofu.forget_split, tofu.data_source)
    prompts = Dataset.from_dict({"prompt": [format_prompt(q, tokenizer, fmt) for q in forget["question"]],
                                 "answer": list(forget["answer"])})
    retain_log = json.loads(Path(tofu.retain_log).read_text()) if tofu.retain_log else None
    retain_log = retain_log_for_questions(retain_log, tofu.eval_questions)
    out = Path(cfg.output_dir)
    eval_args = PromptArguments(fmt, prompt_args.max_length)
    trainer = CEUGRPOTrainer(model=model, reward_funcs=forget_answer_penalty, args=cfg, train_dataset=prompts,
                             processing_class=tokenizer, peft_config=peft_config(model_args))
    quiet_trainer(trainer, out / "log.jsonl", progress=not cfg.disable_tqdm)
    variant = cfg.negative_objective_name  # aliases resolved: "ceu" -> "ceu_full"
    name = {"pg": "grpo", "ceu_full": "ce_u_grpo"}.get(variant, f"ce_u_grpo_{variant.removeprefix('ceu_')}")
    record = {"model": model_args.model_name_or_path, "objective": name, "forget_split": tofu.forget_split}
    if tofu.evaluate_before and trainer.accelerator.is_main_process:
        record["before"] = _evaluate(trainer.model, tokenizer, tofu, eval_args, retain_log, out / "eval_before")
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    record["train_log"] = [h for h in trainer.state.log_history if "loss" in h]
    if trainer.accelerator.is_main_process:
        record["after"] = _evaluate(trainer.accelerator.unwrap_model(trainer.model), tokenizer, tofu,
                                            eval_args, retain_log, out / "eval_after")
        print(write_results(out / "results.json", record))
        print(f"results: {out / 'results.json'} (row appended to {out / 'results.md'}), "
              f"per-step log: {out / 'log.jsonl'}")


if __name__ == "__main__":
    main()
