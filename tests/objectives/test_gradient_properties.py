"""Property tests (hypothesis) on per-token logit gradients, reduction "sum".

Stated tolerance: float64 inputs, |L1 - closed form| <= 1e-9 (absolute, the norms are <= 2).
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ceu_rl.objectives import ce_u_loss, gradient_ascent_loss

TOL = 1e-9


@st.composite
def logits_and_label(draw):
    vocab = draw(st.integers(min_value=2, max_value=64))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, generator=gen, dtype=torch.float64) * scale
    label = draw(st.integers(min_value=0, max_value=vocab - 1))
    boost = draw(st.sampled_from([0.0, 5.0, 20.0, 40.0]))  # push p_y towards 1
    logits[label] += boost
    return logits.unsqueeze(0), torch.tensor([label])


def _grad(fn, logits, labels):
    z = logits.clone().requires_grad_()
    fn(z, labels, reduction="sum").backward()
    return z.grad


@settings(max_examples=200, deadline=None)
@given(logits_and_label())
def test_ce_u_gradient_l1_is_two_p_y(case):
    logits, labels = case
    grad = _grad(ce_u_loss, logits, labels)
    p_y = torch.softmax(logits, -1)[0, labels[0]]
    assert torch.isfinite(grad).all()
    assert abs(grad.abs().sum().item() - 2 * p_y.item()) <= TOL
    assert abs(grad[0, labels[0]].item() - p_y.item()) <= TOL  # label component p_y


@settings(max_examples=200, deadline=None)
@given(logits_and_label())
def test_gradient_ascent_gradient_l1_is_two_one_minus_p_y(case):
    logits, labels = case
    grad = _grad(gradient_ascent_loss, logits, labels)
    p_y = torch.softmax(logits, -1)[0, labels[0]]
    assert torch.isfinite(grad).all()
    assert abs(grad.abs().sum().item() - 2 * (1 - p_y.item())) <= TOL
    assert abs(grad[0, labels[0]].item() - (1 - p_y.item())) <= TOL


@settings(max_examples=100, deadline=None)
@given(logits_and_label(), st.sampled_from([torch.float32, torch.bfloat16]))
def test_no_nan_or_inf_in_low_precision(case, dtype):
    logits, labels = case
    z = (logits * 50).to(dtype).requires_grad_()
    for fn in (ce_u_loss, gradient_ascent_loss):
        z.grad = None
        value = fn(z, labels, reduction="sum")
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all()
