"""Triton version of `chunk_value_and_logit_grad` (the per-chunk math of `linear_ce_u_loss`): one program per row,
two passes over the vocabulary (online masked log-sum-exp with the entropy sum, then the gradient written over the
logits in place), instead of the ~10 elementwise torch kernels of the eager path.

Runs where Triton runs (CUDA GPUs; or anywhere under Triton's interpreter, TRITON_INTERPRET=1, which the tests use).
Same formulas as the torch path (see `_linear_ce_u_function.py`), exact at p_y -> 1: everything from
lse_m = log sum_{k != y} exp(z_k); online update of the entropy sum B = sum e^{z-m} (z - m) when the running max
moves from m to m': B' = e^{m-m'} (B + (m - m') S).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _rows_kernel(z_ptr, stride, labels_ptr, unlearn_ptr, scale_ptr, value_ptr, logp_ptr, vocab,
                 NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = z_ptr + row.to(tl.int64) * stride
    y = tl.load(labels_ptr + row)
    unlearn = tl.load(unlearn_ptr + row) != 0
    z_label = tl.load(base + y).to(tl.float32)
    m = -float("inf")
    s = 0.0
    b = 0.0
    for start in range(0, vocab, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = tl.load(base + offs, mask=offs < vocab, other=-float("inf")).to(tl.float32)
        z = tl.where(offs == y, -float("inf"), z)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        z_fin = tl.where(z == -float("inf"), m_safe, z)  # -inf entries: e = 0 and e * (z - m) = 0, never 0 * inf
        e = tl.where(z == -float("inf"), 0.0, tl.exp(z_fin - m_safe))
        m_old = tl.where(m == -float("inf"), m_safe, m)  # S = B = 0 so far: any finite rescaling keeps them 0
        alpha = tl.exp(m_old - m_safe)
        b = alpha * (b + (m_old - m_safe) * s) + tl.sum(e * (z_fin - m_safe), axis=0)
        s = alpha * s + tl.sum(e, axis=0)
        m = m_new
    degenerate = s == 0.0  # every entry but the label is -inf
    s_safe = tl.where(degenerate, 1.0, s)
    m_safe = tl.where(degenerate, 0.0, m)
    lse_m = m_safe + tl.log(s_safe)  # finite stand-in where degenerate; masked below
    entropy_q = tl.log(s_safe) - b / s_safe
    x = z_label - lse_m
    # softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)), with log1p(u) = u - u^2/2 for small u (no log1p in tl that
    # works both compiled and in the interpreter)
    u = tl.exp(-tl.abs(x))
    log1p_u = tl.where(u < 1e-4, u - 0.5 * u * u, tl.log(1.0 + u))
    neg_logp = tl.where(degenerate, 0.0, tl.maximum(-x, 0.0) + log1p_u)
    ceu = tl.where(degenerate, 0.0, tl.maximum(x, 0.0) + log1p_u + entropy_q)
    tl.store(value_ptr + row, tl.where(unlearn, ceu, neg_logp))
    tl.store(logp_ptr + row, -neg_logp)
    if NEED_GRAD:
        p_label = 1.0 / (1.0 + tl.exp(-x))
        one_minus_p = tl.where(degenerate, 0.0, 1.0 / (1.0 + tl.exp(x)))
        coeff = tl.where(unlearn, tl.where(degenerate, 0.0, -p_label), one_minus_p) * tl.load(scale_ptr + row)
        for start in range(0, vocab, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < vocab
            z = tl.load(base + offs, mask=inside, other=-float("inf")).to(tl.float32)
            g = coeff * tl.exp(z - lse_m)  # coeff * q_k
            g = tl.where(offs == y, -coeff, g)
            tl.store(base + offs, g, mask=inside)


def chunk_value_and_logit_grad_triton(z, labels, unlearn, row_scale, need_grad: bool):
    """Drop-in for `chunk_value_and_logit_grad` (float32, contiguous rows); the gradient overwrites `z`."""
    if z.dtype != torch.float32:
        raise ValueError(f"implementation='triton' computes in float32, got {z.dtype} (use 'torch' for float64).")
    z = z.contiguous()
    rows, vocab = z.shape
    value = torch.empty(rows, dtype=torch.float32, device=z.device)
    logp = torch.empty_like(value)
    if rows:
        _rows_kernel[(rows,)](z, z.stride(0), labels.contiguous(), unlearn.to(torch.int8).contiguous(),
                              row_scale.to(torch.float32).contiguous(), value, logp, vocab, NEED_GRAD=need_grad,
                              BLOCK=BLOCK)
    return value, logp, (z if need_grad else None)
