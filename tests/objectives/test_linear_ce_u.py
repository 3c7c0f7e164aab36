"""linear_ce_u_loss against an independent float64 reference: full logits h W^T + b, the naive CE-U formula
(q = softmax(stopgrad(z) with z_y = -inf), -sum q log softmax(z)) and CE, differentiated by autograd. Plus its
memory claim (no N x V tensor, peak live memory of a chunk) measured op by op."""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ceu_rl.objectives import ce_u_loss, ce_u_loss_from_logprobs, linear_ce_u_loss

from .reference import naive_unified
from .triton_child import run_under_triton_interpreter


def reference(hidden, weight, labels, unlearn=None, bias=None, reduction="mean", num_items=None, ignore_index=-100):
    """float64 value and gradients (hidden, weight, bias) of the per-token CE-U / CE on materialised logits."""
    h = hidden.detach().double().requires_grad_()
    w = weight.detach().double().requires_grad_()
    b = None if bias is None else bias.detach().double().requires_grad_()
    z = h @ w.T if b is None else h @ w.T + b
    value = naive_unified(z.reshape(-1, w.shape[0]), labels, unlearn, reduction, num_items, ignore_index)
    value.sum().backward()
    return value.detach(), h.grad, w.grad, None if b is None else b.grad


def ours(hidden, weight, labels, unlearn=None, bias=None, **kw):
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    b = None if bias is None else bias.detach().clone().requires_grad_()
    value = linear_ce_u_loss(h, w, labels, unlearn, b, **kw)
    value.sum().backward()
    return value.detach(), h.grad, w.grad, None if b is None else b.grad


