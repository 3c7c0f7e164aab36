"""CE-U-DPO's `rejected_objective="wga"` / `"satimp"` (issue 26): CE-U's siblings' weights on the rejected tokens,
through CEUDPOTrainer, against formulas written out here (no ceu_rl code in the references): per token in float64 on
a constructed batch with p up to 1 - 1e-9, per parameter on the tiny model, one training step, the config's errors."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ceu_rl.objectives.dpo_weights import rejected_ce_u_mask

from .test_ceu_dpo_trainer import _config, _full_logits_logps, _grads, _trainer, _trainer_gradients

BETA, VOCAB = 0.5, 6
# two pairs, prompt token 5 then three completion tokens; rows [chosen_0, chosen_1, rejected_0, rejected_1]
INPUT_IDS = torch.tensor([[5, 0, 1, 3], [5, 1, 3, 3], [5, 0, 2, 4], [5, 2, 4, 1]])
# p of each rejected row's scored tokens: from unlikely to 1 - 1e-9 (float64 resolves it; float32 would not)
REJECTED_P = [[0.05, 0.6, 1 - 1e-6], [1 - 1e-9, 0.3, 0.97]]


def _sibling_weight(p, one_minus_p, objective, gamma, wga_beta=1.0, beta1=5.0, beta2=1.0):
    """gamma x the sibling's weight, written out: WGA p^beta (arXiv 2502.19301), SatImp p^beta1 (1 - p)^beta2
    (arXiv 2505.11953), CE-U p / (1 - p) (arXiv 2503.01224) as the harness's control."""
    if objective == "wga":
        return gamma * p ** wga_beta
    if objective == "satimp":
        return gamma * p ** beta1 * one_minus_p ** beta2
    return gamma * p / one_minus_p


def _constructed(seed=0):
    """float64 logits (requires grad) whose rejected rows put p = REJECTED_P on their scored tokens (the other five
    logits 0), random elsewhere; a stand-in model returning TRL's fused-head outputs from them; the reference
    log-probs put D_w - D_l away from 0 on both pairs."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 3, VOCAB, dtype=torch.float64, generator=gen)
    targets = INPUT_IDS[:, 1:]
    for r, ps in enumerate(REJECTED_P):
        for t, p in enumerate(ps):
            logits[2 + r, t] = 0.0
            logits[2 + r, t, targets[2 + r, t]] = math.log(p * (VOCAB - 1) / (1 - p))
    logits.requires_grad_(True)
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    sums = logp.detach().sum(1)
    inputs = {"input_ids": INPUT_IDS, "attention_mask": torch.ones_like(INPUT_IDS),
              "completion_mask": torch.tensor([[0, 1, 1, 1]] * 4),
              "ref_chosen_logps": sums[:2] + torch.tensor([0.7, -0.4], dtype=torch.float64),
              "ref_rejected_logps": sums[2:] - torch.tensor([1.3, -0.9], dtype=torch.float64)}

    def model(**kwargs):
        lp = torch.log_softmax(logits, -1)
        return SimpleNamespace(log_probs=logp, entropy=-(lp.exp() * lp).sum(-1), mean_logits=logits.mean(-1),
                               is_top1=logits.argmax(-1) == targets)

    return logits, model, inputs


@pytest.mark.parametrize("objective, kw", [
    ("wga", dict()), ("wga", dict(wga_beta=3.0, ceu_weight=2.0)), ("wga", dict(wga_beta=0.0)),
    ("satimp", dict()), ("satimp", dict(satimp_beta1=0.5, satimp_beta2=0.1, ceu_weight=4.0)),
    ("ceu_full", dict(ceu_weight=0.7)),  # control: the harness reproduces CE-U's weight too
])
def test_token_gradient_equals_float64_formula(tiny_model_path, preference_dataset, tmp_path, objective, kw):
    """d loss / d logits of every scored token, autograd through the trainer's _compute_loss (TRL's sigmoid loss body
    on the seam's reweighted log-probs), equals the hand formula: chosen token -beta sigma(-u) / n (e_y - p), rejected
    token +beta sigma(-u) / n w (e_y - p), w the sibling's weight times gamma."""
    trainer = _trainer(tiny_model_path, preference_dataset,
                       _config(tmp_path, loss_type="ceu", rejected_objective=objective, **kw))
    trainer.model.train()
    trainer.precompute_ref_logps = True  # the constructed batch carries its reference log-probs
    logits, model, inputs = _constructed()
    loss = trainer._compute_loss(model, inputs, False)
    loss.backward()
    with torch.no_grad():
        z = logits.detach()
        probs = torch.softmax(z, -1)
        targets = INPUT_IDS[:, 1:]
        onehot = F.one_hot(targets, VOCAB).bool()
        p = probs.gather(-1, targets[..., None]).squeeze(-1)
        one_minus_p = torch.where(onehot, 0.0, probs).sum(-1)  # no cancellation at p ~ 1
        e_y_minus_p = torch.where(onehot, one_minus_p[..., None], -probs)
        logp = torch.log(p)
        d = logp.sum(1) - torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        n = 2
        u = BETA * (d[:n] - d[n:])
        adaptive = BETA * torch.sigmoid(-u) / n
        gamma = kw.get("ceu_weight", 1.0)
        w = _sibling_weight(p[n:], one_minus_p[n:], objective, gamma, kw.get("wga_beta", 1.0),
                            kw.get("satimp_beta1", 5.0), kw.get("satimp_beta2", 1.0))
        coef = torch.cat([-adaptive[:, None].expand(n, 3), adaptive[:, None] * w])
        expected = coef[..., None] * e_y_minus_p
        assert one_minus_p[n:].min() < 1e-8 and p[n:].min() < 0.1  # p near 1 and far from it are both exercised
    torch.testing.assert_close(loss.detach(), (-F.logsigmoid(u)).mean(), rtol=1e-10, atol=0)
    # each token's gradient to 1e-6 of itself: the rejected tokens at p ~ 1 carry gradients down to ~1e-18
    torch.testing.assert_close(logits.grad, expected, rtol=1e-6, atol=0)
    metrics = trainer._metrics["train"]
    if objective == "ceu_full":
        assert len(metrics["loss/ceu_term"]) == 1
        return
    assert "loss/ceu_term" not in metrics
    # the logged sibling term: gamma sg(beta sigma(-u)) sum_t sg(w) log pi, per pair, averaged
    term = (BETA * torch.sigmoid(-u) * (w * logp[n:]).sum(1)).mean().item()
    assert metrics[f"loss/{objective}_term"] == [pytest.approx(term, rel=1e-9)]
    assert metrics["ceu/p_rejected_mean"][0] == pytest.approx(p[n:].mean().item(), rel=1e-9)
    # every rejected completion token carries the sibling's weight
    rejected_mask = inputs["completion_mask"][2:, 1:].bool()
    assert torch.equal(rejected_ce_u_mask(objective, rejected_mask), rejected_mask)


