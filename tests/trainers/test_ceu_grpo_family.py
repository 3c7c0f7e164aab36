"""The GRPO token-reweighting family (issue 17) through CEUGRPOTrainer: each member's gradient on a generated batch
against an independent full-logits formula (weights computed from the float64 softmax of the full logits, the
CE-U part from the naive full-vocabulary CE-U), and bad values rejected with the field's name and range."""

import numpy as np
import pytest
import torch

from ceu_rl import CEUGRPOConfig
from tests.trainers.test_ceu_grpo_trainer import (  # noqa: F401  (module-scoped fixtures)
    _args,
    _check_gradient,
    _reference_divergence,
    _reference_loss,
    _trainer,
    sharp_model_path,
    shared_prefix_batch,
)


def _positive(weight):
    return lambda p, a, mask: torch.where(a > 0, torch.full_like(p, weight), torch.ones_like(p))


def _advantage_reweighting(alpha):
    return lambda p, a, mask: alpha * p + 1 - alpha


def _shared(inputs, weight):
    divergence = _reference_divergence(inputs)

    def w(p, a, mask):
        shared = (torch.arange(p.size(1)) < divergence.unsqueeze(1)) & (a < 0)
        return torch.where(shared, torch.full_like(p, weight), torch.ones_like(p))
    return w


def _clip_cov(ratio):
    """Brute force in plain Python: rank the valid tokens by (log p - mean)(A - mean), zero the top floor(ratio N)
    with positive covariance."""
    def w(p, a, mask):
        cells = [(i, t) for i in range(p.size(0)) for t in range(p.size(1)) if mask[i, t] > 0]
        logp = {c: float(np.log(p[c].item())) for c in cells}
        adv = {c: float(a[c].item()) for c in cells}
        mean_l, mean_a = sum(logp.values()) / len(cells), sum(adv.values()) / len(cells)
        cov = sorted(((logp[c] - mean_l) * (adv[c] - mean_a), c) for c in cells)[::-1]
        out = torch.ones_like(p)
        for value, c in cov[:int(ratio * len(cells))]:
            if value > 0:
                out[c] = 0.0
        return out
    return w


def _product(*fns):
    def w(p, a, mask):
        out = torch.ones_like(p)
        for f in fns:
            out = out * f(p, a, mask)
        return out
    return w


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize("mix_lambda", [0.25, 0.75])
def test_ceu_mix(sharp_model_path, tmp_path, shared_prefix_batch, loss_type, mix_lambda):
    _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, "ceu_mix", ceu_mix_lambda=mix_lambda,
                    loss_type=loss_type, beta=0.0)


@pytest.mark.parametrize("objective, config, weight", [
    ("pg", dict(positive_weight=0.0), _positive(0.0)),  # NSR
    ("pg", dict(positive_weight=0.1, loss_type="grpo"), _positive(0.1)),  # W-REINFORCE
    ("pg", dict(token_weighting="advantage_reweighting"), _advantage_reweighting(0.3)),
    ("ceu_min", dict(token_weighting="advantage_reweighting", ar_alpha=0.8, loss_type="bnpo"),
     _advantage_reweighting(0.8)),
    ("pg", dict(token_weighting="clip_cov", clip_cov_ratio=0.1), _clip_cov(0.1)),
])
def test_family_weights(sharp_model_path, tmp_path, shared_prefix_batch, objective, config, weight):
    _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, objective, extra_weight=weight,
                    **{"beta": 0.0, "loss_type": "dapo", **config})


def test_clip_cov_zeroes_some_tokens(shared_prefix_batch):
    # the case above is not vacuous: the brute force zeroes floor(0.1 N) tokens of this batch
    mask = shared_prefix_batch["completion_mask"].float()
    p = torch.rand(mask.shape, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    a = shared_prefix_batch["advantages"].unsqueeze(1).expand_as(p)
    assert int((_clip_cov(0.1)(p, a, mask) == 0).sum()) == int(0.1 * mask.sum())


@pytest.mark.parametrize("objective", ["pg", "ceu_min"])
def test_shared_negative_weight(sharp_model_path, tmp_path, shared_prefix_batch, objective):
    _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, objective,
                    extra_weight=_shared(shared_prefix_batch, 0.25), shared_negative_weight=0.25, beta=0.0)


def test_python_hook(sharp_model_path, tmp_path, shared_prefix_batch):
    calls = []

    def hook(logprobs, advantages, completion_mask, completion_ids, divergence_index):
        calls.append(completion_ids.shape)
        return 1.0 + 2.0 * (advantages < 0) * logprobs.exp() * completion_mask

    _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, "pg", trainer_kwargs={"token_weight_fn": hook},
                    extra_weight=lambda p, a, mask: 1.0 + 2.0 * (a < 0) * p * mask, beta=0.0, loss_type="dapo")
    assert calls


def test_members_combined(sharp_model_path, tmp_path, shared_prefix_batch):
    """Every factor at once (and the KL term, not reweighted): the weights multiply."""
    weight = _product(_positive(0.5), _advantage_reweighting(0.3), _shared(shared_prefix_batch, 0.5))
    _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, "ceu_mix", extra_weight=weight,
                    ceu_mix_lambda=0.5, positive_weight=0.5, token_weighting="advantage_reweighting",
                    shared_negative_weight=0.5, loss_type="dapo", beta=0.1, use_bias_correction_kl=False)


