"""Input validation shared by the objectives: errors name the argument and the fix."""

from __future__ import annotations

import torch

_REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not supported: use one of {_REDUCTIONS}.")


def check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits))}: "
            "pass the model's logits (float32, bfloat16 or float16), not token ids."
        )
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of token ids, got {getattr(labels, 'dtype', type(labels))}."
        )
    if logits.dim() < 2 or tuple(logits.shape[:-1]) != tuple(labels.shape):
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)} must be labels.shape + (vocab,), labels {tuple(labels.shape)}. "
            "No shift is applied inside: logits[..., i, :] scores labels[..., i] (shift causal-LM inputs first)."
        )
    vocab = logits.shape[-1]
    if vocab < 2:
        raise ValueError(f"logits has a vocabulary of {vocab}: CE-U needs at least 2 classes.")
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        value = labels[bad][0].item()
        raise ValueError(
            f"labels contain {value}, outside [0, {vocab}) (vocab size from logits.shape[-1]); "
            f"mark ignored positions with ignore_index={ignore_index}."
        )


def check_same_shape(name: str, tensor: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if tuple(tensor.shape) != tuple(ref.shape):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)} but {ref_name} has {tuple(ref.shape)}: they must match.")


def reduce(per_item: torch.Tensor, valid: torch.Tensor, reduction: str, num_items_in_batch=None) -> torch.Tensor:
    """Reduce a per-item loss that is already 0 where ``valid`` is False.

    "mean" divides by the number of valid items, or by ``num_items_in_batch`` when given (as transformers' loss
    functions do, so that token means stay right under gradient accumulation). With no valid item it returns a zero
    that is still connected to the graph, so ``backward()`` gives zero gradients instead of NaN.
    """
    if reduction == "none":
        return per_item
    total = per_item.sum()
    if reduction == "sum":
        return total
    if num_items_in_batch is not None:
        denom = num_items_in_batch
        if isinstance(denom, torch.Tensor):
            denom = denom.to(total.device, total.dtype)
    else:
        denom = valid.sum().clamp(min=1).to(total.dtype)
    return total / denom
