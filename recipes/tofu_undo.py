"""UNDO after a TOFU unlearning run: noise a copy of the unlearned model, distil the unlearned model into it on retain
(and general) questions, evaluate the student (Lee et al., arXiv 2506.06278; docs/undo/README.md).

    python recipes/tofu_undo.py --config recipes/configs/tofu/undo.yaml --model_name_or_path UNLEARNED [--noise_alpha 0.8]
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/tofu_undo.py --config ...

`--model_name_or_path` is the unlearned model (e.g. tofu_unlearn.py's <output_dir>/model): it is the teacher, and its
noised copy the student. Writes the student to <output_dir>/model, <output_dir>/results.json (+ results.md) with the
evaluation after distillation (<output_dir>/eval_after/TOFU_{EVAL,SUMMARY}.json; and before it, of the teacher, with
`--evaluate_before true`) and the per-step log to <output_dir>/log.jsonl. `--cpu` and `--overwrite_output_dir` as
in tofu_unlearn.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

sys.path.insert(0, str(Path(__file__).parent))
from tofu_common import (ModelArguments, check_output_dir, load_model_and_tokenizer, parse_recipe_args,  # noqa: E402
                         retain_log_for_questions, write_results)

from ceu_rl.console import quiet_trainer  # noqa: E402
from ceu_rl.tofu import FORGET_TO_RETAIN, load_split  # noqa: E402
from ceu_rl.tofu.evaluate import evaluate_tofu, write_eval  # noqa: E402
from ceu_rl.unlearn import UndoConfig, UndoTrainer  # noqa: E402


@dataclass
class UndoArguments:
    forget_split: str = field(default="forget10", metadata={"help": "the split that was unlearned (evaluation)"})
    retain_split: str | None = field(default=None, metadata={"help": "distillation data; default: the retain split "
                                                                      "that completes forget_split"})
    general_splits: list[str] = field(default_factory=list, metadata={"help": "TOFU splits added to the distillation "
                                                                                "data, e.g. real_authors_perturbed"})
    data_source: str | None = field(default=None, metadata={"help": "folder of TOFU JSON files, 'hub', or the shipped copy"})
    retain_log: str | None = field(default=None, metadata={"help": "retain model's TOFU_EVAL.json, for forget quality"})
    evaluate_before: bool = field(default=False, metadata={"help": "evaluate the teacher (the unlearned model) too"})
    eval_batch_size: int = field(default=16, metadata={"help": "evaluation batch size"})
    eval_max_new_tokens: int = field(default=200, metadata={"help": "greedy tokens for ROUGE"})
    eval_questions: int | None = field(default=None, metadata={"help": "evaluate only the first n questions per set (smoke runs)"})


def distillation_data(args: UndoArguments):
    """The retain split, with the general splits' question/answer rows appended."""
    from datasets import concatenate_datasets

    retain = load_split(args.retain_split or FORGET_TO_RETAIN[args.forget_split], args.data_source)
    parts = [retain.select_columns(["question", "answer"])]
    parts += [load_split(name, args.data_source).select_columns(["question", "answer"]) for name in args.general_splits]
    return concatenate_datasets(parts)


def _evaluate(model, tokenizer, undo, cfg, retain_log, out):
    subsets = None
    if undo.eval_questions:
        subsets = {k: range(undo.eval_questions) for k in ("forget", "retain", "ra", "wf")}
    log = evaluate_tofu(model, tokenizer, undo.forget_split, undo.data_source, cfg.prompt_format, retain_log,
                        undo.eval_max_new_tokens, undo.eval_batch_size, cfg.max_length, subsets)
    return write_eval(log, out, retain_log)


def main():
    parser = TrlParser((ModelArguments, UndoArguments, UndoConfig))
    model_args, undo, cfg, overwrite = parse_recipe_args(parser)
    check_output_dir(cfg.output_dir, overwrite, resume=bool(cfg.resume_from_checkpoint))
    if undo.forget_split not in FORGET_TO_RETAIN:
        raise SystemExit(f"error: forget_split must be one of {sorted(FORGET_TO_RETAIN)}, got {undo.forget_split!r}")
    if model_args.use_peft:
        raise SystemExit("error: UNDO noises and trains every weight of the student: drop --use_peft")
    model, tokenizer = load_model_and_tokenizer(model_args)
    retain_log = json.loads(Path(undo.retain_log).read_text()) if undo.retain_log else None
    retain_log = retain_log_for_questions(retain_log, undo.eval_questions)
    out = Path(cfg.output_dir)
    record = {"model": model_args.model_name_or_path, "objective": f"undo(alpha={cfg.noise_alpha:g})",
              "forget_split": undo.forget_split, "noise_alpha": cfg.noise_alpha, "noise_init": cfg.noise_init}
    if undo.evaluate_before:  # the teacher, before its copy is noised
        record["before"] = _evaluate(model, tokenizer, undo, cfg, retain_log, out / "eval_before")
    trainer = UndoTrainer(model=model, args=cfg, train_dataset=distillation_data(undo), processing_class=tokenizer)
    quiet_trainer(trainer, out / "log.jsonl", progress=not cfg.disable_tqdm)
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    trainer.save_model(str(out / "model"))
    record["train_log"] = [h for h in trainer.state.log_history if "loss" in h]
    record["distilled_tokens"] = trainer.distilled_tokens  # this process's
    if trainer.accelerator.is_main_process:
        student = trainer.accelerator.unwrap_model(trainer.model)
        record["after"] = _evaluate(student, tokenizer, undo, cfg, retain_log, out / "eval_after")
        print(write_results(out / "results.json", record))
        print(f"results: {out / 'results.json'} (row appended to {out / 'results.md'}), "
              f"per-step log: {out / 'log.jsonl'}")


if __name__ == "__main__":
    main()
