"""CE-U-DPO's `rejected_objective="ceu_prefix"`, large `ceu_weight`, and the DPO-Positive baseline (`loss_type="dpop"`)
through CEUDPOTrainer, each against a full-logits formula written out here (no ceu_rl code in the references)."""

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from ceu_rl.objectives.dpo_weights import shared_prefix_mask

from .conftest import CHOSEN, PROMPTS
from .test_ceu_dpo_trainer import _config, _full_logits_logps, _grads, _naive_ce_u, _trainer, _trainer_gradients

# rejected answers that start as the chosen ones do, then leave them (and one that shares nothing)
REJECTED_SHARED = [" Paris is the capital of Italy.", " The sky is green.", " A cat has seven legs.",
                   " Bees make milk.", " A fish barks.", " Five."]


@pytest.fixture
def shared_prefix_dataset():
    return Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED_SHARED})


def _loop_shared_prefix(ids, mask):
    """Shared-prefix mask by explicit loops: rejected position t is shared when every completion position of both
    rows from the start of the completions up to t holds the same id."""
    n, length = ids.shape[0] // 2, ids.shape[1]
    out = torch.zeros(n, length, dtype=torch.bool)
    for i in range(n):
        c_ids, r_ids, c_m, r_m = ids[i], ids[n + i], mask[i].bool(), mask[n + i].bool()
        starts_c = [t for t in range(length) if c_m[t]]
        starts_r = [t for t in range(length) if r_m[t]]
        if not starts_c or not starts_r or starts_c[0] != starts_r[0]:
            continue
        for t in range(starts_c[0], length):
            if not (c_m[t] and r_m[t] and c_ids[t] == r_ids[t]):
                break
            out[i, t] = True
    return out


def test_shared_prefix_mask_against_loops():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        n, length = 4, 12
        ids = torch.randint(0, 3, (2 * n, length), generator=gen)
        ids[n:] = torch.where(torch.rand(n, length, generator=gen) < 0.8, ids[:n], ids[n:])  # long common runs
        start = torch.randint(0, 4, (n,), generator=gen)
        ends = torch.randint(4, length + 1, (2 * n,), generator=gen)
        pos = torch.arange(length)
        mask = (pos >= start.repeat(2)[:, None]) & (pos < ends[:, None])
        mask[0] = (pos >= start[0] + 1) & (pos < ends[0])  # pair 0: completions start at different positions
        torch.testing.assert_close(shared_prefix_mask(ids, mask.long()), _loop_shared_prefix(ids, mask.long()))
    with pytest.raises(ValueError, match="must both be"):
        shared_prefix_mask(torch.zeros(3, 4), torch.zeros(3, 4))


def _reference_loss(model, ref_model, batch, beta, gamma, objective):
    """CE-U-DPO from full logits: DPO's sigmoid loss whose rejected log-probs keep their value; their gradient is
    gamma grad CE-U (naive), except, for ceu_prefix, on the loop-computed shared prefix, where it is DPO's."""
    logits, targets, mask, token_logps = _full_logits_logps(model, batch)
    with torch.no_grad():
        ref_logps = _full_logits_logps(ref_model, batch)[3]
    n = batch["input_ids"].shape[0] // 2
    ceu = _naive_ce_u(logits[n:], targets[n:]) * mask[n:]
    pushed = token_logps.clone()
    ceu_tokens = token_logps[n:].detach() + gamma * (ceu - ceu.detach())
    if objective == "ceu_prefix":
        shared = _loop_shared_prefix(batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:])
        assert shared.any() and (mask[n:] & ~shared).any()  # the test exercises both kinds of token
        ceu_tokens = torch.where(shared, token_logps[n:], ceu_tokens)
    pushed[n:] = ceu_tokens
    d = pushed.sum(1) - ref_logps.sum(1)
    return -F.logsigmoid(beta * (d[:n] - d[n:])).mean()


@pytest.mark.parametrize("objective, gamma, exact", [("ceu_prefix", 1.0, False), ("ceu_prefix", 4.0, False),
                                                     ("ceu_full", 4.0, False), ("ceu_prefix", 4.0, True)])
