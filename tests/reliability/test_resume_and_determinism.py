"""Resume and determinism of the three trainers, on a tiny model for 4 steps (checkpoint every 2).

Resume: the uninterrupted run leaves checkpoint-2 on disk, exactly what a run interrupted after its second step would
leave; a fresh trainer (built as a user would rebuild it: same arguments, the initial model) resumed from it must end
with the same weights and the same logged losses (all logged keys, steps 1-4). Determinism: the same seed twice gives
the same losses. Not compared: TRL's DPO `num_tokens`, a running count that TRL keeps outside the checkpoint (it
restarts at 0 on resume; GRPO's comes from the saved trainer state). Tolerance: both are bitwise on one machine (same
ops, same order, one thread); asserted within rtol 1e-5 / atol 1e-7 so that nothing rests on rounding beyond that.
"""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, CEUGRPOConfig, CEUGRPOTrainer, UnlearnConfig, UnlearnTrainer

from .conftest import FORGET, PREFERENCES, RETAIN

RTOL, ATOL = 1e-5, 1e-7
COMMON = dict(use_cpu=True, bf16=False, max_steps=4, save_steps=2, save_strategy="steps", logging_steps=1,
              report_to=[], learning_rate=1e-2, seed=0, disable_tqdm=True)


def _unlearn(path, out, objective):
    args = UnlearnConfig(output_dir=out, objective=objective, per_device_train_batch_size=2, prompt_format="plain",
                         max_length=64, **COMMON)
    return UnlearnTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, forget_dataset=FORGET,
                          retain_dataset=RETAIN, processing_class=AutoTokenizer.from_pretrained(path))


def _dpo(path, out, loss_type):
    args = CEUDPOConfig(output_dir=out, loss_type=[loss_type], per_device_train_batch_size=2, beta=0.5, max_length=64,
                        gradient_checkpointing=False, **COMMON)
    return CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), ref_model=None, args=args,
                         train_dataset=PREFERENCES, processing_class=AutoTokenizer.from_pretrained(path))


def _length_reward(completions, **kwargs):
    return [float(len(c) % 7) for c in completions]


def _grpo(path, out, negative_objective):
    args = CEUGRPOConfig(output_dir=out, negative_objective=negative_objective, per_device_train_batch_size=4,
                         num_generations=4, max_completion_length=6, gradient_checkpointing=False, temperature=1.0,
                         beta=0.04, use_bias_correction_kl=False, **COMMON)  # beta > 0: the reference model is used
    return CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=_length_reward, args=args,
                          train_dataset=PREFERENCES.select_columns(["prompt"]),
                          processing_class=AutoTokenizer.from_pretrained(path))


BUILDERS = {"unlearn": _unlearn, "dpo": _dpo, "grpo": _grpo}
CASES = [("unlearn", "ce_u_retain"), ("unlearn", "npo"), ("dpo", "ceu"), ("grpo", "ceu")]


def _run(kind, variant, path, out, resume_from=None):
    trainer = BUILDERS[kind](path, str(out), variant)
    trainer.train(resume_from_checkpoint=resume_from)
    logs = [{k: v for k, v in h.items() if isinstance(v, float) and k not in ("learning_rate", "epoch", "num_tokens")
             and "time" not in k}  # wall-clock timings differ, of course
            for h in trainer.state.log_history if "loss" in h]
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    return logs, weights


def _assert_same_logs(a, b):
    assert len(a) == len(b) == 4
    for step, (x, y) in enumerate(zip(a, b), start=1):
        assert x.keys() == y.keys(), step
        for key in x:
            assert math.isclose(x[key], y[key], rel_tol=RTOL, abs_tol=ATOL), (step, key, x[key], y[key])


@pytest.mark.parametrize(("kind", "variant"), CASES)
def test_resumed_run_matches_uninterrupted_run_and_same_seed_repeats(tiny_path, tmp_path, kind, variant):
    torch.manual_seed(123)  # a different global seed before each run: the trainer's seed must decide everything
    full_logs, full_weights = _run(kind, variant, tiny_path, tmp_path / "full")
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert checkpoint.is_dir()
    torch.manual_seed(456)
    resumed_logs, resumed_weights = _run(kind, variant, tiny_path, tmp_path / "resumed", resume_from=str(checkpoint))
    _assert_same_logs(full_logs, resumed_logs)
    for name, weight in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], weight, rtol=RTOL, atol=ATOL, msg=name)
    # the run did train: the weights moved away from the initial ones
    initial = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert any(not torch.equal(p, full_weights[n]) for n, p in initial.named_parameters() if n in full_weights)

    torch.manual_seed(789)
    again_logs, _ = _run(kind, variant, tiny_path, tmp_path / "again")
    _assert_same_logs(full_logs, again_logs)
