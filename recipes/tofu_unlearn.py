"""Unlearn a TOFU-finetuned model on a forget split with any objective; evaluate before and after.

    python recipes/tofu_unlearn.py --config recipes/configs/tofu/ce_u.yaml [--any_field value ...] [--cpu]
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/tofu_unlearn.py --config ...

Writes <output_dir>/results.json (+ results.md, one Markdown row per run), the evaluations under
<output_dir>/eval_{before,after}/TOFU_{EVAL,SUMMARY}.json and the per-step logs to <output_dir>/log.jsonl (the
terminal shows one progress bar). `--cpu` runs a GPU config on a CPU; an output folder that holds an earlier run's
results needs `--overwrite_output_dir`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import (ModelArguments, check_output_dir, load_model_and_tokenizer, parse_recipe_args,  # noqa: E402
                         peft_config, retain_log_for_questions, write_results)

from ceu_rl.console import quiet_trainer  # noqa: E402

from ceu_rl import UnlearnConfig, UnlearnTrainer  # noqa: E402
from ceu_rl.tofu import FORGET_TO_RETAIN, load_idk, load_split  # noqa: E402
from ceu_rl.tofu.evaluate import evaluate_tofu, write_eval  # noqa: E402
from ceu_rl.tofu.formatting import record_max_new_tokens  # noqa: E402


@dataclass
class TofuArguments:
    forget_split: str = field(default="forget10", metadata={"help": "forget01, forget05 or forget10"})
    retain_split: str | None = field(default=None, metadata={"help": "default: the retain split that completes forget_split"})
    data_source: str | None = field(default=None, metadata={"help": "folder of TOFU JSON files, 'hub', or the shipped copy"})
    retain_log: str | None = field(default=None, metadata={"help": "retain model's TOFU_EVAL.json, for forget quality"})
    evaluate_before: bool = field(default=True, metadata={"help": "evaluate the model before unlearning too"})
    eval_batch_size: int = field(default=16, metadata={"help": "evaluation batch size"})
    eval_max_new_tokens: int = field(default=200, metadata={"help": "greedy tokens for ROUGE"})
    eval_questions: int | None = field(default=None, metadata={"help": "evaluate only the first n questions per set (smoke runs)"})


def _evaluate(model, tokenizer, tofu, cfg, retain_log, out):
    subsets = None
    if tofu.eval_questions:
        subsets = {k: range(tofu.eval_questions) for k in ("forget", "retain", "ra", "wf")}
    log = evaluate_tofu(model, tokenizer, tofu.forget_split, tofu.data_source, cfg.prompt_format, retain_log,
                        tofu.eval_max_new_tokens, tofu.eval_batch_size, cfg.max_length, subsets)
    return write_eval(log, out, retain_log)


def main():
    parser = TrlParser((ModelArguments, TofuArguments, UnlearnConfig))
    model_args, tofu, cfg, overwrite = parse_recipe_args(parser)
    check_output_dir(cfg.output_dir, overwrite, resume=bool(cfg.resume_from_checkpoint))
    if tofu.forget_split not in FORGET_TO_RETAIN:
        raise SystemExit(f"error: forget_split must be one of {sorted(FORGET_TO_RETAIN)}, got {tofu.forget_split!r}")
    model, tokenizer = load_model_and_tokenizer(model_args)
    forget = load_split(tofu.forget_split, tofu.data_source)
    retain = load_split(tofu.retain_split or FORGET_TO_RETAIN[tofu.forget_split], tofu.data_source)
    retain_log = json.loads(Path(tofu.retain_log).read_text()) if tofu.retain_log else None
    retain_log = retain_log_for_questions(retain_log, tofu.eval_questions)
    out = Path(cfg.output_dir)
    # the saved model records its evaluation length (and UnlearnTrainer its prompt format): the CLIs' defaults
    record_max_new_tokens(model, tofu.eval_max_new_tokens)

    trainer = UnlearnTrainer(model=model, args=cfg, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer, idk_answers=load_idk(tofu.data_source),
                             peft_config=peft_config(model_args))
    quiet_trainer(trainer, out / "log.jsonl", progress=not cfg.disable_tqdm)
    record = {"model": model_args.model_name_or_path, "objective": cfg.objective, "forget_split": tofu.forget_split}
    if tofu.evaluate_before and trainer.accelerator.is_main_process:
        record["before"] = _evaluate(trainer.model, tokenizer, tofu, cfg, retain_log, out / "eval_before")
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    trainer.save_model(str(out / "model"))
    if trainer.accelerator.is_main_process:
        (out / "world_size.json").write_text(json.dumps(trainer.accelerator.num_processes))
    record["train_log"] = [h for h in trainer.state.log_history if "loss" in h]
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        record["after"] = _evaluate(model, tokenizer, tofu, cfg, retain_log, out / "eval_after")
        print(write_results(out / "results.json", record))
        print(f"results: {out / 'results.json'} (row appended to {out / 'results.md'}), "
              f"per-step log: {out / 'log.jsonl'}")


if __name__ == "__main__":
    main()
