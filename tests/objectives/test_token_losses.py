"""ce_u_loss, unified_cross_entropy and gradient_ascent_loss against float64 autograd of the naive formulas."""

import pytest
import torch

from ceu_rl.objectives import _unified_function, ce_u_loss, gradient_ascent_loss, unified_cross_entropy

from .reference import naive_ce, naive_ce_u, naive_log_p

F64_TOL = dict(rtol=1e-10, atol=1e-12)


def _value_and_grad(fn, logits, labels, **kw):
    z = logits.clone().requires_grad_()
    value = fn(z, labels, **kw)
    value.sum().backward()
    return value.detach(), z.grad


@pytest.mark.parametrize("vocab", [2, 7, 1000, 50000])
@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_ce_u_matches_naive_float64(vocab, shape):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(*shape, vocab, generator=gen, dtype=torch.float64) * 4
    labels = torch.randint(0, vocab, shape, generator=gen)
    value, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    ref_value, ref_grad = naive_ce_u(logits, labels)
    assert value.shape == labels.shape
    torch.testing.assert_close(value, ref_value, **F64_TOL)
    torch.testing.assert_close(grad, ref_grad, **F64_TOL)


def test_ce_u_gradient_is_p_minus_q_by_finite_differences():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 9, generator=gen, dtype=torch.float64)
    labels = torch.tensor([4])
    _, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="sum")
    # CE-U's gradient equals that of -log(1 - p_y): central differences of that scalar
    f = lambda z: -torch.log1p(-torch.softmax(z, -1)[0, 4])  # noqa: E731
    eps = 1e-6
    fd = torch.zeros_like(logits)
    for k in range(9):
        e = torch.zeros_like(logits)
        e[0, k] = eps
        fd[0, k] = (f(logits + e) - f(logits - e)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)


def test_float32_matches_float64_reference():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(64, 32000, generator=gen) * 3
    labels = torch.randint(0, 32000, (64,), generator=gen)
    value, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    ref_value, ref_grad = naive_ce_u(logits, labels)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    # float32 sums over 32k entries: ~1e-5 relative rounding
    torch.testing.assert_close(value.double(), ref_value, rtol=5e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scale", [30.0, 1e3, 1e4])
def test_confident_label_float32_is_finite_and_exact(scale):
    # p_y rounds to exactly 1 in float32: 1 - p_y would be 0, the masked log-sum-exp is not
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 100, generator=gen)
    labels = torch.arange(8)
    logits[torch.arange(8), labels] = scale
    logits[0, 50] = -scale
    assert torch.softmax(logits, -1)[torch.arange(8), labels].eq(1.0).all()
    value, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    ref_value, ref_grad = naive_ce_u(logits, labels)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)
    # bounded: the label entry of the gradient is p_y = 1
    torch.testing.assert_close(grad[torch.arange(8), labels], torch.ones(8))


def test_neg_inf_entries_and_degenerate_rows():
    logits = torch.randn(4, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3])
    logits[0, 3:] = float("-inf")  # some entries -inf
    logits[1, :] = float("-inf")
    logits[1, 1] = 2.0  # every entry but the label is -inf: q undefined -> 0
    logits[2, 2] = float("-inf")  # the label itself is -inf: p_y = 0, already forgotten
    value, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    ref_value, ref_grad = naive_ce_u(logits, labels)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(value, ref_value, **F64_TOL)
    torch.testing.assert_close(grad, ref_grad, **F64_TOL)
    assert value[1] == 0 and grad[1].abs().sum() == 0
    assert grad[2].abs().sum() == 0


def test_ignore_index_and_reductions():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 11, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    labels[0, :2] = -100
    labels[1, 4] = -100
    valid = labels != -100
    ref_value, ref_grad = naive_ce_u(logits, labels.clamp(min=0))
    ref_value = torch.where(valid, ref_value, torch.zeros_like(ref_value))
    ref_grad = ref_grad * valid.unsqueeze(-1)

    none, g_none = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    torch.testing.assert_close(none, ref_value, **F64_TOL)
    torch.testing.assert_close(g_none, ref_grad, **F64_TOL)
    total, g_sum = _value_and_grad(ce_u_loss, logits, labels, reduction="sum")
    torch.testing.assert_close(total, ref_value.sum(), **F64_TOL)
    torch.testing.assert_close(g_sum, ref_grad, **F64_TOL)
    mean, g_mean = _value_and_grad(ce_u_loss, logits, labels, reduction="mean")
    torch.testing.assert_close(mean, ref_value.sum() / valid.sum(), **F64_TOL)
    torch.testing.assert_close(g_mean, ref_grad / valid.sum(), **F64_TOL)
    # gradient accumulation: divide by the tokens of the whole accumulated batch
    acc, g_acc = _value_and_grad(ce_u_loss, logits, labels, reduction="mean", num_items_in_batch=20)
    torch.testing.assert_close(acc, ref_value.sum() / 20, **F64_TOL)
    torch.testing.assert_close(g_acc, ref_grad / 20, **F64_TOL)


