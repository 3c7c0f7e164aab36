"""ce_u_loss / unified_cross_entropy with implementation="triton" against an independent float64 reference (the naive
formulas differentiated by autograd). The kernel runs under Triton's CPU interpreter in one child process (triton.jit
reads TRITON_INTERPRET when triton is first imported); shapes are tiny because the interpreter is slow."""

import warnings

import pytest
import torch

from ceu_rl.objectives import ce_u_loss, unified_cross_entropy

from .reference import naive_unified
from .triton_child import run_under_triton_interpreter


def reference(logits, labels, unlearn, reduction="mean", num_items=None, ignore_index=-100):
    """float64 value and logit gradient (of value.sum()) of CE where unlearn is False, CE(q, p) where True."""
    z = logits.detach().double().reshape(-1, logits.shape[-1]).requires_grad_()
    value = naive_unified(z, labels, unlearn, reduction, num_items, ignore_index)
    value.sum().backward()
    return value.detach(), z.grad.view(logits.shape)


def ours(fn, logits, *args, **kw):
    z = logits.detach().clone().requires_grad_()
    value = fn(z, *args, **kw)
    value.sum().backward()
    return value.detach(), z.grad


def assert_matches(got, expected, rtol, atol):
    for name, g, e in zip(("value", "grad"), got, expected):
        assert torch.isfinite(g).all(), name
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(g.double(), e.double(), rtol=rtol, atol=atol * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")


def make_inputs(n=11, vocab=40, seed=0, dtype=torch.float32):
    """Rows with p_y rounding to 1 in float32 (rows 1, 2), ignored rows, -inf entries, mixed CE / CE-U rows."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, vocab, generator=gen) * 2).to(dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    logits[1, labels[1]] = 40.0
    logits[2, labels[2]] = 60.0
    assert torch.softmax(logits[1].float(), -1)[labels[1]] == 1 and torch.softmax(logits[2].float(), -1)[labels[2]] == 1
    logits[3, (labels[3] + 1) % vocab] = float("-inf")
    labels[[4, 9]] = -100
    unlearn = torch.rand(n, generator=gen) < 0.5
    unlearn[[1, 2]] = torch.tensor([True, False])  # p_y = 1 for a CE-U row and for a CE row
    return logits, labels, unlearn


def triton_interpreter_check():
    """Run in a child process with TRITON_INTERPRET=1 set before triton is imported."""
    import ceu_rl.objectives._linear_ce_u_triton as kernel
    from ceu_rl.objectives import _unified_function

    calls = []
    original = kernel.chunk_value_and_logit_grad_triton
    kernel.chunk_value_and_logit_grad_triton = lambda *a, **k: calls.append(k["need_grad"]) or original(*a, **k)
    warnings.simplefilter("error")  # a fallback to torch would raise instead of passing silently
    all_true = lambda labels: torch.ones_like(labels, dtype=torch.bool)  # noqa: E731

    logits, labels, unlearn = make_inputs()
    for reduction in ("mean", "sum", "none"):
        before = logits.clone()
        got = ours(unified_cross_entropy, logits, labels, unlearn, reduction=reduction, implementation="triton")
        assert torch.equal(logits, before), "the user's logits were modified"
        assert_matches(got, reference(logits, labels, unlearn, reduction), rtol=1e-5, atol=1e-6)
        got = ours(ce_u_loss, logits, labels, reduction=reduction, implementation="triton")
        assert_matches(got, reference(logits, labels, all_true(labels), reduction), rtol=1e-5, atol=1e-6)
    logits3, labels3 = logits.view(1, 11, 40), labels.view(1, 11)  # (batch, seq, V) as from a causal LM
    got = ours(ce_u_loss, logits3, labels3, num_items_in_batch=20, implementation="triton")
    assert_matches(got, reference(logits3, labels3, all_true(labels3), "mean", 20), rtol=1e-5, atol=1e-6)

    # bf16 logits: computed in float32, gradient returned in bf16 (tolerance of one bf16 rounding)
    bf16, labels_b, unlearn_b = make_inputs(seed=1, dtype=torch.bfloat16)
    got = ours(unified_cross_entropy, bf16, labels_b, unlearn_b, reduction="none", implementation="triton")
    assert got[1].dtype == torch.bfloat16 and got[0].dtype == torch.float32
    assert_matches(got, reference(bf16, labels_b, unlearn_b, "none"), rtol=1e-2, atol=1e-2)

    # several vocabulary blocks (V = 1100 > BLOCK = 1024) and several row chunks (5 rows each)
    _unified_function._CHUNK_ELEMENTS = 5 * 1100
    wide, labels_w, unlearn_w = make_inputs(n=12, vocab=1100, seed=2)
    got = ours(unified_cross_entropy, wide, labels_w, unlearn_w, implementation="triton")
    assert_matches(got, reference(wide, labels_w, unlearn_w), rtol=1e-5, atol=1e-6)
    assert calls.count(False) >= 3 + 3 + 1 + 1 + 3 and calls.count(True) == calls.count(False), calls

    # a strided view (vocabulary padded to 48, the first 40 columns used): same result as on a contiguous copy
    padded = torch.randn(11, 48, generator=torch.Generator().manual_seed(4))
    got = ours(unified_cross_entropy, padded[:, :40], labels, unlearn, reduction="sum", implementation="triton")
    assert_matches(got, reference(padded[:, :40].contiguous(), labels, unlearn, "sum"), rtol=1e-5, atol=1e-6)

    # every entry but the label -inf: value 0 and gradient 0 for CE-U (q undefined, the documented convention) and CE
    lone = torch.full((2, 40), float("-inf"))
    lone[:, 3] = 1.5
    value, grad = ours(unified_cross_entropy, lone, torch.tensor([3, 3]), torch.tensor([True, False]),
                       reduction="none", implementation="triton")
    assert torch.equal(value, torch.zeros(2)) and torch.equal(grad, torch.zeros(2, 40)), (value, grad)

    # the Function saves the logits (which autograd holds anyway) and length-N vectors, no other N x V tensor
    z = logits.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        unified_cross_entropy(z, labels, unlearn, implementation="triton")
    big = [t for t in saved if t.numel() >= z.numel()]
    assert len(big) == 1 and big[0].data_ptr() == z.data_ptr(), [tuple(t.shape) for t in saved]
    assert sum(t.numel() for t in saved) <= z.numel() + 4 * len(labels) + 4, [tuple(t.shape) for t in saved]
    print("triton interpreter check passed")


def test_triton_matches_float64_reference_under_the_interpreter():
    """The Triton path (the GPU path) run by Triton's CPU interpreter: reductions mean/sum/none, num_items_in_batch,
    p_y = 1 rows (CE and CE-U), ignored rows, -inf entries, rows with only the label finite, bf16 logits, a strided
    logits view, several vocabulary blocks and row chunks;
    the kernel is checked to have run (no fallback) and the input logits to be left unchanged."""
    pytest.importorskip("triton")
    run_under_triton_interpreter("tests.objectives.test_ce_u_loss_triton", "triton_interpreter_check")


def test_triton_falls_back_to_torch_without_cuda_or_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    logits, labels, unlearn = make_inputs()
    with pytest.warns(UserWarning, match="implementation='triton' unavailable .*Triton needs a CUDA device"):
        got = ours(unified_cross_entropy, logits, labels, unlearn, implementation="triton")
    assert_matches(got, reference(logits, labels, unlearn), rtol=1e-5, atol=1e-6)


def test_triton_falls_back_to_torch_for_float64(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    logits, labels, _ = make_inputs()
    logits = logits.double()
    with pytest.warns(UserWarning, match="implementation='triton' unavailable .*float32, inputs are torch.float64"):
        got = ours(ce_u_loss, logits, labels, implementation="triton")
    assert got[0].dtype == torch.float64
    assert_matches(got, reference(logits, labels, torch.ones_like(labels, dtype=torch.bool)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", ["ce_u_loss", "unified_cross_entropy"])
def test_unknown_implementation_is_a_clear_error(fn):
    logits, labels, unlearn = make_inputs()
    args = (logits, labels) if fn == "ce_u_loss" else (logits, labels, unlearn)
    with pytest.raises(ValueError, match=r"implementation='cuda' is not supported: use one of \('torch', 'triton'\)"):
        {"ce_u_loss": ce_u_loss, "unified_cross_entropy": unified_cross_entropy}[fn](*args, implementation="cuda")
