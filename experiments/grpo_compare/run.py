"""GRPO (negative_objective="pg") vs every CE-U-GRPO variant, over tasks x learning rates x seeds, one run at a time.

    python -m experiments.grpo_compare [--out outputs/grpo_compare] [--tasks reverse sort]
        [--learning_rates 5e-4 2.5e-4 1e-4] [--seeds 0 1 2 3 4] [--objectives pg ceu_min ...]
        (default objectives: every negative_objective CEUGRPOConfig accepts)

Per seed, one tiny model is warm-started per task and shared by every objective and learning rate (a paired
comparison). Each run writes runs/<task>/lr<lr>/<objective>/seed<seed>.json as soon as it ends (an interrupted
sweep resumes where it stopped) and its per-step logs to .../seed<seed>/log.jsonl; `--aggregate_only` rebuilds
summary.json and grpo_compare.png from the finished runs.

Measured per run: reward of the warm-started and the final model on 64 held-out prompts (8 samples each, drawn as
in training, fixed seed; and greedy); per-step training reward, entropy, gradient norm and the mean p of SHARED
tokens. A token of a negative-advantage completion is shared when a positive-advantage completion of the same
prompt has the same tokens up to and including it (identical prefix, hence the same context and the same p): the
tokens on which GRPO's positive and negative pushes meet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging
from trl import TrlParser

# the recipes (grpo.py builds the tiny model and the trainer) and the repo root
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "recipes"), str(ROOT)]
import grpo  # noqa: E402
from experiments.grpo_compare.report import STEP_KEYS, derived, write_report  # noqa: E402
from experiments.grpo_compare.tasks import TASKS, make_dataset  # noqa: E402
from tofu_common import ModelArguments  # noqa: E402

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer  # noqa: E402
from ceu_rl.console import JobLines  # noqa: E402
from ceu_rl.trainers import ceu_grpo_config  # noqa: E402
from experiments.machine import machine_info  # noqa: E402

CONFIG = ROOT / "recipes/configs/grpo/reverse_tiny.yaml"
EVAL_PROMPTS, EVAL_SAMPLES, EVAL_SEED = 64, 8, 10_000


def available_objectives() -> list[str]:
    """Every `negative_objective` the config module declares (a module-level tuple holding "pg"), "pg" first."""
    for name, value in vars(ceu_grpo_config).items():
        if "OBJECTIVE" in name.upper() and isinstance(value, (tuple, list, dict)) and "pg" in value:
            return ["pg"] + [v for v in value if v != "pg"]
    return ["pg", "ceu"]  # before the variants were declared as a tuple


def shared_negative_tokens(prompt_ids, prompt_mask, completion_ids, completion_mask, advantages):
    """[B, T] bool: tokens of A < 0 completions whose prefix (same prompt, completion tokens up to and including the
    token) also occurs in some A > 0 completion."""
    prompts = torch.where(prompt_mask.bool(), prompt_ids, -1)
    same_prompt = (prompts[:, None, :] == prompts[None, :, :]).all(-1)  # [B, B]
    valid = completion_mask.bool()
    equal = (completion_ids[:, None, :] == completion_ids[None, :, :]) & valid[:, None, :] & valid[None, :, :]
    same_prefix = equal.long().cumprod(-1).bool()  # [neg row, pos row, T]
    advantages = advantages.reshape(-1)
    pair = same_prompt & (advantages[:, None] < 0) & (advantages[None, :] > 0)
    return (same_prefix & pair[:, :, None]).any(1)


class SharedTokenProbe(CEUGRPOTrainer):
    """Logs shared/p_mean (mean p of shared tokens), shared/fraction (of negative-advantage tokens) and
    shared/p_divergent (mean p of the other negative-advantage tokens) from the policy's log-probs of the step."""

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._probe_logps is None:  # the first call inside _compute_loss: the policy on this batch
            self._probe_logps = out[0].detach()
        return out

    def _compute_loss(self, model, inputs):
        self._probe_logps = None
        loss = super()._compute_loss(model, inputs)
        shared = shared_negative_tokens(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"],
                                        inputs["completion_mask"], inputs["advantages"])
        negative = (inputs["advantages"].reshape(-1, 1) < 0) & inputs["completion_mask"].bool()
        p = self._probe_logps.exp()
        metrics = self._metrics["train" if model.training else "eval"]
        if negative.any():
            metrics["shared/fraction"].append((shared.sum() / negative.sum()).item())
        if shared.any():
            metrics["shared/p_mean"].append(p[shared].mean().item())
        if (negative & ~shared).any():
            metrics["shared/p_divergent"].append(p[negative & ~shared].mean().item())
        return loss


