"""NPO and SimNPO against their closed forms written independently (softplus form, analytic gradients)."""

import math

import pytest
import torch

from ceu_rl.objectives import npo_loss, simnpo_loss


def _softplus(x):
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_npo_value_and_gradient(beta):
    logps = torch.tensor([-12.0, -3.5, -40.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-10.0, -4.0, -41.0], dtype=torch.float64)
    loss = npo_loss(logps, ref, beta=beta)
    loss.backward()
    diffs = (logps.detach() - ref).tolist()
    # -(2/b) log sigma(-b d) = (2/b) softplus(b d); d/dlogp = 2 sigma(b d), mean over 3
    expected = sum(2 / beta * _softplus(beta * d) for d in diffs) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(logps.grad, torch.tensor([2 * _sigmoid(beta * d) / 3 for d in diffs], dtype=torch.float64))


def test_npo_reference_gets_no_gradient():
    logps = torch.tensor([-2.0], requires_grad=True)
    ref = torch.tensor([-1.0], requires_grad=True)
    npo_loss(logps, ref).backward()
    assert ref.grad is None


@pytest.mark.parametrize("beta, delta", [(2.5, 0.0), (1.0, 0.5)])
def test_simnpo_value_and_gradient(beta, delta):
    logps = torch.tensor([-12.0, -3.5], dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2])
    loss = simnpo_loss(logps, lengths, beta=beta, delta=delta)
    loss.backward()
    xs = [beta * lp / n + beta * delta for lp, n in zip(logps.detach().tolist(), lengths.tolist())]
    # -(2/b) log sigma(b (-logp/n - delta)) = (2/b) softplus(b logp/n + b delta); d/dlogp = 2 sigma(.) / n
    expected = sum(2 / beta * _softplus(x) for x in xs) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    grads = [2 * _sigmoid(x) / n / 2 for x, n in zip(xs, lengths.tolist())]
    torch.testing.assert_close(logps.grad, torch.tensor(grads, dtype=torch.float64))


def test_bad_input():
    with pytest.raises(ValueError, match="beta must be > 0"):
        npo_loss(torch.zeros(2), torch.zeros(2), beta=0.0)
    with pytest.raises(ValueError, match="ref_logps has shape"):
        npo_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="lengths must be > 0"):
        simnpo_loss(torch.zeros(2), torch.tensor([3, 0]))
