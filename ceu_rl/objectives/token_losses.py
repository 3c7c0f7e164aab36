"""Token-level objectives from full logits: CE-U, the unified CE/CE-U loss, and gradient ascent.

No shift is applied inside: ``logits[..., i, :]`` scores ``labels[..., i]``. All three accept bf16/fp16 logits and
compute in float32 (float64 stays float64).
"""

from __future__ import annotations

import warnings

import torch

from ._checks import check_logits_labels, check_reduction, check_same_shape, reduce
from ._unified_function import _compute_dtype, per_token_unified_cross_entropy
from .linear_ce_u import IMPLEMENTATIONS, _triton_unavailable_reason


def ce_u_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    *,
    implementation: str = "torch",
) -> torch.Tensor:
    r"""Cross Entropy Unlearning (CE-U) from full logits.

    Per valid position with p = softmax(z) and label y, the target is the model's own distribution with the label
    removed, q = softmax(stopgrad(z) with z_y = -inf), and the loss is the cross entropy

        CE-U = CE(q, p) = -sum_{k != y} q_k log p_k = H(q) - log(1 - p_y),

    whose gradient on the logits is p - q: p_y at y and -p_y q_k elsewhere (L1 norm 2 p_y). It is large while the
    model is confident in y and fades to 0 as y is forgotten, where gradient ascent's (L1 norm 2 (1 - p_y)) vanishes
    when confident and never stops. Its gradient equals that of -log(1 - p_y).
    Reference: Bo Yang, "CE-U: Cross Entropy Unlearning" (arXiv 2503.01224, 2025).

    Args:
        logits: float tensor (..., V). bf16/fp16 are computed in float32.
        labels: integer tensor (...), entries in [0, V) or ``ignore_index``.
        ignore_index: label value that marks positions to skip (value and gradient 0).
        reduction: "mean" (over valid positions, or divided by ``num_items_in_batch``), "sum", or "none"
            (labels' shape, 0 where ignored).
        num_items_in_batch: the number of valid tokens in the whole accumulated batch, as transformers passes to its
            loss functions, so that the token mean stays right under gradient accumulation.
        implementation: "torch" (row-chunked eager ops, the default) or "triton" (the per-row Triton kernel of
            `linear_ce_u_loss`: the forward reads the logits once per row, the backward recomputes each row chunk on
            a float32 copy; float32 compute). "triton" is tested only under Triton's CPU interpreter
            (TRITON_INTERPRET=1), not timed on a GPU. It falls back to "torch" with a warning where Triton cannot run
            (no CUDA device unless TRITON_INTERPRET=1, triton not importable, float64 logits).

    Edge cases: finite for any finite logits, including p_y = 1 in float32 (|z| up to 1e4; computed from the
    log-sum-exp over the vocabulary without y, never from 1 - p_y) and -inf entries. If every entry but the label is
    -inf, q is undefined and that position contributes value 0 and gradient 0. With no valid position, "mean"
    returns 0 with zero gradient.
    """
    return unified_cross_entropy(
        logits, labels, torch.ones_like(labels, dtype=torch.bool), ignore_index, reduction, num_items_in_batch,
        implementation=implementation,
    )


def unified_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    unlearn_mask: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    *,
    implementation: str = "torch",
) -> torch.Tensor:
    r"""One loss for learning and unlearning: standard CE where ``unlearn_mask`` is False, CE-U where True.

    Both are CE(target, softmax(z)); only the target differs: the one-hot e_y (learn) or the masked self-distribution
    q = softmax(stopgrad(z) with z_y = -inf) (unlearn). Gradient on the logits: p - e_y (learn), p - q (unlearn).
    This is the unified framework of the CE-U paper (arXiv 2503.01224, Sec. 3): e.g. CE-U on forget tokens and CE on
    retain tokens in one batch. Arguments as in `ce_u_loss`; ``unlearn_mask`` is a bool tensor of labels' shape.
    """
    check_reduction(reduction)
    check_logits_labels(logits, labels, ignore_index)
    if not isinstance(unlearn_mask, torch.Tensor) or unlearn_mask.dtype != torch.bool:
        raise ValueError(
            f"unlearn_mask must be a bool tensor (True = unlearn with CE-U), got {getattr(unlearn_mask, 'dtype', type(unlearn_mask))}."
        )
    check_same_shape("unlearn_mask", unlearn_mask, "labels", labels)
    use_triton = _use_triton(implementation, logits)
    per_token, valid = per_token_unified_cross_entropy(logits, labels, unlearn_mask, ignore_index, use_triton)
    return reduce(per_token, valid, reduction, num_items_in_batch)


def _use_triton(implementation: str, logits: torch.Tensor) -> bool:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is not supported: use one of {IMPLEMENTATIONS}.")
    if implementation != "triton":
        return False
    reason = _triton_unavailable_reason(logits.device, _compute_dtype(logits.dtype))
    if reason is not None:
        warnings.warn(f"ce_u_loss / unified_cross_entropy: implementation='triton' unavailable ({reason}); using "
                      "the torch path.", stacklevel=3)
    return reason is None


def gradient_ascent_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Gradient ascent (GA) on the labels: the loss is log p_y, i.e. minus the cross entropy.

    Minimising it pushes p_y down. Its logit gradient is e_y - p, whose label component 1 - p_y vanishes when the model is confident and never stops pushing log p_y towards -inf (L1 norm
    2 (1 - p_y)). The unlearning baseline of Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in
    Language Models" (ACL 2023) and of TOFU (Maini et al. 2024). Arguments as in `ce_u_loss`.
    """
    check_reduction(reduction)
    check_logits_labels(logits, labels, ignore_index)
    learn = torch.zeros_like(labels, dtype=torch.bool)
    per_token, valid = per_token_unified_cross_entropy(logits, labels, learn, ignore_index)
    return reduce(-per_token, valid, reduction, num_items_in_batch)


def reference_kl_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    r"""Mean over valid positions of KL(p_ref || p): keeps the model's next-token distributions close to a frozen
    reference on retain data. The regulariser of TOFU's "KL" baseline (Maini et al. 2024, Sec. 4; open-unlearning's
    GradDiff with retain_loss_type=KL). Computed in float32."""
    check_logits_labels(logits, labels, ignore_index)
    check_same_shape("ref_logits", ref_logits, "logits", logits)
    valid = labels != ignore_index
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.detach().float(), dim=-1)
    per_token = torch.nn.functional.kl_div(logp, ref_logp, log_target=True, reduction="none").sum(-1)
    return reduce(torch.where(valid, per_token, torch.zeros_like(per_token)), valid, "mean")