def _reference_sibling_loss(model, ref_model, batch, beta, gamma, objective, **betas):
    """DPO's sigmoid loss from full logits whose rejected log-probs keep their value and carry the gradient
    w grad log pi, w = gamma x the sibling's weight from the full-logits p in float64 (w = 1: DPO)."""
    _, _, mask, token_logps = _full_logits_logps(model, batch)
    with torch.no_grad():
        ref_logps = _full_logits_logps(ref_model, batch)[3]
        logp64 = token_logps.detach().double()
        w = (torch.ones_like(logp64) if objective == "dpo"
             else _sibling_weight(logp64.exp(), -torch.expm1(logp64), objective, gamma, **betas))
    n = batch["input_ids"].shape[0] // 2
    pushed = token_logps.clone()
    pushed[n:] = token_logps[n:].detach() + w[n:].float() * (token_logps[n:] - token_logps[n:].detach())
    d = (pushed * mask).sum(1) - ref_logps.sum(1)
    return -F.logsigmoid(beta * (d[:n] - d[n:])).mean()


@pytest.mark.parametrize("objective, gamma, betas", [
    ("wga", 1.0, dict(wga_beta=1.0)), ("wga", 4.0, dict(wga_beta=0.5)),
    ("satimp", 1.0, dict(beta1=5.0, beta2=1.0)), ("satimp", 2.0, dict(beta1=0.5, beta2=0.1)),
])
def test_parameter_gradient_equals_full_logits_formula(tiny_model_path, preference_dataset, tmp_path, objective,
                                                       gamma, betas):
    names = {"beta1": "satimp_beta1", "beta2": "satimp_beta2", "wga_beta": "wga_beta"}
    trainer = _trainer(tiny_model_path, preference_dataset,
                       _config(tmp_path, loss_type="ceu", ceu_weight=gamma, rejected_objective=objective,
                               per_device_train_batch_size=6, **{names[k]: v for k, v in betas.items()}))
    batch, loss, ours = _trainer_gradients(trainer)
    for reference, same in ((objective, True), ("dpo", False)):  # the sibling's formula, then plain DPO
        trainer.model.zero_grad()
        ref_loss = _reference_sibling_loss(trainer.model, trainer.ref_model, batch, 0.5, gamma, reference, **betas)
        ref_loss.backward()
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=2e-4, atol=1e-5)
        expected = _grads(trainer.model)
        assert ours.keys() == expected.keys()
        close = [torch.allclose(ours[k], g, rtol=2e-3, atol=1e-4 * g.abs().max().item()) for k, g in expected.items()]
        assert all(close) if same else not all(close)


@pytest.mark.parametrize("objective", ["wga", "satimp"])
def test_trains_one_step(tiny_model_path, preference_dataset, tmp_path, objective):
    trainer = _trainer(tiny_model_path, preference_dataset,
                       _config(tmp_path, loss_type="ceu", rejected_objective=objective, max_steps=1))
    before = copy.deepcopy(trainer.model.state_dict())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 1 and math.isfinite(logs[0]["loss"])
    for key in (f"loss/{objective}_term", "loss/dpo_term", "ceu/p_rejected_mean", "logps/rejected_token_min"):
        assert key in logs[0] and math.isfinite(logs[0][key]), key
    assert "loss/ceu_term" not in logs[0]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize("kw, match", [
    (dict(wga_beta=-1.0), r"wga_beta=-1.0 is out of range: use a finite value >= 0"),
    (dict(wga_beta=float("inf")), r"wga_beta=inf is out of range"),
    (dict(satimp_beta1=float("nan")), r"satimp_beta1=nan is out of range"),
    (dict(satimp_beta2=-0.5), r"satimp_beta2=-0.5 is out of range: use a finite value >= 0"),
    (dict(rejected_objective="wga", ceu_exact_gradient=True),
     r"ceu_exact_gradient=True supports rejected_objective in \('ceu_full', 'ceu_prefix'\), not 'wga'.*"
     r"Set ceu_exact_gradient=False"),
    (dict(rejected_objective="satimp", ceu_exact_gradient=True), r"not 'satimp'"),
    (dict(rejected_objective="WGA"), r"rejected_objective='WGA': use one of \('ceu_full', 'ceu_prefix', 'wga', "
                                     r"'satimp'\)"),
])
def test_bad_values(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, loss_type="ceu", **kw)
