"""TRL's own GRPOTrainer tests (huggingface/trl tests/test_grpo_trainer.py) for the options CE-U-GRPO used to reject,
ported with our classes substituted: CEUGRPOConfig/CEUGRPOTrainer with a CE-U variant instead of GRPOConfig/
GRPOTrainer, a tiny local Llama and a rule reward instead of the hub models (no downloads), max_steps instead of
epochs. Each keeps TRL's assertions (training runs, every parameter moves, the logged quantities TRL checks); the
gradients themselves are checked against full-logits formulas in test_ceu_grpo_trainer.py. The variants rotate over
the cases so that each runs through several options."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer

PROMPTS = ["The sky is", "Two plus two is", "Bees make", "A dog says", "Paris is in", "Water is", "Cats like",
           "The sun is"]


def varied_reward(completions, **kwargs):
    return [float(len(c) % 5) for c in completions]


def _train(path, tmp_path, token_weight_fn=None, **config):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, learning_rate=0.1, per_device_train_batch_size=3,
                num_generations=3, max_completion_length=8, max_steps=2, report_to=[], save_strategy="no",
                logging_steps=1, gradient_checkpointing=False, seed=0)
    base.update(config)
    torch.manual_seed(0)
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=varied_reward,
                             args=CEUGRPOConfig(**base), train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
                             processing_class=AutoTokenizer.from_pretrained(path), token_weight_fn=token_weight_fn)
    previous = {n: p.clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    for n, p in previous.items():  # TRL's check: every parameter has changed
        assert not torch.equal(p, trainer.model.get_parameter(n)), f"Parameter {n} has not changed."
    return trainer


# test_train_loss_types (TRL: bnpo, dr_grpo, dapo, cispo, sapo, luspo, vespo; accumulation 2 for dapo's normaliser)
@pytest.mark.parametrize("loss_type, objective", [("bnpo", "ceu_min"), ("dr_grpo", "ceu_prefix"), ("dapo", "ceu_full"),
                                                  ("cispo", "ceu_min"), ("sapo", "ceu_prefix"), ("luspo", "ceu_full"),
                                                  ("vespo", "ceu_min")])
def test_train_loss_types(tiny_model_path, tmp_path, loss_type, objective):
    _train(tiny_model_path, tmp_path, loss_type=loss_type, negative_objective=objective, gradient_accumulation_steps=2,
           importance_sampling_level="sequence" if loss_type == "luspo" else "token")


# test_train_sequence_importance_sampling (GSPO) and test_train_multiple_iterations
@pytest.mark.parametrize("objective, level", [("ceu_prefix", "sequence"), ("ceu_min", "token")])
def test_train_multiple_iterations(tiny_model_path, tmp_path, objective, level):
    _train(tiny_model_path, tmp_path, negative_objective=objective, num_iterations=2, importance_sampling_level=level)


# test_train_with_static_entropy
def test_train_with_static_entropy(tiny_model_path, tmp_path):
    trainer = _train(tiny_model_path, tmp_path, negative_objective="ceu_min", entropy_coef=0.1)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[-1]["policy_loss"] is not None and logs[-1]["entropy_coef"] == 0.1


# test_train_with_adaptive_entropy_gradient_accumulation (covers test_train_with_adaptive_entropy)
def test_train_with_adaptive_entropy_gradient_accumulation(tiny_model_path, tmp_path):
    trainer = _train(tiny_model_path, tmp_path, negative_objective="ceu_full", gradient_accumulation_steps=2,
                     entropy_coef=0.01, use_adaptive_entropy=True, entropy_target=15.0, entropy_coef_delta=0.005)
    assert trainer.state.log_history[-1]["train_loss"] is not None
    # one increment per optimizer step, as in TRL
    assert trainer.entropy_coef == pytest.approx(min(0.01 + 0.005 * trainer.state.global_step, 1.0), abs=1e-6)
    assert trainer.entropy_coef > 0.01


# test_entropy_bonus_scale: the logged loss is policy_loss - entropy_coef * entropy for every loss type
@pytest.mark.parametrize("loss_type, objective", [("grpo", "ceu_full"), ("dr_grpo", "ceu_min"), ("dapo", "ceu_prefix"),
                                                  ("luspo", "ceu_min")])
def test_entropy_bonus_scale(tiny_model_path, tmp_path, loss_type, objective):
    trainer = _train(tiny_model_path, tmp_path, negative_objective=objective, loss_type=loss_type, entropy_coef=0.5,
                     importance_sampling_level="sequence" if loss_type == "luspo" else "token", max_steps=3)
    logs = [h for h in trainer.state.log_history if "policy_loss" in h and "loss" in h and h.get("entropy")]
    ratios = sorted((h["policy_loss"] - h["loss"]) / h["entropy"] for h in logs)
    assert ratios[len(ratios) // 2] == pytest.approx(0.5, rel=0.3)


# test_entropy_bonus_flows_gradients: our log-prob override passes TRL's entropies through untouched
def test_entropy_bonus_flows_gradients(tiny_model_path, tmp_path):
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_path), reward_funcs=varied_reward,
                             args=CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[],
                                                entropy_coef=0.1, negative_objective="ceu_full"),
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
                             processing_class=AutoTokenizer.from_pretrained(tiny_model_path))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    _, entropies, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, torch.ones_like(ids), 4,
                                                                 compute_entropy=True)
    assert trainer._entropy_bonus_enabled and entropies.requires_grad


# test_train_beta_non_zero (with the KL bias correction off, which CE-U variants require) and
# test_train_delta_clipping
@pytest.mark.parametrize("config", [dict(beta=0.1, use_bias_correction_kl=False, negative_objective="ceu_prefix"),
                                    dict(delta=2.0, epsilon_high=0.28, negative_objective="ceu_full")])
def test_train_kl_and_delta(tiny_model_path, tmp_path, config):
    _train(tiny_model_path, tmp_path, **config)


# The family of issue 17: every member that changes the gradient through TRL's own tests (loss types, multiple
# iterations with sequence-level ratios, the entropy bonus), with the same assertions.
FAMILY = {
    "ceu_mix": dict(negative_objective="ceu_mix", ceu_mix_lambda=0.5),
    "nsr": dict(positive_weight=0.0),
    "w_reinforce": dict(positive_weight=0.1),
    "advantage_reweighting": dict(token_weighting="advantage_reweighting"),
    "clip_cov": dict(token_weighting="clip_cov", clip_cov_ratio=0.05),
    "shared_negative": dict(shared_negative_weight=0.5),
}


def _hook(logprobs, advantages, **_):
    return 0.5 + logprobs.exp()


@pytest.mark.parametrize("member", [*FAMILY, "hook"])
@pytest.mark.parametrize("loss_type", ["dapo", "cispo", "sapo"])
def test_family_train_loss_types(tiny_model_path, tmp_path, member, loss_type):
    _train(tiny_model_path, tmp_path, loss_type=loss_type, gradient_accumulation_steps=2,
           token_weight_fn=_hook if member == "hook" else None, **FAMILY.get(member, {}))


@pytest.mark.parametrize("member", [*FAMILY, "hook"])
def test_family_multiple_iterations_and_entropy(tiny_model_path, tmp_path, member):
    trainer = _train(tiny_model_path, tmp_path, num_iterations=2, importance_sampling_level="sequence",
                     entropy_coef=0.1, token_weight_fn=_hook if member == "hook" else None, **FAMILY.get(member, {}))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[-1]["policy_loss"] is not None and logs[-1]["entropy_coef"] == 0.1
