"""CE-U (and the unified CE / CE-U loss) fused with the LM head: from hidden states and the head's weight, with no
N x V logits. Exact at p_y -> 1 like `ce_u_loss`; the memory of the log-prob form."""

from __future__ import annotations

import os
import warnings

import torch

from ._checks import check_reduction, check_same_shape, reduce
from ._linear_ce_u_function import LinearUnifiedCrossEntropyFunction, chunk_value_and_logit_grad, default_chunk_rows

IMPLEMENTATIONS = ("torch", "triton")


def linear_ce_u_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    unlearn_mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    implementation: str = "torch",
) -> torch.Tensor:
    r"""CE-U of the logits ``hidden @ weight.T + bias`` without materialising them (fused linear + CE-U).

    The same loss, gradient and exactness as ``ce_u_loss(hidden @ weight.T + bias, labels)`` (or, with
    ``unlearn_mask``, as ``unified_cross_entropy``: CE where the mask is False, CE-U where True; None means CE-U
    everywhere), with gradients for ``hidden``, ``weight`` and ``bias`` (logit gradient p - q through the head).
    The logits are computed chunk by chunk over tokens (``chunk_size`` rows; default about 2^24 logits per chunk, at
    least 128 rows), and every quantity comes from the log-sum-exp over the vocabulary without y, so values and
    gradients are finite and exact when p_y rounds to 1 in float32. Reference: Bo Yang, "CE-U: Cross Entropy
    Unlearning" (arXiv 2503.01224, 2025); the chunked head as in Liger-Kernel's fused linear cross entropy.

    Memory beyond the inputs and their gradients: one or two chunks of logits and a few length-N vectors. With
    "mean"/"sum" the gradients are computed during the forward pass and kept until the backward (the weight's
    gradient is V x H in the compute dtype); "none" recomputes each chunk in the backward. bf16/fp16 inputs are
    computed in float32 (a bf16 weight is copied to float32 once per call); float64 stays float64.

    Args:
        hidden: float tensor (..., H), e.g. the last hidden states of the model at the positions that predict
            ``labels`` (no shift is applied inside).
        weight: the LM head's weight (V, H).
        labels: integer tensor with hidden's leading shape, entries in [0, V) or ``ignore_index``.
        unlearn_mask: None (CE-U on every token) or a bool tensor of labels' shape (True = CE-U, False = CE).
        bias: the head's bias (V,) or None; -inf entries (banned tokens) are allowed.
        ignore_index, reduction, num_items_in_batch: as in `ce_u_loss`.
        chunk_size: rows of logits per chunk (default: see above).
        implementation: "torch" (eager, the default) or "triton" (a Triton kernel for the per-chunk math, two
            passes over the vocabulary per row; float32 compute; same results within float rounding, tested under
            Triton's interpreter). "triton" falls back to "torch" with a warning where Triton cannot run (no CUDA
            device, unless TRITON_INTERPRET=1) and for float64. (`torch.compile` of the chunk math was tried and
            measured slower than eager on CPU, so it is not offered.)
    """
    return linear_unified_loss_and_logprobs(hidden, weight, labels, unlearn_mask, bias, ignore_index, reduction,
                                            num_items_in_batch, chunk_size, implementation)[0]


def linear_unified_loss_and_logprobs(hidden, weight, labels, unlearn_mask=None, bias=None, ignore_index=-100,
                                     reduction="mean", num_items_in_batch=None, chunk_size=None,
                                     implementation="torch"):
    """`linear_ce_u_loss`, plus the per-token log p_y (no gradient, 0 where ignored; free from the same pass: for
    logging) and the valid-token mask, both of labels' shape."""
    check_reduction(reduction)
    _check_inputs(hidden, weight, labels, unlearn_mask, bias, ignore_index, chunk_size, implementation)
    vocab, width = weight.shape
    flat_hidden = hidden.reshape(-1, width)
    flat_labels = labels.reshape(-1)
    valid = flat_labels != ignore_index
    safe_labels = torch.where(valid, flat_labels, torch.zeros_like(flat_labels))
    unlearn = torch.ones_like(valid) if unlearn_mask is None else unlearn_mask.reshape(-1)
    both_double = hidden.dtype == torch.float64 and weight.dtype == torch.float64
    cdtype = torch.float64 if both_double else torch.float32
    mode = "none" if reduction == "none" else "sum"
    chunk_fn = _chunk_fn(implementation, hidden.device, cdtype)
    loss, logp = LinearUnifiedCrossEntropyFunction.apply(
        flat_hidden, weight, bias, safe_labels, unlearn, valid, mode, torch.is_grad_enabled(),
        chunk_size or default_chunk_rows(vocab), cdtype, chunk_fn)
    valid = valid.view(labels.shape)
    logp = torch.where(valid, logp.view(labels.shape), torch.zeros((), dtype=logp.dtype, device=logp.device))
    if mode == "none":
        return loss.view(labels.shape), logp, valid
    return reduce(loss, valid, "sum" if reduction == "sum" else "mean", num_items_in_batch), logp, valid