def assert_matches(got, expected, rtol=1e-5, atol=1e-6):
    """float32 tolerance: rtol 1e-5 per entry, atol 1e-6 of the tensor's largest entry (sums over tokens cancel)."""
    names = ("value", "grad hidden", "grad weight", "grad bias")
    for name, g, e in zip(names, got, expected):
        if e is None:
            assert g is None, name
            continue
        assert torch.isfinite(g).all(), name
        scale = max(1.0, e.abs().max().item()) if e.numel() else 1.0
        torch.testing.assert_close(g.double(), e.double(), rtol=rtol, atol=atol * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")


def random_inputs(n=37, width=16, vocab=50, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, width, generator=gen).to(dtype)
    weight = (torch.randn(vocab, width, generator=gen) * 0.7).to(dtype)
    bias = torch.randn(vocab, generator=gen).to(dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[::5] = -100
    unlearn = torch.rand(n, generator=gen) < 0.5
    return hidden, weight, bias, labels, unlearn


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_float64_reference(reduction, mixed, with_bias):
    hidden, weight, bias, labels, unlearn = random_inputs()
    mask = unlearn if mixed else None
    bias = bias if with_bias else None
    got = ours(hidden, weight, labels, mask, bias, reduction=reduction, chunk_size=8)
    assert got[0].dtype == torch.float32
    assert_matches(got, reference(hidden, weight, labels, mask, bias, reduction=reduction))


@pytest.mark.parametrize("chunk_size", [1, 7, 36, 37, 1000])
def test_chunk_boundaries_do_not_change_the_result(chunk_size):
    hidden, weight, bias, labels, unlearn = random_inputs(n=37)
    expected = reference(hidden, weight, labels, unlearn, bias)
    for reduction_result in (ours(hidden, weight, labels, unlearn, bias, chunk_size=chunk_size),):
        assert_matches(reduction_result, expected)
    none = ours(hidden, weight, labels, unlearn, bias, reduction="none", chunk_size=chunk_size)
    assert_matches(none, reference(hidden, weight, labels, unlearn, bias, reduction="none"))


def test_batched_shape_and_default_chunking():
    hidden, weight, bias, labels, unlearn = random_inputs(n=48)
    shape = (4, 12)
    got = ours(hidden.view(*shape, -1), weight, labels.view(shape), unlearn.view(shape), bias, reduction="none")
    assert got[0].shape == shape
    assert_matches(got, reference(hidden.view(*shape, -1), weight, labels.view(shape), unlearn.view(shape), bias,
                                  reduction="none"))


@pytest.mark.parametrize("margin", [20.0, 40.0, 90.0])
def test_exact_where_p_y_rounds_to_one_in_float32(margin):
    """Orthonormal head rows: z_y = margin, other logits ~N(0, 0.1). In float32 p_y == 1 exactly (1 - p_y < 1e-8),
    yet CE-U's value H(q) - log(1 - p_y) and gradient p_y (e_y - q) are exact to float32 rounding."""
    gen = torch.Generator().manual_seed(1)
    width, vocab, n = 64, 40, 24
    basis, _ = torch.linalg.qr(torch.randn(width, vocab, generator=gen, dtype=torch.float64))
    weight = basis.T.contiguous()  # (V, H), orthonormal rows
    labels = torch.randint(0, vocab, (n,), generator=gen)
    hidden = margin * weight[labels] + 0.1 * torch.randn(n, width, generator=gen, dtype=torch.float64)
    hidden32, weight32 = hidden.float(), weight.float()
    z32 = hidden32 @ weight32.T
    assert bool((torch.softmax(z32, -1).gather(1, labels[:, None]) == 1).all())  # the case this test is about
    expected = reference(hidden32, weight32, labels, reduction="none")
    got = ours(hidden32, weight32, labels, reduction="none")
    assert_matches(got, expected, rtol=1e-5, atol=1e-6)
    # the log-prob form cannot do this: log p_y rounds to 0 in float32 and its value/gradient lose everything
    logp = torch.log_softmax(z32, -1).gather(1, labels[:, None]).squeeze(1)
    entropy = -(torch.softmax(z32, -1) * torch.log_softmax(z32, -1)).sum(-1)
    from_logprobs = ce_u_loss_from_logprobs(logp, entropy, reduction="none")
    assert not torch.allclose(from_logprobs.double(), expected[0], rtol=1e-2)


def test_minus_inf_bias_entries():
    hidden, weight, bias, labels, unlearn = random_inputs()
    bias[[3, 7, 11]] = float("-inf")  # banned tokens
    labels[labels == 3] = 4
    labels[labels == 7] = 4
    labels[labels == 11] = 4
    for mask in (None, unlearn):
        got = ours(hidden, weight, labels, mask, bias)
        assert_matches(got, reference(hidden, weight, labels, mask, bias))
        assert torch.equal(got[3][[3, 7, 11]], torch.zeros(3))


def test_all_ignored_batch_gives_zero_and_zero_gradients():
    hidden, weight, bias, labels, _ = random_inputs()
    labels = torch.full_like(labels, -100)
    for reduction in ("mean", "sum", "none"):
        value, gh, gw, gb = ours(hidden, weight, labels, None, bias, reduction=reduction)
        assert torch.equal(value, torch.zeros_like(value))
        for g in (gh, gw, gb):
            assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    hidden, weight, bias, labels, unlearn = random_inputs(dtype=dtype)
    got = ours(hidden, weight, labels, unlearn, bias)
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype and got[2].dtype == dtype
    expected = reference(hidden, weight, labels, unlearn, bias)  # float64 of the same half-precision inputs
    torch.testing.assert_close(got[0].double(), expected[0], rtol=1e-5, atol=1e-6)  # value: float32 compute
    # gradients are rounded once to the input dtype at the end
    eps = torch.finfo(dtype).eps
    for g, e in zip(got[1:], expected[1:]):
        torch.testing.assert_close(g.double(), e, rtol=2 * eps, atol=2 * eps * e.abs().max().item())


def test_float64_stays_float64():
    hidden, weight, bias, labels, unlearn = random_inputs(dtype=torch.float64)
    got = ours(hidden, weight, labels, unlearn, bias)
    assert got[0].dtype == torch.float64
    assert_matches(got, reference(hidden, weight, labels, unlearn, bias), rtol=1e-12, atol=1e-14)


def test_gradient_accumulation_with_num_items_in_batch():
    """Two micro-batches, each divided by the whole batch's token count, add up to the one-batch mean."""
    hidden, weight, bias, labels, unlearn = random_inputs(n=40)
    total = int((labels != -100).sum())
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = sum(linear_ce_u_loss(h[s], w, labels[s], unlearn[s], num_items_in_batch=torch.tensor(total))
               for s in (slice(0, 13), slice(13, 40)))
    loss.backward()
    expected = reference(hidden, weight, labels, unlearn)
    assert_matches((loss.detach(), h.grad, w.grad, None), expected[:3] + (None,))


def test_equals_ce_u_loss_on_materialised_logits():
    hidden, weight, bias, labels, _ = random_inputs()
    torch.testing.assert_close(linear_ce_u_loss(hidden, weight, labels, bias=bias),
                               ce_u_loss(hidden @ weight.T + bias, labels))


def test_errors_name_the_argument():
    hidden, weight, bias, labels, unlearn = random_inputs()
    cases = [
        (dict(hidden=labels), "hidden must be a floating-point tensor"),
        (dict(weight=weight.long()), "weight must be a floating-point tensor"),
        (dict(weight=weight[None]), "weight must be the LM head's weight of shape"),
        (dict(hidden=hidden[:, :5]), "hidden's last dimension must be weight.shape\\[1\\] = 16"),
        (dict(labels=labels.float()), "labels must be an integer tensor"),
        (dict(labels=labels[:5]), "shape mismatch: hidden \\(37, 16\\)"),
        (dict(labels=torch.where(labels == -100, 50, labels)), "labels contain 50, outside \\[0, 50\\)"),
        (dict(unlearn_mask=unlearn.long()), "unlearn_mask must be None .* or a bool tensor"),
        (dict(unlearn_mask=unlearn[:3]), "unlearn_mask has shape \\(3,\\) but labels has \\(37,\\)"),
        (dict(bias=bias[:3]), "bias must be None or a float tensor of shape \\(50,\\)"),
        (dict(reduction="avg"), "reduction='avg' is not supported"),
        (dict(chunk_size=0), "chunk_size must be a positive number"),
        (dict(implementation="cuda"), "implementation=.cuda. is not supported"),
    ]
    for change, message in cases:
        kw = {**dict(hidden=hidden, weight=weight, labels=labels, unlearn_mask=None, bias=None), **change}
        with pytest.raises(ValueError, match=message):
            linear_ce_u_loss(**kw)
    nan_hidden = hidden.clone()
    nan_hidden[2, 0] = float("nan")
    with pytest.raises(ValueError, match="the loss came out NaN: hidden, weight or bias contain NaN"):
        linear_ce_u_loss(nan_hidden, weight, labels)


class LiveMemory(TorchDispatchMode):
    """Every aten op below autograd: the largest tensor any op creates, and the peak of the bytes held by the tensors
    created inside the mode (a new storage counts from its creation until the tensor that created it dies)."""

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak, self.largest_numel = {}, 0, 0, 0

    def _free(self, ptr):
        self.current -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > 0:
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.live and ptr not in inputs:  # views and in-place results are not new memory
                    self.live[ptr] = t.untyped_storage().nbytes()
                    self.current += self.live[ptr]
                    self.peak = max(self.peak, self.current)
                    self.largest_numel = max(self.largest_numel, t.numel())
                    weakref.finalize(t, self._free, ptr)
        return out


def _measure(step):
    mode = LiveMemory()
    with mode:
        step()
    return mode


def test_memory_no_n_by_v_tensor_and_peak_far_below_materialised_logits():
    """N = 1024 tokens, V = 4096, H = 32, chunks of 64 rows: the fused op never creates a tensor larger than one chunk
    of logits (or the weight gradient), and its peak live memory is >= 10x below the materialised path's."""
    n, vocab, width, chunk = 1024, 4096, 32, 64
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, width, generator=gen).requires_grad_()
    weight = torch.randn(vocab, width, generator=gen).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=gen)
    for reduction in ("mean", "none"):
        fused = _measure(lambda: linear_ce_u_loss(hidden, weight, labels, reduction=reduction,
                                                  chunk_size=chunk).sum().backward())
        materialised = _measure(lambda: ce_u_loss(hidden @ weight.T, labels, reduction=reduction).sum().backward())
        assert fused.largest_numel <= max(chunk * vocab, vocab * width), reduction
        assert materialised.largest_numel >= n * vocab  # the measurement does see N x V tensors
        # inputs' gradients (N x H + V x H float32) + about 3 chunk buffers + O(N) vectors
        bound = 4 * (n * width + vocab * width + 3 * chunk * vocab + 16 * n)
        assert fused.peak <= bound, (reduction, fused.peak, bound)
        assert fused.peak * 10 <= materialised.peak, (reduction, fused.peak, materialised.peak)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        linear_ce_u_loss(hidden, weight, labels, reduction="none", chunk_size=chunk)
    assert max(saved) < n * vocab and sum(saved) <= n * width + vocab * width + 4 * n


