"""The DPO shared-token net push (analysis/dpo_push.py, DERIVATIONS.md Sec. 9) against float64 autograd through the
real CEUDPOTrainer._compute_loss (TRL's loss body) on a constructed batch; fixed points; the plot."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from analysis import dpo_push as dp
from ceu_rl import CEUDPOConfig, CEUDPOTrainer
from ceu_rl.tiny_models import save_tiny_model

VOCAB, BETA = 6, 0.5
# two pairs, prompt token 5, three completion tokens. Pair 0 shares its first completion token (0) and then diverges
# (chosen 1, rejected 2); pair 1 shares nothing (1 vs 2 at once). Rows: [chosen_0, chosen_1, rejected_0, rejected_1].
INPUT_IDS = torch.tensor([[5, 0, 1, 3], [5, 1, 3, 3], [5, 0, 2, 3], [5, 2, 3, 3]])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny"), ["a b c d"] * 4, vocab_size=280))


def _trainer(model_path, tmp_path, **kw):
    args = CEUDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], beta=BETA,
                        gradient_checkpointing=False, **kw)
    dataset = Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})
    trainer = CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args, train_dataset=dataset,
                            processing_class=AutoTokenizer.from_pretrained(model_path))
    trainer.model.train()
    trainer.precompute_ref_logps = True  # the constructed batch carries its reference log-probs
    return trainer


def _constructed(p_shared, chosen_offset):
    """Logits at each scored position: z0 (p(token 0) = p_shared, requires grad) at pair 0's shared position in both
    rows, fixed random logits elsewhere. The reference log-probs put D_w = -chosen_offset, D_l = 1.3 on pair 0."""
    z0 = torch.zeros(VOCAB, dtype=torch.float64)
    z0[0] = math.log(p_shared * (VOCAB - 1) / (1 - p_shared))
    z0.requires_grad_(True)
    rest = torch.randn(4, 3, VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits = torch.stack([torch.cat([z0[None], rest[i, 1:]]) if i in (0, 2) else rest[i] for i in range(4)])
    logp = torch.log_softmax(logits, -1).gather(-1, INPUT_IDS[:, 1:, None]).squeeze(-1)
    sums = logp.detach().sum(1)
    inputs = {"input_ids": INPUT_IDS, "attention_mask": torch.ones_like(INPUT_IDS),
              "completion_mask": torch.tensor([[0, 1, 1, 1]] * 4),
              "ref_chosen_logps": sums[:2] + torch.tensor([chosen_offset, -0.4], dtype=torch.float64),
              "ref_rejected_logps": sums[2:] - torch.tensor([1.3, 0.2], dtype=torch.float64)}

    def model(**kwargs):
        lp = torch.log_softmax(logits, -1)
        return SimpleNamespace(log_probs=logp, entropy=-(lp.exp() * lp).sum(-1), mean_logits=logits.mean(-1),
                               is_top1=logits.argmax(-1) == INPUT_IDS[:, 1:])

    return z0, model, inputs, -chosen_offset, 1.3


CASES = [("dpo", dict(loss_type="sigmoid"), 1.0), ("ceu_full", dict(loss_type="ceu", ceu_weight=1.0), 1.0),
         ("ceu_full", dict(loss_type="ceu", ceu_weight=4.0), 4.0),
         ("ceu_prefix", dict(loss_type="ceu", ceu_weight=4.0, rejected_objective="ceu_prefix"), 4.0),
         ("dpop", dict(loss_type="dpop", dpop_lambda=50.0), 1.0),
         ("dpop", dict(loss_type="dpop", dpop_lambda=5.0), 1.0)]


@pytest.mark.parametrize("variant, config, gamma", CASES)
@pytest.mark.parametrize("chosen_offset", [0.7, -0.05])  # D_w < 0 (DPOP's penalty on) and D_w > 0
def test_net_push_equals_autograd_through_trainer(model_path, tmp_path, variant, config, gamma, chosen_offset):
    trainer = _trainer(model_path, tmp_path, **config)
    for p in (0.05, 0.3, 0.7, 0.97):
        z0, model, inputs, d_w, d_l = _constructed(p, chosen_offset)
        trainer._compute_loss(model, inputs, False).backward()
        push = -z0.grad
        P, M = dp.pair_weights(variant, d_w, d_l, BETA, pairs=2, dpop_lambda=config.get("dpop_lambda", 50.0))
        expected = dp.net_push(variant, p, P, M, gamma)
        e_y_minus_p = -torch.softmax(z0.detach(), -1)
        e_y_minus_p[0] += 1
        # the whole vector lies along e_y - p, its y component being the net push
        np.testing.assert_allclose(push.numpy(), (expected / (1 - p) * e_y_minus_p).numpy(), rtol=1e-6, atol=1e-10,
                                   err_msg=f"{variant} {config} p={p} D_w={d_w}")


def test_fixed_points():
    P, M = dp.pair_weights("dpo", 0.3, -0.2, 0.1)
    assert P == pytest.approx(M) and dp.fixed_points("dpo", P, M)["neutral"] == (0.0, 1.0)
    for gamma in (1.0, 4.0, 16.0):
        (star,) = dp.fixed_points("ceu_full", P, M, gamma)["stable"]
        assert star == pytest.approx(1 / (1 + gamma))
        assert dp.net_push("ceu_full", star, P, M, gamma) == pytest.approx(0.0, abs=1e-12)
        assert dp.net_push("ceu_full", star - 1e-3, P, M, gamma) > 0 > dp.net_push("ceu_full", star + 1e-3, P, M, gamma)
    below = dp.pair_weights("dpop", -0.5, 0.0, 0.1, dpop_lambda=50.0)
    assert below[0] == pytest.approx(51 * below[1]) and dp.fixed_points("dpop", *below)["stable"] == [1.0]
    above = dp.pair_weights("dpop", 0.5, 0.0, 0.1)
    assert dp.fixed_points("dpop", *above)["neutral"] == (0.0, 1.0)
    with pytest.raises(ValueError, match="variant='ipo'"):
        dp.net_push("ipo", 0.5, 1.0, 1.0)


def test_plot_written(tmp_path):
    data = dp.net_push_curves(points=21)
    dp.plot_net_push(data, tmp_path / "dpo_net_push.png")
    assert (tmp_path / "dpo_net_push.png").stat().st_size > 10_000
    json.dumps(data)
    assert data["panels"][0]["curves"]["ceu_full g=4"]["stable"] == [pytest.approx(0.2)]
