"""CE-U's siblings (ceu_rl/objectives/sibling_losses.py): value and logit gradient of WGA, SatImp, WTNPO and UNDIAL
against independent float64 formulas on random logits including p_y = 1 - 1e-6, against open-unlearning's code
(ported line by line below) where it follows the paper, RMU's activation loss against a hand computation on a toy
model, and bad values rejected with the field's name."""

import math

import pytest
import torch

from ceu_rl.objectives import (
    ce_u_loss,
    rmu_activation_loss,
    rmu_control_vector,
    satimp_loss,
    undial_loss,
    wga_loss,
    wtnpo_loss,
)
from tests.objectives.reference import logits_with_label_prob

P_LABEL = [1e-4, 0.03, 0.3, 0.5, 0.8, 0.99, 1 - 1e-6]


def _batch(vocab=40, seed=0):
    """float64 logits (N, V) with p_y spanning P_LABEL at label 0."""
    p_label = torch.tensor(P_LABEL, dtype=torch.float64)
    z, y = logits_with_label_prob(p_label, vocab, torch.Generator().manual_seed(seed))
    return z, y


def _logp_grad(loss_fn, z, y, mask):
    """Loss value and d loss / d z, going through log p_y = log_softmax(z)[y] as the trainer's fused head gives."""
    z = z.clone().requires_grad_()
    logp = torch.log_softmax(z, -1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    loss = loss_fn(logp, mask)
    loss.backward()
    return loss.detach(), z.grad


def _ga_weighted_reference(z, y, mask, weight):
    """Independent float64 formula for sg(w) log p_y averaged over valid rows: value mean(w log p_y), logit
    gradient w (e_y - p) / N."""
    p = torch.softmax(z, -1)
    n = mask.sum()
    w = weight(p.gather(-1, y.unsqueeze(-1)).squeeze(-1))
    value = (w * torch.log(p.gather(-1, y.unsqueeze(-1)).squeeze(-1)))[mask].sum() / n
    grad = (w.unsqueeze(-1) * (torch.nn.functional.one_hot(y, z.size(-1)).double() - p)) / n
    return value, torch.where(mask.unsqueeze(-1), grad, torch.zeros_like(grad))


@pytest.mark.parametrize("beta", [0.0, 1.0, 5.0])
def test_wga_value_and_gradient(beta):
    z, y = _batch()
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[2] = False
    value, grad = _logp_grad(lambda lp, m: wga_loss(lp, m, beta=beta), z, y, mask)
    ref_value, ref_grad = _ga_weighted_reference(z, y, mask, lambda p: p**beta)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-14)
    # the label's push is p^beta (1 - p) / N: at p = 1 - 1e-6 it is ~1e-6 / N (GA-like), not CE-U's p / N
    n = int(mask.sum())
    assert grad[-1, 0].item() == pytest.approx((1 - 1e-6) ** beta * 1e-6 / n, rel=1e-6)


@pytest.mark.parametrize("beta1, beta2", [(5.0, 1.0), (5.0, 0.1), (0.0, 0.0), (2.0, 3.0)])
def test_satimp_value_and_gradient(beta1, beta2):
    z, y = _batch(seed=1)
    mask = torch.ones_like(y, dtype=torch.bool)
    value, grad = _logp_grad(lambda lp, m: satimp_loss(lp, m, beta1=beta1, beta2=beta2), z, y, mask)
    ref_value, ref_grad = _ga_weighted_reference(z, y, mask, lambda p: p**beta1 * (1 - p) ** beta2)
    torch.testing.assert_close(value, ref_value, rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize("beta, alpha", [(4.0, 1.5), (1.0, 0.0), (0.5, 2.0)])
def test_wtnpo_value_and_gradient(beta, alpha):
    z, y = _batch(seed=2)
    mask = torch.ones_like(y, dtype=torch.bool)
    ref_p = torch.tensor([0.2, 0.5, 0.9, 0.6, 0.99, 0.999, 1 - 1e-7], dtype=torch.float64)
    value, grad = _logp_grad(lambda lp, m: wtnpo_loss(lp, torch.log(ref_p), m, beta=beta, alpha=alpha), z, y, mask)
    ref_value, ref_grad = _ga_weighted_reference(
        z, y, mask, lambda p: 2 * p ** (beta + alpha) / (p**beta + ref_p**beta))
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-14)


