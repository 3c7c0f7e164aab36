"""RL-style TOFU unlearning: GRPO (negative_objective pg) or CE-U-GRPO (ceu) on the forget questions, with a
verifiable reward that penalises reproducing the forget answer (1 - ROUGE-L recall). Evaluates before and after like
tofu_unlearn.py and writes the same results files.

    python recipes/tofu_grpo.py --config recipes/configs/tofu/grpo.yaml [--negative_objective pg ...] [--cpu]

Anchors (what keeps the rest of the model in place while the forget answers are pushed down; docs/mini_tofu_rl):
`--beta 0.1 --use_bias_correction_kl false` (KL to the initial model on the sampled tokens) and/or
`--retain_coef 1.0` (GradDiff's retain NLL on `retain_batch_size` retain pairs per step, from `retain_split`,
default the split that completes `forget_split`). In the mini-TOFU study the retain anchor was the one that worked:
with it CE-U-GRPO (ceu_full, lr 8e-4) forgot more than GRPO at >= 0.9x utility in every seed; without an anchor or
with the KL anchor it lost much of the model's utility at that lr. The mini-TOFU-scale run (a model built by
`python -m experiments.mini_tofu`; the study's best form):

    python recipes/tofu_grpo.py --config recipes/configs/tofu/grpo_mini_tofu.yaml --cpu

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

from ceu_rl import CEUGRPOConfig  # noqa: E402
from ceu_rl.console import quiet_trainer  # noqa: E402
from ceu_rl.tofu import FORGET_TO_RETAIN, load_split  # noqa: E402
from ceu_rl.tofu.formatting import (format_prompt, record_max_new_tokens, record_prompt_format,  # noqa: E402
                                    resolve_prompt_format)
from ceu_rl.tofu.rewards import forget_answer_penalty  # noqa: E402
from ceu_rl.unlearn.rl_unlearn_trainer import RetainAnchoredGRPOTrainer  # noqa: E402


@dataclass
class PromptArguments:
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain (prompts and evaluation)"})
    max_length: int = field(default=512, metadata={"help": "evaluation (and retain pairs): max prompt + answer tokens"})


@dataclass
class AnchorArguments:
    """The retain anchor (GradDiff's retain term, Liu et al. arXiv:2203.12817; the TOFU baseline arXiv:2401.06121).
    The KL anchor is CEUGRPOConfig's `beta` with `use_bias_correction_kl=False`."""

    retain_coef: float = field(default=0.0, metadata={"help": "weight of the retain NLL added to the RL loss (0: off)"})
    retain_batch_size: int = field(default=16, metadata={"help": "retain question/answer pairs per step"})
    retain_questions: int | None = field(default=None, metadata={
        "help": "use only the first n retain questions (mini-TOFU: 120, the 6 authors its models learned)"})


def main(argv=None):
    parser = TrlParser((ModelArguments, TofuArguments, PromptArguments, AnchorArguments, CEUGRPOConfig))
    model_args, tofu, prompt_args, anchor, cfg, overwrite = parse_recipe_args(parser, argv)
    check_output_dir(cfg.output_dir, overwrite, resume=bool(cfg.resume_from_checkpoint))
    if tofu.forget_split not in FORGET_TO_RETAIN:
        raise SystemExit(f"error: forget_split must be one of {sorted(FORGET_TO_RETAIN)}, got {tofu.forget_split!r}")
    model, tokenizer = load_model_and_tokenizer(model_args)
    fmt = resolve_prompt_format(prompt_args.prompt_format, tokenizer, model_args.model_name_or_path, model=model)
    record_prompt_format(model, fmt)  # the prompts' format, in the config of every checkpoint (what "auto" reads)
    record_max_new_tokens(model, tofu.eval_max_new_tokens)  # and the evaluation's length (the CLIs' default)
    forget = load_split(tofu.forget_split, tofu.data_source)
    prompts = Dataset.from_dict({"prompt": [format_prompt(q, tokenizer, fmt) for q in forget["question"]],
                                 "answer": list(forget["answer"])})
    retain_log = json.loads(Path(tofu.retain_log).read_text()) if tofu.retain_log else None
    retain_log = retain_log_for_questions(retain_log, tofu.eval_questions)
    out = Path(cfg.output_dir)
    eval_args = PromptArguments(fmt, prompt_args.max_length)
    retain = None
    if anchor.retain_coef > 0:
        retain = load_split(tofu.retain_split or FORGET_TO_RETAIN[tofu.forget_split], tofu.data_source)
        if anchor.retain_questions:
            retain = retain.select(range(min(anchor.retain_questions, len(retain))))
    trainer = RetainAnchoredGRPOTrainer(model=model, reward_funcs=forget_answer_penalty, args=cfg,
                                        train_dataset=prompts, processing_class=tokenizer,
                                        peft_config=peft_config(model_args), retain_dataset=retain,
                                        retain_coef=anchor.retain_coef, retain_batch_size=anchor.retain_batch_size,
                                        prompt_format=fmt, max_length=prompt_args.max_length)
    quiet_trainer(trainer, out / "log.jsonl", progress=not cfg.disable_tqdm)
    variant = cfg.negative_objective_name  # aliases resolved: "ceu" -> "ceu_full"
    name = {"pg": "grpo", "ceu_full": "ce_u_grpo"}.get(variant, f"ce_u_grpo_{variant.removeprefix('ceu_')}")
    name += "_kl" * (cfg.beta > 0) + "_retain" * (anchor.retain_coef > 0)
    record = {"model": model_args.model_name_or_path, "objective": name, "forget_split": tofu.forget_split,
              "beta": cfg.beta, "retain_coef": anchor.retain_coef}
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
