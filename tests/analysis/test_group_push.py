"""The group net-push derivation (analysis/group_push.py, DERIVATIONS.md Sec. 8) against autograd through the real
CEUGRPOTrainer._compute_loss (TRL's loss body, every aggregation) on a constructed group; fixed points; the plot."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer

from analysis import group_push as gp
from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
from ceu_rl.tiny_models import save_tiny_model

ADVANTAGES = [1.3, 0.5, -0.7, -1.1]  # sums to 0, like group-normalised advantages
LENGTHS = [3, 2, 3, 1]  # different lengths: grpo's 1/|o_i| then unbalances P and M
POSITIVE_SECOND_TOKENS, NEGATIVE_SECOND_TOKENS = [1, 2], [3, 4]
VOCAB, T = 6, 3


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny"), ["a b c d"] * 4, vocab_size=280))


def _trainer(model_path, tmp_path, loss_type, level="token"):
    args = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                         num_generations=4, max_completion_length=T, loss_type=loss_type, report_to=[],
                         gradient_checkpointing=False, epsilon_high=0.5, importance_sampling_level=level)
    trainer = CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), reward_funcs=lambda **k: [0.0],
                             args=args, train_dataset=Dataset.from_dict({"prompt": ["a"]}),
                             processing_class=AutoTokenizer.from_pretrained(model_path))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _constructed_group(p_shared):
    """Four completions of one prompt. Position 0: the same context (one logit vector z0 for all four) and the same
    token y = 0 with p = p_shared; position 1: each its own token (the negatives diverge there), position 2: noise."""
    z0 = torch.zeros(VOCAB, dtype=torch.float64)
    z0[0] = np.log(p_shared * (VOCAB - 1) / (1 - p_shared))  # softmax(z0)[0] = p_shared
    z0.requires_grad_(True)
    rest = torch.randn(4, T - 1, VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tokens = torch.zeros(4, T, dtype=torch.long)
    tokens[:, 1] = torch.tensor(POSITIVE_SECOND_TOKENS + NEGATIVE_SECOND_TOKENS)
    tokens[:, 2] = 5
    mask = (torch.arange(T) < torch.tensor(LENGTHS).unsqueeze(1)).long()
    inputs = {"prompt_ids": torch.ones(4, 1, dtype=torch.long), "prompt_mask": torch.ones(4, 1, dtype=torch.long),
              "completion_ids": tokens, "completion_mask": mask, "advantages": torch.tensor(ADVANTAGES),
              "num_items_in_batch": mask.sum(),
              # by construction: the negatives share exactly token 0 with the positives (independent of the code)
              "ceu_divergence_index": torch.tensor([0, 0, 1, 1])}
    return z0, rest, inputs


def _autograd_push(trainer, monkeypatch, variant, p_shared):
    """-dL/dz0 through the trainer's loss, with TRL's log-prob function reading the constructed logits."""
    z0, rest, inputs = _constructed_group(p_shared)

    def constructed_logps(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        logits = torch.cat([z0.expand(4, 1, VOCAB), rest], dim=1)
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1), entropy, None

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", constructed_logps)
    trainer.args.negative_objective = variant
    trainer._compute_loss(trainer.model, inputs).backward()
    return -z0.grad


@pytest.mark.parametrize("loss_type, level", [("grpo", "token"), ("bnpo", "token"), ("dr_grpo", "token"),
                                              ("dapo", "token"), ("cispo", "token"), ("luspo", "token"),
                                              ("luspo", "sequence"), ("dapo", "sequence")])
def test_net_push_equals_autograd_through_trainer(model_path, tmp_path, monkeypatch, loss_type, level):
    trainer = _trainer(model_path, tmp_path, loss_type, level)
    constants = gp.aggregation_constants(loss_type, LENGTHS, max_completion_length=T, epsilon_high=0.5)
    positive, negative = gp.group_weights(ADVANTAGES, constants, [True] * 4)
    for variant in gp.VARIANTS:
        for p in (0.05, 0.3, 0.7, 0.97):
            push = _autograd_push(trainer, monkeypatch, variant, p)
            expected = gp.net_push(variant, p, positive, negative)
            e_y_minus_p = -torch.softmax(torch.tensor([np.log(p * (VOCAB - 1) / (1 - p))] + [0.0] * (VOCAB - 1),
                                                      dtype=torch.float64), -1)
            e_y_minus_p[0] += 1
            # the whole vector lies along e_y - p, its y component being the net push
            np.testing.assert_allclose(push.numpy(), (expected / (1 - p) * e_y_minus_p).numpy(), rtol=1e-4,
                                       atol=1e-7, err_msg=f"{loss_type} {level} {variant} p={p}")


def test_fixed_points():
    balanced = gp.group_weights(ADVANTAGES, gp.aggregation_constants("bnpo", LENGTHS), [True] * 4)
    assert balanced[0] == pytest.approx(balanced[1])  # token-level aggregations: a fully shared token is balanced
    assert gp.fixed_points("pg", *balanced)["neutral"] == (0.0, 1.0)
    assert gp.fixed_points("ceu_full", *balanced)["stable"] == [pytest.approx(0.5)]
    assert gp.fixed_points("ceu_min", *balanced)["neutral"] == (0.5, 1.0)
    grpo = gp.group_weights(ADVANTAGES, gp.aggregation_constants("grpo", LENGTHS), [True] * 4)
    assert grpo[0] < grpo[1]  # the short negative completion weighs more per token (GRPO's length bias)
    assert gp.fixed_points("pg", *grpo)["stable"] == [0.0]
    for variant, (P, M) in [(v, pm) for v in gp.VARIANTS for pm in ((2.0, 1.0), (1.0, 1.0), (0.5, 1.0))]:
        fixed = gp.fixed_points(variant, P, M)
        grid = np.linspace(1e-4, 1 - 1e-4, 2001)
        n = gp.net_push(variant, grid, P, M)
        for s in fixed["stable"]:  # N changes sign from + to - at an interior stable point; at the ends it points in
            if 0 < s < 1:
                assert gp.net_push(variant, s, P, M) == pytest.approx(0.0, abs=1e-12)
                assert gp.net_push(variant, s - 1e-3, P, M) > 0 > gp.net_push(variant, s + 1e-3, P, M)
            else:
                assert (n > 0).all() if s == 1.0 else (n < 0).all()
        if fixed["neutral"]:
            lo, hi = fixed["neutral"]
            assert np.allclose(n[(grid > lo) & (grid < hi)], 0.0)


def test_plot_written(tmp_path):
    data = gp.net_push_curves(points=21)
    gp.plot_net_push(data, tmp_path / "net_push.png")
    assert (tmp_path / "net_push.png").stat().st_size > 10_000
    json.dumps(data)
    assert data["panels"][1]["curves"]["ceu_full"]["stable"] == [0.5]