def _open_unlearning_token_weighted(logits, labels, weight_fn):
    """open-unlearning's compute_wga_loss / compute_satimp_loss body (src/trainer/utils.py), on already shifted
    logits and labels: CrossEntropyLoss(reduction="none"), weight from exp(-lm_loss) detached, mean over labels
    != -100."""
    lm_loss = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(
        logits.view(-1, logits.size(-1)), labels.view(-1))
    weight = weight_fn((-lm_loss).exp().detach())
    return -(weight * lm_loss)[labels.view(-1) != -100].mean()


@pytest.mark.parametrize("which", ["wga", "satimp"])
def test_matches_open_unlearning_with_ignored_positions(which):
    """open-unlearning's WGA and SatImp follow the paper (mean over valid tokens): value and gradient equal ours."""
    gen = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(2, 6, 30, generator=gen, dtype=torch.float64))
    labels = torch.randint(0, 30, (2, 6), generator=gen)
    labels[0, :2] = -100
    labels[1, 4:] = -100
    beta, beta1, beta2 = 1.0, 5.0, 1.0
    if which == "wga":
        ours_fn = lambda lp, m: wga_loss(lp, m, beta=beta)  # noqa: E731
        weight_fn = lambda p: p**beta  # noqa: E731
    else:
        ours_fn = lambda lp, m: satimp_loss(lp, m, beta1=beta1, beta2=beta2)  # noqa: E731
        weight_fn = lambda p: p**beta1 * (1 - p) ** beta2  # noqa: E731
    value, grad = _logp_grad(ours_fn, logits, labels, labels != -100)
    z = logits.clone().requires_grad_()
    theirs = _open_unlearning_token_weighted(z, labels, weight_fn)
    theirs.backward()
    torch.testing.assert_close(value, theirs.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, z.grad, rtol=1e-10, atol=1e-15)


def _undial_reference(z, z_ref, y, beta):
    """Independent float64: t_k = exp(z_ref_k - beta [k = y]) / sum; value -sum t log p; gradient (p - t) / N."""
    adjusted = z_ref.clone()
    adjusted[torch.arange(len(y)), y] -= beta
    t = torch.exp(adjusted - adjusted.max(-1, keepdim=True).values)
    t = t / t.sum(-1, keepdim=True)
    logp = torch.log_softmax(z, -1)
    return (-(t * logp).sum(-1)).mean(), (torch.softmax(z, -1) - t) / len(y)


@pytest.mark.parametrize("beta", [0.0, 3.0, 10.0, 30.0])
def test_undial_value_and_gradient(beta):
    z, y = _batch(seed=4)
    z_ref = z + 0.5 * torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    zz = z.clone().requires_grad_()
    loss = undial_loss(zz, z_ref, y, beta=beta)
    loss.backward()
    ref_value, ref_grad = _undial_reference(z, z_ref, y, beta)
    torch.testing.assert_close(loss.detach(), ref_value, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(zz.grad, ref_grad, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("beta", [0.5, 10.0])
def test_undial_current_teacher_closed_form(beta):
    """Teacher = the current model (the first step): gradient p (1 - p) s / (1 - s p) (e_y - q), s = 1 - e^-beta."""
    z, y = _batch(seed=6)
    zz = z.clone().requires_grad_()
    undial_loss(zz, z, y, beta=beta, reduction="sum").backward()
    p = torch.softmax(z, -1)
    p_y = p[:, 0]
    s = -math.expm1(-beta)
    q = p.clone()
    q[:, 0] = 0
    q = q / q.sum(-1, keepdim=True)
    e_y = torch.nn.functional.one_hot(y, z.size(-1)).double()
    expected = (p_y * (1 - p_y) * s / (1 - s * p_y)).unsqueeze(-1) * (e_y - q)
    torch.testing.assert_close(zz.grad, expected, rtol=1e-6, atol=1e-15)


def test_undial_infinite_beta_is_ce_u_with_the_teacher():
    z, y = _batch(seed=7)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    undial_loss(a, z, y, beta=float("inf")).backward()
    ce_u_loss(b, y).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-15)


def _open_unlearning_undial(logits, teacher_logits, labels, beta):
    """open-unlearning's compute_undial_loss body (src/trainer/utils.py) on already shifted inputs."""
    mask = torch.zeros_like(teacher_logits)
    batch_idx = torch.arange(mask.shape[0]).view(-1, 1, 1)
    seq_idx = torch.arange(mask.shape[1]).view(1, -1, 1)
    mask[batch_idx, seq_idx, labels.unsqueeze(-1)] = 1.0
    soft_label = torch.softmax(teacher_logits - mask * beta, dim=-1)
    loss = torch.nn.CrossEntropyLoss(reduction="none")(logits.view(-1, logits.size(-1)),
                                                       soft_label.view(-1, soft_label.size(-1)))
    return loss.mean()


def test_undial_vs_open_unlearning():
    """Equal where every position is a forget token; with ignored positions open-unlearning also averages over
    them (and lowers token V - 100 there), ours only over the forget tokens (the paper)."""
    gen = torch.Generator().manual_seed(8)
    logits = 2 * torch.randn(2, 5, 120, generator=gen, dtype=torch.float64)
    teacher = logits + torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 120, (2, 5), generator=gen)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, theirs = undial_loss(a, teacher, labels, beta=10.0), _open_unlearning_undial(b, teacher, labels, 10.0)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-15)
    labels[:, :2] = -100
    ours_valid = undial_loss(logits, teacher, labels, beta=10.0)
    ref_value, _ = _undial_reference(logits[:, 2:].reshape(-1, 120), teacher[:, 2:].reshape(-1, 120),
                                     labels[:, 2:].reshape(-1), 10.0)
    torch.testing.assert_close(ours_valid, ref_value, rtol=1e-12, atol=1e-14)
    assert abs(ours_valid.item() - _open_unlearning_undial(logits, teacher, labels, 10.0).item()) > 1e-3