def test_variant_gradient_equals_full_logits_formula(tiny_model_path, shared_prefix_dataset, tmp_path, objective,
                                                     gamma, exact):
    trainer = _trainer(tiny_model_path, shared_prefix_dataset,
                       _config(tmp_path, loss_type="ceu", ceu_weight=gamma, rejected_objective=objective,
                               per_device_train_batch_size=6, ceu_exact_gradient=exact))
    batch, loss, ours = _trainer_gradients(trainer)
    ref_loss = _reference_loss(trainer.model, trainer.ref_model, batch, 0.5, gamma, objective)
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=2e-4, atol=1e-5)
    expected = _grads(trainer.model)
    assert ours.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, rtol=2e-3, atol=1e-4 * grad.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_prefix_variant_differs_from_full_only_through_shared_tokens(tiny_model_path, preference_dataset,
                                                                     shared_prefix_dataset, tmp_path):
    """Pairs that share no completion prefix: ceu_prefix is ceu_full; pairs that share one: it is not."""
    def grads(dataset, objective):
        trainer = _trainer(tiny_model_path, dataset, _config(tmp_path, loss_type="ceu", rejected_objective=objective,
                                                             per_device_train_batch_size=6))
        batch, _, grad = _trainer_gradients(trainer)
        return _loop_shared_prefix(batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]).any(), grad

    no_shared = preference_dataset.select([1, 2, 5])  # no common first token in these pairs (tiny tokenizer)
    (shared_a, a), (_, b) = grads(no_shared, "ceu_full"), grads(no_shared, "ceu_prefix")
    assert not shared_a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    (shared_a, a), (_, b) = grads(shared_prefix_dataset, "ceu_full"), grads(shared_prefix_dataset, "ceu_prefix")
    assert shared_a and any(not torch.allclose(a[name], b[name]) for name in a)


@pytest.mark.parametrize("lam", [0.0, 5.0, 50.0])
def test_dpop_gradient_equals_full_logits_formula(tiny_model_path, preference_dataset, tmp_path, lam):
    trainer = _trainer(tiny_model_path, preference_dataset,
                       _config(tmp_path, loss_type="dpop", dpop_lambda=lam, per_device_train_batch_size=6))
    batch, loss, ours = _trainer_gradients(trainer)
    _, _, _, token_logps = _full_logits_logps(trainer.model, batch)
    with torch.no_grad():
        ref_logps = _full_logits_logps(trainer.ref_model, batch)[3]
    n = batch["input_ids"].shape[0] // 2
    d = token_logps.sum(1) - ref_logps.sum(1)
    dw, dl = d[:n], d[n:]
    assert (dw < 0).any()  # the penalty is active on some pair (perturbed policy)
    ref_loss = -F.logsigmoid(0.5 * (dw - dl - lam * torch.relu(-dw))).mean()  # Pal et al. 2024, Eq. 3
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=2e-4, atol=1e-5)
    for name, grad in _grads(trainer.model).items():
        torch.testing.assert_close(ours[name], grad, rtol=2e-3, atol=1e-4 * grad.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")
    penalty = trainer._metrics["train"]["loss/dpop_penalty"][0]
    assert penalty == pytest.approx((lam * torch.relu(-dw)).mean().item(), rel=1e-3, abs=1e-6)


def test_dpop_trains_with_precomputed_reference(tiny_model_path, preference_dataset, tmp_path):
    trainer = _trainer(tiny_model_path, preference_dataset,
                       _config(tmp_path, loss_type="dpop", precompute_ref_log_probs=True), no_ref=True)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all("loss/dpop_penalty" in h and torch.isfinite(torch.tensor(h["loss"])) for h in logs)


@pytest.mark.parametrize("kw, match", [
    (dict(loss_type="ceu", rejected_objective="prefix"), "rejected_objective='prefix'"),
    (dict(loss_type="dpop", dpop_lambda=-1.0), "dpop_lambda must be >= 0"),
    (dict(loss_type="dpop", ld_alpha=0.5), "ld_alpha=0.5 is not supported with loss_type='dpop'"),
    (dict(loss_type="dpop", use_weighting=True), "use_weighting"),
    (dict(loss_type=["dpop", "sft"]), "'dpop' stands alone"),
])
def test_bad_values(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, **kw)