def warm_model(out: Path, task: str, seed: int, args) -> tuple[str, dict]:
    """The task's tiny model for `seed` (built once) and its held-out reward (cached)."""
    task_args = grpo.TaskArguments(task=task, num_prompts=args.num_prompts, sft_epochs=args.sft_epochs)
    folder = out / "models" / f"{task}_seed{seed}"
    with open(out / "build.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        path = grpo.build_tiny_model(folder, task_args, seed)
    cache = folder / "eval.json"
    if not cache.is_file():
        score = grpo.evaluate_reward(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                                     make_dataset(task, EVAL_PROMPTS, task_args.word_length, EVAL_SEED),
                                     _config(out, task, "pg", "1e-4", seed, args)[2], EVAL_SAMPLES, EVAL_SEED)
        cache.write_text(json.dumps(score))
    return path, json.loads(cache.read_text())


def _config(out, task, objective, lr, seed, args, model_path="tiny"):
    extra = ["--max_steps", str(args.max_steps)] if args.max_steps else []
    return TrlParser((ModelArguments, grpo.TaskArguments, CEUGRPOConfig)).parse_args_and_config(
        ["--config", str(CONFIG), "--model_name_or_path", model_path, "--task", task, "--negative_objective",
         objective, "--learning_rate", lr, "--seed", str(seed), "--num_prompts", str(args.num_prompts),
         "--output_dir", str(out / "runs" / task / f"lr{lr}" / objective / f"seed{seed}"), "--disable_tqdm", "true",
         *extra])


def run_one(out: Path, task: str, lr: str, objective: str, seed: int, args) -> dict:
    path, warm = warm_model(out, task, seed, args)
    model_args, task_args, cfg = _config(out, task, objective, lr, seed, args, model_path=path)
    start = time.time()
    with open(out / "build.log", "a") as log, contextlib.redirect_stderr(log):
        trainer = grpo.build_trainer(model_args, task_args, cfg, trainer_class=SharedTokenProbe)
        trainer.train()
    train_seconds = time.time() - start
    final = grpo.evaluate_reward(trainer.model, trainer.processing_class,
                                 make_dataset(task, EVAL_PROMPTS, task_args.word_length, EVAL_SEED), cfg,
                                 EVAL_SAMPLES, EVAL_SEED)
    steps = [{k: h.get(k) for k in ("step", *STEP_KEYS)} for h in trainer.state.log_history if "loss" in h]
    return {
        "task": task, "learning_rate": float(lr), "objective": objective, "seed": seed, "steps": len(steps),
        "train_seconds": round(train_seconds, 1),
        "reward_warm": warm["sampled"], "reward_final": final["sampled"],
        "reward_gain": final["sampled"] - warm["sampled"],
        "reward_greedy_warm": warm["greedy"], "reward_greedy_final": final["greedy"],
        "history": steps,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/grpo_compare")
    p.add_argument("--tasks", nargs="+", default=sorted(TASKS), choices=sorted(TASKS))
    p.add_argument("--learning_rates", nargs="+", default=["5e-4", "2.5e-4", "1e-4"])
    p.add_argument("--objectives", nargs="+", default=None, help="default: every negative_objective of the config")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--num_prompts", type=int, default=256, help="RL prompts (2 per step: 128 steps)")
    p.add_argument("--sft_epochs", type=int, default=12)
    p.add_argument("--max_steps", type=int, default=0, help="stop each run early (0: one epoch over the prompts)")
    p.add_argument("--aggregate_only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()  # weight-loading bars: one line per run is the terminal's share
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    objectives = args.objectives or available_objectives()
    grid = [(s, t, lr, o) for s in args.seeds for t in args.tasks for lr in args.learning_rates for o in objectives]
    todo = [g for g in grid if not _run_path(out, *g).is_file()]
    lines = JobLines(len(todo), "grpo_compare")
    start = time.time()
    for seed, task, lr, objective in [] if args.aggregate_only else todo:
        row = run_one(out, task, lr, objective, seed, args)
        _run_path(out, seed, task, lr, objective).write_text(json.dumps(row, indent=1))
        lines.done(f"{task} lr={lr} {objective} seed={seed}", row["train_seconds"], reward_warm=row["reward_warm"],
                   reward_final=row["reward_final"], entropy_last=derived(row)["entropy_last"])
    command = "python -m experiments.grpo_compare " + " ".join(argv if argv is not None else sys.argv[1:])
    return write_report(out, [_run_path(out, *g) for g in grid], objectives,
                        {"command": command, "machine": machine_info(),
                         "sweep_seconds_this_call": round(time.time() - start),
                         "machine_note": "shared machine (other jobs running): timings are indicative only"})


def _run_path(out: Path, seed: int, task: str, lr: str, objective: str) -> Path:
    return out / "runs" / task / f"lr{lr}" / objective / f"seed{seed}.json"


if __name__ == "__main__":
    main()
