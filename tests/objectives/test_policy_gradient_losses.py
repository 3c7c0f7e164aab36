"""GRPO surrogate and CE-U-GRPO per token against closed-form gradients (autograd through log_softmax, float64)."""

import pytest
import torch

from ceu_rl.objectives import ceu_grpo_token_loss, grpo_token_loss

from .reference import naive_ce_u


def _setup(seed=0, vocab=13):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1, vocab, generator=gen, dtype=torch.float64).requires_grad_()
    y = torch.tensor([3])
    logp_all = torch.log_softmax(z, -1)
    return z, y, logp_all[0, 3].reshape(1, 1), -(logp_all.exp() * logp_all).sum(-1).reshape(1, 1)


@pytest.mark.parametrize("ratio, grad_expected", [(1.0, True), (0.9, True), (0.75, False), (1.5, True)])
def test_grpo_negative_advantage_is_scaled_ascent_where_not_clipped(ratio, grad_expected):
    z, y, logp, _ = _setup()
    old = logp.detach() - torch.log(torch.tensor(ratio, dtype=torch.float64))
    grpo_token_loss(logp, old, torch.tensor([[-2.0]])).sum().backward()
    p = torch.softmax(z.detach(), -1)
    ascent = torch.zeros_like(p)
    ascent[0, 3] = 1
    ascent = ascent - p  # grad of log p_y
    expected = 2.0 * ratio * ascent if grad_expected else torch.zeros_like(p)
    torch.testing.assert_close(z.grad, expected)


@pytest.mark.parametrize("ratio, active", [(1.0, True), (0.9, True), (0.75, False), (1.5, True)])
def test_ceu_grpo_negative_advantage_gradient(ratio, active):
    z, y, logp, entropy = _setup()
    old = logp.detach() - torch.log(torch.tensor(ratio, dtype=torch.float64))
    loss = ceu_grpo_token_loss(logp, entropy, old, torch.tensor([[-2.0]]))
    loss.sum().backward()
    ceu_value, ceu_grad = naive_ce_u(z.detach(), y)
    scale = 2.0 * ratio if active else 0.0
    torch.testing.assert_close(z.grad, scale * ceu_grad)
    torch.testing.assert_close(loss.detach().reshape(1), scale * ceu_value)


def test_delta_caps_the_active_region():
    z, y, logp, entropy = _setup()
    old = logp.detach() - torch.log(torch.tensor(2.0, dtype=torch.float64))  # r = 2 > delta
    ceu_grpo_token_loss(logp, entropy, old, torch.tensor([[-1.0]]), delta=1.5).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_positive_advantage_is_trls_surrogate():
    z, y, logp, entropy = _setup()
    old = logp.detach()
    a = ceu_grpo_token_loss(logp, entropy, old, torch.tensor([[0.7]]))
    b = grpo_token_loss(logp, old, torch.tensor([[0.7]]))
    torch.testing.assert_close(a, b)
