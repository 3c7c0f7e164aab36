"""The autograd Function behind `linear_ce_u_loss`: LM head + unified CE / CE-U, chunked over tokens.

Per token with hidden state h, logits z = h W^T + b, label y and p = softmax(z) (see `_unified_function.py` for the
formulas): everything comes from the masked log-sum-exp lse_m = log sum_{k != y} exp(z_k), never from 1 - p_y, so
it stays exact when p_y rounds to 1 in float32. With q_k = exp(z_k - lse_m) (k != y, q_y = 0) and
p_y = sigmoid(z_y - lse_m), the logit gradient is one expression for both targets:

    learn   (CE):    p - e_y = (1 - p_y) (q - e_y)
    unlearn (CE-U):  p - q   =     -p_y (q - e_y)

so a chunk's gradient is c_row * (q - e_y), computed from the exp buffer the forward statistics already hold.

Memory: logits exist one chunk of rows at a time (about `CHUNK_ELEMENTS` entries; the exp buffer is a second one).
Two modes:
  - "sum" (the loss is a sum or a mean): the gradients for hidden, weight and bias are accumulated in the same pass
    as the value (as Liger-Kernel's fused linear cross entropy does), so the backward only scales them by the
    incoming scalar: 3 matmuls per chunk in all, like the materialised path (1 forward + 2 backward).
  - "none" (per-token values): the backward needs one weight per token, so it recomputes each chunk's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows per chunk: about this many logits (64 MiB in float32), and at least MIN_CHUNK_ROWS rows so that each chunk's
# matmuls read the weight for enough tokens to stay compute-bound.
CHUNK_ELEMENTS = 1 << 24
MIN_CHUNK_ROWS = 128
# exp(-1e4) is exactly 0 in float32 and float64: clamping shifted logits there turns -inf into a finite number without
# changing any probability, so that 0 * (-inf) never appears in sum_k q_k log q_k.
_NEG_FLOOR = -1e4


def default_chunk_rows(vocab: int) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // max(vocab, 1))


def chunk_value_and_logit_grad(z, labels, unlearn, row_scale, need_grad: bool):
    """Per-row (value, log p_y) and, if `need_grad`, the logit gradient scaled per row by `row_scale` (0 on rows that
    do not count). `z` (rows, V) is a scratch buffer in the compute dtype: it is overwritten (the gradient is written
    into the exp buffer). `_linear_ce_u_triton.py` is the same as one Triton kernel."""
    y = labels.unsqueeze(1)
    z_label = z.gather(1, y).squeeze(1)
    z.scatter_(1, y, float("-inf"))  # z with z_y = -inf
    row_max = z.amax(dim=1)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    shifted = z.sub_(row_max.unsqueeze(1)).clamp_(min=_NEG_FLOOR)  # -inf -> -1e4: exp is still exactly 0
    expd = torch.exp(shifted)  # exp(z_k - max), 0 at the label
    sum_exp = expd.sum(dim=1)
    weighted = torch.bmm(expd.unsqueeze(1), shifted.unsqueeze(2)).view(-1)  # sum_k e_k s_k, no (rows, V) temporary
    log_sum = torch.log(sum_exp)
    lse_masked = row_max + log_sum
    degenerate = lse_masked == float("-inf")  # every entry but the label is -inf: q is undefined
    lse_safe = torch.where(degenerate, torch.zeros_like(lse_masked), lse_masked)
    neg_logp = F.softplus(lse_masked - z_label)  # -log p_y = CE value; 0 when lse_m = -inf
    entropy_q = log_sum - weighted / sum_exp.clamp(min=torch.finfo(z.dtype).tiny)
    ceu_value = torch.where(degenerate, torch.zeros_like(neg_logp), F.softplus(z_label - lse_safe) + entropy_q)
    value = torch.where(unlearn, ceu_value, neg_logp)
    if not need_grad:
        return value, -neg_logp, None
    p_label = torch.sigmoid(z_label - lse_safe)
    one_minus_p = torch.sigmoid(lse_masked - z_label)  # exact even where p_y rounds to 1
    coeff = torch.where(unlearn, -p_label, one_minus_p)
    coeff = torch.where(unlearn & degenerate, torch.zeros_like(coeff), coeff) * row_scale
    # q_k = e_k / S; grad = coeff * (q - e_y), written into the exp buffer
    grad = expd.mul_((coeff / sum_exp.clamp(min=torch.finfo(z.dtype).tiny)).unsqueeze(1))
    grad.scatter_(1, y, -coeff.unsqueeze(1))
    return value, -neg_logp, grad


class LinearUnifiedCrossEntropyFunction(torch.autograd.Function):
    """hidden (N, H), weight (V, H), bias (V,) or None, labels (N,) in range, unlearn (N,) bool, valid (N,) bool.

    Returns (loss, log p_y per row): loss is the sum over valid rows ("sum" mode) or the per-row values, 0 where not
    valid ("none" mode); log p_y has no gradient. Values and gradients are computed in `cdtype`."""

    @staticmethod
    def forward(ctx, hidden, *args):
        # autocast (e.g. the Trainer's bf16) would run the head matmul in bf16: the logits must be float32 here
        with torch.autocast(hidden.device.type, enabled=False):
            return LinearUnifiedCrossEntropyFunction._forward(ctx, hidden, *args)

    @staticmethod
    def backward(ctx, *grads):
        with torch.autocast(ctx.device_type, enabled=False):
            return LinearUnifiedCrossEntropyFunction._backward(ctx, *grads)

    @staticmethod
    def _forward(ctx, hidden, weight, bias, labels, unlearn, valid, mode, grad_enabled, chunk_rows, cdtype, chunk_fn):
        ctx.device_type = hidden.device.type
        n_rows = hidden.shape[0]
        w = weight.to(cdtype)  # no copy when already cdtype (bf16 weights: one float32 copy, V x H)
        b = None if bias is None else bias.to(cdtype)
        value = torch.zeros(n_rows, dtype=cdtype, device=hidden.device)
        logp = torch.zeros_like(value)
        # needs_input_grad is True under torch.no_grad too: the caller says whether a backward can follow
        grads_now = mode == "sum" and grad_enabled and any(ctx.needs_input_grad[:3])
        grad_h = grad_w = grad_b = None
        if grads_now:
            grad_h = torch.empty(hidden.shape, dtype=cdtype, device=hidden.device) if ctx.needs_input_grad[0] else None
            grad_w = torch.zeros(w.shape, dtype=cdtype, device=w.device) if ctx.needs_input_grad[1] else None
            grad_b = torch.zeros(w.shape[0], dtype=cdtype, device=w.device) if b is not None else None
        row_scale = valid.to(cdtype)
        for start in range(0, n_rows, chunk_rows):
            end = min(start + chunk_rows, n_rows)
            h = hidden[start:end].to(cdtype)
            z = h @ w.T if b is None else torch.addmm(b, h, w.T)
            v, lp, g = chunk_fn(z, labels[start:end], unlearn[start:end], row_scale[start:end], grads_now)
            value[start:end], logp[start:end] = v, lp
            if grads_now:
                _accumulate(g, h, w, None if grad_h is None else grad_h[start:end], grad_w, grad_b)
            del z, g
        value = torch.where(valid, value, torch.zeros_like(value))
        if torch.isnan(value).any():
            raise ValueError(
                "the loss came out NaN: hidden, weight or bias contain NaN or +inf (e.g. an fp16 overflow in the "
                "model's forward pass); -inf entries of bias are allowed."
            )
        ctx.mark_non_differentiable(logp)
        ctx.mode, ctx.chunk_rows, ctx.cdtype, ctx.chunk_fn = mode, chunk_rows, cdtype, chunk_fn
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        if mode == "sum":
            # kept on ctx, not saved: the backward scales them in place and hands them over (no second V x H copy)
            ctx.grads = (grad_h, grad_w, grad_b)
            return value.sum(), logp
        ctx.save_for_backward(hidden, weight, bias, labels, unlearn, valid)
        return value, logp

    @staticmethod
    def _backward(ctx, grad_loss, _grad_logp):
        if ctx.mode == "sum":
            if ctx.grads is None:
                raise RuntimeError("linear_ce_u_loss with reduction 'mean'/'sum' supports one backward per forward "
                                   "(its gradients are computed in the forward and handed over); use "
                                   "reduction='none' and reduce yourself to backpropagate twice.")
            grads, ctx.grads = ctx.grads, None
            scale = grad_loss.to(ctx.cdtype)
            grads = [None if g is None else g.mul_(scale) for g in grads]
        else:
            hidden, weight, bias, labels, unlearn, valid = ctx.saved_tensors
            cdtype = ctx.cdtype
            w = weight.to(cdtype)
            b = None if bias is None else bias.to(cdtype)
            row_scale = torch.where(valid, grad_loss.to(cdtype), torch.zeros_like(grad_loss, dtype=cdtype))
            grads = [torch.empty(hidden.shape, dtype=cdtype, device=hidden.device),
                     torch.zeros(w.shape, dtype=cdtype, device=w.device),
                     None if b is None else torch.zeros(w.shape[0], dtype=cdtype, device=w.device)]
            for start in range(0, hidden.shape[0], ctx.chunk_rows):
                end = min(start + ctx.chunk_rows, hidden.shape[0])
                h = hidden[start:end].to(cdtype)
                z = h @ w.T if b is None else torch.addmm(b, h, w.T)  # recomputed: never more than one chunk alive
                _, _, g = ctx.chunk_fn(z, labels[start:end], unlearn[start:end], row_scale[start:end], True)
                _accumulate(g, h, w, grads[0][start:end], grads[1], grads[2])
                del z, g
        out = [None if g is None or not need else g.to(dt)
               for g, need, dt in zip(grads, ctx.needs_input_grad[:3], ctx.dtypes)]
        return (*out, None, None, None, None, None, None, None, None)


def _accumulate(grad_logits, h, w, grad_h_out, grad_w, grad_b):
    """dL/dh = g W into its rows of the output; dL/dW += g^T h; dL/db += sum_rows g."""
    if grad_h_out is not None:
        torch.mm(grad_logits, w, out=grad_h_out)
    if grad_w is not None:
        grad_w.addmm_(grad_logits.T, h)
    if grad_b is not None:
        grad_b.add_(grad_logits.sum(dim=0))