def triton_interpreter_check():
    """Run in a child process with TRITON_INTERPRET=1 set before triton is imported."""
    hidden, weight, bias, labels, unlearn = random_inputs(n=20, width=16, vocab=1100, seed=3)
    bias[[5, 600]] = float("-inf")
    labels[(labels == 5) | (labels == 600)] = 6
    labels[1] = 7
    bias[7] = 40.0  # p_y rounds to 1 on row 1 (its label is 7; other rows with label 7 likewise)
    assert torch.softmax(hidden[1] @ weight.T + bias, -1)[7] == 1
    for reduction in ("mean", "none"):
        got = ours(hidden, weight, labels, unlearn, bias, reduction=reduction, chunk_size=8, implementation="triton")
        assert_matches(got, reference(hidden, weight, labels, unlearn, bias, reduction=reduction))
    print("triton interpreter check passed")


def test_triton_kernel_matches_reference_under_the_interpreter():
    """The Triton kernel (the GPU path) run by Triton's CPU interpreter: several vocabulary blocks (V = 1100 >
    BLOCK = 1024), -inf bias entries, mixed CE / CE-U rows, a p_y = 1 row, both reduction modes. A child process:
    triton.jit reads TRITON_INTERPRET when triton and the kernel are first imported."""
    pytest.importorskip("triton")
    run_under_triton_interpreter("tests.objectives.test_linear_ce_u", "triton_interpreter_check")