def test_rmu_activation_loss_by_hand_on_a_toy_model():
    """A toy 'layer' h = tanh(E[x] W); the loss written as plain Python loops over sequences, tokens and hidden
    units, and its gradient on W by autograd through those loops."""
    gen = torch.Generator().manual_seed(9)
    emb = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (3, 5), generator=gen)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    target = rmu_control_vector(3, 2.0, seed=1).double()
    h = torch.tanh(emb[ids] @ w)
    ours = rmu_activation_loss(h, target, mask)
    (g_ours,) = torch.autograd.grad(ours, w, retain_graph=True)
    rows = []
    for b in range(3):
        tokens = [t for t in range(5) if mask[b, t]]
        if not tokens:
            continue
        per_token = [sum((h[b, t, d] - target[d]) ** 2 for d in range(3)) / 3 for t in tokens]
        rows.append(sum(per_token) / len(tokens))
    hand = sum(rows) / len(rows)
    (g_hand,) = torch.autograd.grad(hand, w)
    torch.testing.assert_close(ours, hand, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_ours, g_hand, rtol=1e-10, atol=1e-14)
    # retain form: target = a frozen copy's activations; equal activations give 0
    assert rmu_activation_loss(h, h.detach(), mask).item() == 0.0


def test_rmu_control_vector():
    u = rmu_control_vector(16, 6.5, seed=3)
    assert u.shape == (16,) and u.dtype == torch.float32
    assert u.norm().item() == pytest.approx(6.5, rel=1e-6) and bool((u >= 0).all())
    torch.testing.assert_close(u, rmu_control_vector(16, 6.5, seed=3), rtol=0, atol=0)
    assert not torch.equal(u, rmu_control_vector(16, 6.5, seed=4))


@pytest.mark.parametrize("call, match", [
    (lambda lp: wga_loss(lp, beta=-1.0), r"beta=-1.0 is out of range: use a value >= 0"),
    (lambda lp: satimp_loss(lp, beta1=-0.5), r"beta1=-0.5 is out of range"),
    (lambda lp: satimp_loss(lp, beta2=-2), r"beta2=-2 is out of range"),
    (lambda lp: wtnpo_loss(lp, lp, alpha=-1), r"alpha=-1 is out of range"),
    (lambda lp: wtnpo_loss(lp, lp[:1]), r"ref_logprobs has shape \(1,\) but logprobs has \(3,\)"),
    (lambda lp: wga_loss(lp.long()), r"logprobs must be a floating-point tensor"),
    (lambda lp: wga_loss(lp, reduction="avg"), r"reduction='avg' is not supported"),
    (lambda lp: undial_loss(torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), beta=-1),
     r"beta=-1 is out of range"),
    (lambda lp: undial_loss(torch.zeros(3, 5), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)),
     r"ref_logits has shape"),
    (lambda lp: rmu_control_vector(8, 0.0), r"steering_coeff=0.0 is out of range"),
    (lambda lp: rmu_activation_loss(torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3, dtype=torch.bool)),
     r"activations must be \(batch, tokens, hidden\)"),
])
def test_bad_values(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.log(torch.tensor([0.5, 0.2, 0.9])))