def test_no_valid_position_gives_zero_not_nan():
    logits = torch.randn(3, 7, requires_grad=True)
    labels = torch.full((3,), -100)
    loss = ce_u_loss(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_computed_in_float32(dtype):
    gen = torch.Generator().manual_seed(5)
    logits = (torch.randn(16, 300, generator=gen) * 5).to(dtype)
    labels = torch.randint(0, 300, (16,), generator=gen)
    value, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    ref_value, ref_grad = naive_ce_u(logits, labels)  # on the same (rounded) logits
    assert value.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-5)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(grad.double(), ref_grad, rtol=tol, atol=tol * 1e-2)


def test_chunked_rows_match_unchunked(monkeypatch):
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(37, 50, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 50, (37,), generator=gen)
    ref_value, ref_grad = naive_ce_u(logits, labels)
    monkeypatch.setattr(_unified_function, "_CHUNK_ELEMENTS", 50 * 4)  # 4 rows a chunk, last chunk partial
    value, grad = _value_and_grad(ce_u_loss, logits, labels, reduction="none")
    torch.testing.assert_close(value, ref_value, **F64_TOL)
    torch.testing.assert_close(grad, ref_grad, **F64_TOL)


def test_unified_picks_ce_or_ce_u_per_token():
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 4, 23, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, 23, (3, 4), generator=gen)
    unlearn = torch.rand(3, 4, generator=gen) > 0.5
    unlearn[0, 0], unlearn[0, 1] = True, False
    value, grad = _value_and_grad(unified_cross_entropy, logits, labels, unlearn_mask=unlearn, reduction="none")
    ceu_v, ceu_g = naive_ce_u(logits, labels)
    ce_v, ce_g = naive_ce(logits, labels)
    torch.testing.assert_close(value, torch.where(unlearn, ceu_v, ce_v), **F64_TOL)
    torch.testing.assert_close(grad, torch.where(unlearn.unsqueeze(-1), ceu_g, ce_g), **F64_TOL)
    # all-False is standard cross entropy, as torch computes it
    z = logits.clone().requires_grad_()
    ours = unified_cross_entropy(z, labels, torch.zeros_like(unlearn))
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits.view(-1, 23), labels.view(-1)), **F64_TOL)


@pytest.mark.parametrize("vocab", [2, 1000])
def test_gradient_ascent_matches_naive(vocab):
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 5, vocab, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, vocab, (2, 5), generator=gen)
    labels[1, 2] = -100
    valid = labels != -100
    value, grad = _value_and_grad(gradient_ascent_loss, logits, labels, reduction="mean")
    ref_value, ref_grad = naive_log_p(logits, labels.clamp(min=0))
    torch.testing.assert_close(value, (ref_value * valid).sum() / valid.sum(), **F64_TOL)
    torch.testing.assert_close(grad, ref_grad * valid.unsqueeze(-1) / valid.sum(), **F64_TOL)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ce_u_loss(torch.randn(3, 5), torch.tensor([0, 1])), "shape mismatch"),
        (lambda: ce_u_loss(torch.randn(3, 5), torch.tensor([0, 1, 5])), "outside \\[0, 5\\)"),
        (lambda: ce_u_loss(torch.randn(3, 5), torch.tensor([0, -3, 1])), "outside"),
        (lambda: ce_u_loss(torch.randint(0, 9, (3, 5)), torch.tensor([0, 1, 2])), "logits must be a floating-point"),
        (lambda: ce_u_loss(torch.randn(3, 5), torch.tensor([0.0, 1.0, 2.0])), "labels must be an integer"),
        (lambda: ce_u_loss(torch.randn(3, 5), torch.tensor([0, 1, 2]), reduction="avg"), "reduction='avg'"),
        (lambda: ce_u_loss(torch.randn(3, 1), torch.tensor([0, 0, 0])), "at least 2 classes"),
        (
            lambda: unified_cross_entropy(torch.randn(3, 5), torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1])),
            "unlearn_mask must be a bool",
        ),
        (
            lambda: unified_cross_entropy(torch.randn(3, 5), torch.tensor([0, 1, 2]), torch.tensor([True, False])),
            "unlearn_mask has shape",
        ),
        (lambda: ce_u_loss(torch.tensor([[0.0, float("nan")]]), torch.tensor([0])), "NaN or \\+inf"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