def test_triton_falls_back_to_torch_where_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden, weight, bias, labels, unlearn = random_inputs()
    with pytest.warns(UserWarning, match="implementation='triton' unavailable .*Triton needs a CUDA device"):
        got = ours(hidden, weight, labels, unlearn, bias, implementation="triton")
    assert_matches(got, reference(hidden, weight, labels, unlearn, bias))


def test_second_backward_of_a_mean_is_a_clear_error():
    hidden, weight, _, labels, _ = random_inputs()
    loss = linear_ce_u_loss(hidden.requires_grad_(), weight, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="supports one backward per forward"):
        loss.backward()


def test_autocast_does_not_lower_the_head_precision():
    """Under bf16 autocast (as the Trainer's bf16=True runs the loss) the head matmul still runs in float32."""
    hidden, weight, bias, labels, unlearn = random_inputs()
    for reduction in ("mean", "none"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = ours(hidden, weight, labels, unlearn, bias, reduction=reduction)
        assert_matches(got, reference(hidden, weight, labels, unlearn, bias, reduction=reduction))


def test_no_grad_forward_computes_no_gradients():
    """Evaluation under torch.no_grad: the same value, and none of the V x H gradient work or memory."""
    hidden, weight, bias, labels, unlearn = random_inputs(n=64, width=32, vocab=2000)
    hidden.requires_grad_()
    weight.requires_grad_()
    with torch.no_grad():
        with LiveMemory() as mode:  # noqa: F841
            value = linear_ce_u_loss(hidden, weight, labels, unlearn, bias, chunk_size=8)
        largest = mode.largest_numel
    torch.testing.assert_close(value.double(), reference(hidden, weight, labels, unlearn, bias)[0], rtol=1e-5,
                               atol=1e-6)
    assert largest < 2000 * 32  # chunks are 8 x 2000: no weight-gradient buffer (V x H = 2000 x 32) was allocated