@pytest.mark.parametrize("kw, match", [
    (dict(negative_objective="ceu_mix", ceu_mix_lambda=1.5),
     r"ceu_mix_lambda=1.5 is out of range: use a value in \[0, 1\]"),
    (dict(positive_weight=-0.1), r"positive_weight=-0.1 is out of range: use a value >= 0"),
    (dict(token_weighting="advantage_reweighting", ar_alpha=-0.2),
     r"ar_alpha=-0.2 is out of range: use a value in \[0, 1\]"),
    (dict(token_weighting="clip_cov", clip_cov_ratio=2.0), r"clip_cov_ratio=2.0 is out of range"),
    (dict(shared_negative_weight=1.5), r"shared_negative_weight=1.5 is out of range"),
    (dict(token_weighting="lopti"), r"token_weighting='lopti' is not known; use one of \('none'"),
    (dict(positive_weight=0.0, beta=0.1), "use_bias_correction_kl=True with beta=0.1 is not supported"),
    (dict(negative_objective="ceu_mix", ceu_exact_gradient=True), "ceu_exact_gradient=True supports"),
    (dict(positive_weight=0.1, loss_type="ppo_new"), r"loss_type='ppo_new' is not supported with the family"),
    (dict(negative_objective="wga", wga_beta=-1.0), r"wga_beta=-1.0 is out of range: use a value >= 0"),
    (dict(negative_objective="satimp", satimp_beta2=-0.5), r"satimp_beta2=-0.5 is out of range"),
    (dict(negative_objective="satimp", ceu_exact_gradient=True), "ceu_exact_gradient=True supports"),
    (dict(negative_objective="weighted_ga"), r"negative_objective='weighted_ga' is not known"),
])
def test_bad_family_values(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kw)


def test_defaults_keep_trl_path(tmp_path):
    args = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (args.positive_weight, args.token_weighting, args.ar_alpha, args.shared_negative_weight) == (1.0, "none",
                                                                                                        0.3, 1.0)
    assert not args.reweights_gradient and _args(tmp_path, positive_weight=0.1).reweights_gradient


def test_bad_hooks(sharp_model_path, tmp_path, shared_prefix_batch):
    with pytest.raises(ValueError, match="token_weight_fn must be a callable"):
        _trainer(sharp_model_path, _args(tmp_path), token_weight_fn=0.5)
    for bad in (lambda logprobs, **_: -torch.ones_like(logprobs), lambda logprobs, **_: torch.ones(3)):
        trainer = _trainer(sharp_model_path, _args(tmp_path, per_device_train_batch_size=8), token_weight_fn=bad)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        with pytest.raises(ValueError, match=r"token_weight_fn must return finite weights >= 0 of shape"):
            trainer.compute_loss(trainer.model, shared_prefix_batch)


def _sibling(objective, beta1, beta2=0.0):
    """WGA's p^beta1 / SatImp's p^beta1 (1 - p)^beta2 on A < 0 tokens, from the full-logits p of the reference."""
    def w(p, a, mask):
        weight = p.double() ** beta1 * ((1 - p.double()) ** beta2 if objective == "satimp" else 1.0)
        return torch.where(a < 0, weight.float(), torch.ones_like(p))
    return w


@pytest.mark.parametrize("objective, config, weight", [
    ("wga", dict(loss_type="grpo"), _sibling("wga", 1.0)),
    ("wga", dict(wga_beta=3.0, loss_type="dapo"), _sibling("wga", 3.0)),
    ("satimp", dict(loss_type="bnpo"), _sibling("satimp", 5.0, 1.0)),
    ("satimp", dict(satimp_beta1=2.0, satimp_beta2=0.5, loss_type="dapo"), _sibling("satimp", 2.0, 0.5)),
    ("wga", dict(positive_weight=0.5, loss_type="dr_grpo"), _product(_sibling("wga", 1.0), _positive(0.5))),
])
def test_sibling_negative_objectives(sharp_model_path, tmp_path, shared_prefix_batch, objective, config, weight):
    """negative_objective "wga" / "satimp" (issue 26): the trainer's gradient equals TRL's GRPO loss written from
    full logits with the sibling's weight on the gradient of log pi of each A < 0 token, and differs from GRPO's."""
    trainer = _trainer(sharp_model_path, _args(tmp_path, negative_objective=objective, per_device_train_batch_size=8,
                                               beta=0.0, **config))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, shared_prefix_batch)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    divergence = _reference_divergence(shared_prefix_batch)
    for extra, same in ((weight, True), (None, False)):  # the sibling's formula, then plain GRPO
        trainer.model.zero_grad()
        ref = _reference_loss(trainer.model, shared_prefix_batch, trainer.args, "pg", divergence, extra)
        ref.backward()
        torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-4, atol=1e-6)
        close = [torch.allclose(ours[n], p.grad, rtol=2e-3, atol=1e-4 * p.grad.abs().max().item())
                 for n, p in trainer.model.named_parameters()]
        assert all(close) if same else not all(close)
    assert 0 < trainer._metrics["train"]["ceu/weight_mean"][-1] < 1
