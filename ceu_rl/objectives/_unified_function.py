"""The autograd Function behind `ce_u_loss` and `unified_cross_entropy`.

Per row (token) with logits z, label y and p = softmax(z), the target is either
  - learn:   one-hot e_y                                   -> value -log p_y,          gradient p - e_y
  - unlearn: q = softmax(z with z_y = -inf), no gradient   -> value CE(q, p),          gradient p - q = p_y (e_y - q)
CE(q, p) = H(q) - log(1 - p_y) (since log p_k = log q_k + log(1 - p_y) for k != y).

Everything is computed from the masked log-sum-exp lse_m = log sum_{k != y} exp(z_k), never from 1 - p_y, so it stays
exact when p_y rounds to 1 (|z| up to 1e4 in float32):
  -log(1 - p_y) = softplus(z_y - lse_m),  p_y = sigmoid(z_y - lse_m),  lse = logaddexp(lse_m, z_y).

Memory: the forward saves the logits (already alive) and three length-N vectors, never an N x V tensor, and works on
row chunks so its temporaries stay small; the backward writes the gradient straight into its output buffer.

With use_triton the per-row math of each chunk is the Triton kernel of `linear_ce_u_loss` (`_linear_ce_u_triton.py`,
same formulas): the forward only reads the logits; the backward recomputes each chunk on a float32 copy, which the
kernel overwrites with the gradient (the user's logits are never written).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows per chunk are chosen so that one float32 chunk temporary holds about this many elements (64 MiB).
_CHUNK_ELEMENTS = 1 << 24
# exp(-1e4) is exactly 0 in float32 and float64: clamping shifted logits there turns -inf into a finite number without
# changing any probability, so that 0 * (-inf) never appears in sum_k q_k log q_k.
_NEG_FLOOR = -1e4


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_chunks(n_rows: int, vocab: int):
    step = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


class UnifiedCrossEntropyFunction(torch.autograd.Function):
    """Per-row loss for 2-D logits (N, V), labels (N,), unlearn (N,) bool, valid (N,) bool.

    Returns the per-row value (N,) in the compute dtype, 0 where not valid. Labels of invalid rows must already be
    in range (the caller replaces them by 0).
    """

    @staticmethod
    def forward(ctx, logits, labels, unlearn, valid, use_triton=False):
        ctx.use_triton = use_triton
        if use_triton:
            ctx.save_for_backward(logits, labels, unlearn, valid)
            ctx.mark_non_differentiable(unlearn, valid)
            return _triton_forward(logits, labels, unlearn, valid)
        n_rows, vocab = logits.shape
        cdtype = _compute_dtype(logits.dtype)
        lse_masked = torch.empty(n_rows, dtype=cdtype, device=logits.device)
        entropy_q = torch.empty_like(lse_masked)
        z_label = torch.empty_like(lse_masked)
        for start, end in _row_chunks(n_rows, vocab):
            y = labels[start:end].unsqueeze(1)
            work = logits[start:end].to(cdtype, copy=True)
            z_label[start:end] = work.gather(1, y).squeeze(1)
            work.scatter_(1, y, float("-inf"))  # z with z_y = -inf
            row_max = work.amax(dim=1, keepdim=True)
            row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
            work.sub_(row_max).clamp_(min=_NEG_FLOOR)  # s_k = z_k - max, -inf -> -1e4 (exp is still exactly 0)
            expd = torch.exp(work)
            sum_exp = expd.sum(dim=1)
            # sum_k e_k s_k as a batched dot product: one pass, no N x V temporary
            weighted = torch.bmm(expd.unsqueeze(1), work.unsqueeze(2)).view(-1)
            log_sum = torch.log(sum_exp)
            lse_masked[start:end] = row_max.squeeze(1) + log_sum
            entropy_q[start:end] = log_sum - weighted / sum_exp  # H(q) = log S - sum_k q_k s_k
            del work, expd

        degenerate = lse_masked == float("-inf")  # every entry but the label is -inf: q is undefined
        lse_safe = torch.where(degenerate, torch.zeros_like(lse_masked), lse_masked)
        ce_value = F.softplus(lse_masked - z_label)  # -log p_y = log(1 + exp(lse_m - z_y)); 0 when lse_m = -inf
        ceu_value = F.softplus(z_label - lse_safe) + entropy_q  # -log(1 - p_y) + H(q)
        ceu_value = torch.where(degenerate, torch.zeros_like(ceu_value), ceu_value)
        value = torch.where(unlearn, ceu_value, ce_value)
        value = torch.where(valid, value, torch.zeros_like(value))

        ctx.save_for_backward(logits, labels, unlearn, valid, lse_masked, z_label)
        ctx.mark_non_differentiable(unlearn, valid)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():  # create_graph=True: the gradient below is not itself differentiable
            raise RuntimeError(
                "ce_u_loss / unified_cross_entropy do not support double backward (create_graph=True, e.g. gradient "
                "penalties or Hessian-vector products): their backward is a hand-written first derivative. Compute "
                "the loss with plain torch ops for that, e.g. CE(q, p) with q = softmax(logits.detach() with the "
                "label set to -inf), which autograd can differentiate twice.")
        if ctx.use_triton:
            return _triton_backward(*ctx.saved_tensors, grad_value), None, None, None, None
        logits, labels, unlearn, valid, lse_masked, z_label = ctx.saved_tensors
        n_rows, vocab = logits.shape
        cdtype = _compute_dtype(logits.dtype)
        grad_value = grad_value.to(cdtype)
        degenerate = lse_masked == float("-inf")
        lse_full = torch.logaddexp(lse_masked, z_label)
        p_label = torch.exp(z_label - lse_full)
        # grad = a * exp(z - c) with the label entry overwritten:
        #   learn:   c = lse,   a = 1,     label entry p_y - 1
        #   unlearn: c = lse_m, a = -p_y,  label entry p_y        (degenerate rows: all 0)
        shift = torch.where(unlearn, lse_masked, lse_full)
        shift = torch.where(unlearn & degenerate, torch.full_like(shift, float("inf")), shift)
        scale = torch.where(unlearn, -p_label, torch.ones_like(p_label))
        label_entry = torch.where(unlearn, p_label, p_label - 1)
        keep = valid & ~(unlearn & degenerate)
        scale = torch.where(keep, scale * grad_value, torch.zeros_like(scale))
        label_entry = torch.where(keep, label_entry * grad_value, torch.zeros_like(label_entry))

        grad = torch.empty_like(logits)
        for start, end in _row_chunks(n_rows, vocab):
            if logits.dtype == cdtype:
                out = grad[start:end]
                out.copy_(logits[start:end])
            else:
                out = logits[start:end].to(cdtype)
            out.sub_(shift[start:end].unsqueeze(1)).exp_().mul_(scale[start:end].unsqueeze(1))
            out.scatter_(1, labels[start:end].unsqueeze(1), label_entry[start:end].unsqueeze(1))
            if out.data_ptr() != grad[start:end].data_ptr():
                grad[start:end].copy_(out)
        return grad, None, None, None, None


def _triton_forward(logits, labels, unlearn, valid):
    from ._linear_ce_u_triton import chunk_value_and_logit_grad_triton

    value = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    unused_scale = torch.zeros_like(value)
    for start, end in _row_chunks(*logits.shape):
        chunk = logits[start:end].to(torch.float32).contiguous()  # read only (need_grad=False): no copy if float32
        value[start:end] = chunk_value_and_logit_grad_triton(
            chunk, labels[start:end], unlearn[start:end], unused_scale[start:end], need_grad=False)[0]
    return torch.where(valid, value, torch.zeros_like(value))


def _triton_backward(logits, labels, unlearn, valid, grad_value):
    from ._linear_ce_u_triton import chunk_value_and_logit_grad_triton

    row_scale = torch.where(valid, grad_value.to(torch.float32), torch.zeros((), device=logits.device))
    grad = torch.empty_like(logits)
    for start, end in _row_chunks(*logits.shape):
        work = logits[start:end].to(torch.float32, copy=True).contiguous()  # the kernel overwrites it
        grad[start:end] = chunk_value_and_logit_grad_triton(
            work, labels[start:end], unlearn[start:end], row_scale[start:end], need_grad=True)[2]
    return grad


def per_token_unified_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, unlearn: torch.Tensor, ignore_index: int, use_triton: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token values with labels' shape (0 where ignored) and the valid mask. Inputs already checked."""
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1)
    valid = flat_labels != ignore_index
    safe_labels = torch.where(valid, flat_labels, torch.zeros_like(flat_labels))
    unlearn = unlearn.reshape(-1).to(torch.bool)
    value = UnifiedCrossEntropyFunction.apply(flat_logits, safe_labels, unlearn, valid, use_triton)
    if torch.isnan(value).any():
        raise ValueError(
            "logits contain NaN or +inf (the loss came out NaN): check the model's forward pass, "
            "e.g. an fp16 overflow; -inf entries are allowed."
        )
    return value.view(labels.shape), valid.view(labels.shape)