def _chunk_fn(implementation: str, device: torch.device, cdtype: torch.dtype):
    if implementation == "triton":
        reason = _triton_unavailable_reason(device, cdtype)
        if reason is None:
            from ._linear_ce_u_triton import chunk_value_and_logit_grad_triton

            return chunk_value_and_logit_grad_triton
        warnings.warn(f"linear_ce_u_loss: implementation='triton' unavailable ({reason}); using the torch path.",
                      stacklevel=3)
    return chunk_value_and_logit_grad


def _triton_unavailable_reason(device: torch.device, cdtype: torch.dtype) -> str | None:
    if cdtype != torch.float32:
        return f"the kernel computes in float32, inputs are {cdtype}"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"tensors on {device.type}: Triton needs a CUDA device (or TRITON_INTERPRET=1)"
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return f"triton cannot be imported: {err}"
    return None


def _check_inputs(hidden, weight, labels, unlearn_mask, bias, ignore_index, chunk_size, implementation):
    for name, tensor in (("hidden", hidden), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor (float32, bfloat16, float16 or float64), got "
                             f"{getattr(tensor, 'dtype', type(tensor))}.")
    if weight.dim() != 2:
        raise ValueError(f"weight must be the LM head's weight of shape (vocab, hidden), got {tuple(weight.shape)}.")
    vocab, width = weight.shape
    if vocab < 2:
        raise ValueError(f"weight has a vocabulary of {vocab} rows: CE-U needs at least 2 classes.")
    if hidden.dim() < 1 or hidden.shape[-1] != width:
        raise ValueError(f"hidden has shape {tuple(hidden.shape)} but weight {tuple(weight.shape)}: hidden's last "
                         f"dimension must be weight.shape[1] = {width} (pass hidden states, not logits).")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError("labels must be an integer tensor of token ids, got "
                         f"{getattr(labels, 'dtype', type(labels))}.")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"shape mismatch: hidden {tuple(hidden.shape)} must be labels.shape + (hidden size,), "
                         f"labels {tuple(labels.shape)}. No shift is applied inside: hidden[..., i, :] predicts "
                         "labels[..., i] (shift causal-LM inputs first).")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.is_floating_point() or tuple(bias.shape) != (vocab,):
            raise ValueError(f"bias must be None or a float tensor of shape ({vocab},), got "
                             f"{getattr(bias, 'dtype', type(bias))} {tuple(getattr(bias, 'shape', ()))}.")
    if unlearn_mask is not None:
        if not isinstance(unlearn_mask, torch.Tensor) or unlearn_mask.dtype != torch.bool:
            raise ValueError("unlearn_mask must be None (CE-U everywhere) or a bool tensor (True = CE-U, False = CE), "
                             f"got {getattr(unlearn_mask, 'dtype', type(unlearn_mask))}.")
        check_same_shape("unlearn_mask", unlearn_mask, "labels", labels)
    devices = {t.device for t in (hidden, weight, labels, bias, unlearn_mask) if t is not None}
    if len(devices) > 1:
        raise ValueError("hidden, weight, labels, bias and unlearn_mask must be on one device, got "
                         f"{sorted(map(str, devices))}.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive number of rows or None, got {chunk_size!r}.")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is not supported: use one of {IMPLEMENTATIONS}.")
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        raise ValueError(f"labels contain {labels[bad][0].item()}, outside [0, {vocab}) (vocab size from "
                         f"weight.shape[0]); mark ignored positions with ignore_index={ignore_index}.")
