"""Forward-KL distillation on the full next-token distribution (UNDO's distillation step, Lee et al.,
"Distillation Robustifies Unlearning", arXiv 2506.06278; the authors' `forward_kl_loss_fn`).

Per position t with teacher logits a_t and student logits z_t over the whole vocabulary:

    KL(p_teacher || p_student) = sum_v p_teacher,v (log p_teacher,v - log p_student,v)

averaged over the positions of `mask`. No labels: the teacher's distribution is the target. Its gradient with respect to
the student's logits is (softmax(z_t) - softmax(a_t)) / n_positions; the teacher gets none.
"""

from __future__ import annotations

import torch

from ._checks import check_reduction


def forward_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    """KL(teacher || student) per position, summed over the vocabulary.

    Args:
        student_logits, teacher_logits: (..., V), aligned (position t of both predicts the same next token), the same
            shape. Computed in float32 at least (float64 stays float64); log-softmax on both sides, so a teacher that
            puts p -> 1 on one token (p_v underflowing to 0 elsewhere) gives exact zeros, not NaN.
        mask: (...) bool, the positions that count (e.g. attention_mask[:, 1:] for shifted logits); default all.
        reduction: "mean" over the masked positions (0 when there are none), "sum", or "none" (per position, 0 where
            masked out).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} differ: the student and the teacher need the same vocabulary "
                         "and the same positions.")
    check_reduction(reduction)
    if mask is None:
        mask = torch.ones(student_logits.shape[:-1], dtype=torch.bool, device=student_logits.device)
    elif mask.shape != student_logits.shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must have the logits' shape without the vocabulary dimension, "
                         f"{tuple(student_logits.shape[:-1])}.")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype), dim=-1)
    log_p = torch.log_softmax(teacher_logits.detach().to(dtype), dim=-1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    per_position = torch.where(mask.bool(), per_position, torch.zeros_like(per_position))
    if reduction == "none":
        return per_position
    if reduction == "sum":
        return per_position.sum()
    return per_position.sum() / mask.sum().clamp(min=1)
