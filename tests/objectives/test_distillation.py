"""forward_kl_loss (UNDO's distillation loss) against a float64 full-vocabulary formula via autograd and the closed-form
logit gradient softmax(student) - softmax(teacher), confident teachers (p -> 1) included."""

import pytest
import torch

from ceu_rl.objectives import forward_kl_loss


def naive_forward_kl(student, teacher, mask):
    """float64: mean over masked positions of sum_v p_v log(p_v / q_v), p = softmax(teacher) by exp / sum (no
    log-softmax), and its gradient in the student's logits by autograd."""
    z = student.detach().double().clone().requires_grad_()
    a = teacher.detach().double()
    p = torch.exp(a - a.max(-1, keepdim=True).values)
    p = p / p.sum(-1, keepdim=True)
    q = torch.exp(z - z.max(-1, keepdim=True).values)
    q = q / q.sum(-1, keepdim=True)
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p)).sum(-1)
    value = (terms * mask).sum() / mask.sum().clamp(min=1)
    value.backward()
    return value.detach(), z.grad


def _case(kind, shape=(2, 5, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=g) * 3
    teacher = torch.randn(shape, generator=g) * 3
    if kind == "confident_teacher":  # p_teacher ~ 1 - 1e-12 on one token per position
        teacher[..., 3] += 35.0
    elif kind == "both_confident":  # both near 1 on the same token: KL tiny, gradient tiny
        teacher[..., 3] += 30.0
        student[..., 3] += 25.0
    elif kind == "confident_elsewhere":  # the student is sure of another token: a large KL
        teacher[..., 3] += 30.0
        student[..., 7] += 30.0
    mask = torch.rand(shape[:-1], generator=g) > 0.3
    mask[0, 0] = True
    return student, teacher, mask


@pytest.mark.parametrize("kind", ["random", "confident_teacher", "both_confident", "confident_elsewhere"])
def test_value_and_gradient_equal_float64_formula_and_closed_form(kind):
    student, teacher, mask = _case(kind)
    ref_value, ref_grad = naive_forward_kl(student, teacher, mask.double())
    z = student.clone().requires_grad_()
    value = forward_kl_loss(z, teacher, mask)
    value.backward()
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double(), ref_grad, rtol=1e-4, atol=1e-7)
    # closed form: (softmax(student) - softmax(teacher)) / n on masked positions, 0 elsewhere
    closed = (torch.softmax(student.double(), -1) - torch.softmax(teacher.double(), -1)) * mask.double()[..., None]
    torch.testing.assert_close(z.grad.double(), closed / mask.sum(), rtol=1e-4, atol=1e-7)


def test_float64_inputs_stay_float64_and_match_exactly():
    student, teacher, mask = _case("confident_teacher")
    z = student.double().requires_grad_()
    value = forward_kl_loss(z, teacher.double(), mask)
    value.backward()
    ref_value, ref_grad = naive_forward_kl(student, teacher, mask.double())
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(z.grad, ref_grad, rtol=1e-10, atol=1e-15)


def test_teacher_probabilities_underflowing_to_zero_give_no_nan():
    """A gap of 200 nats: exp(-200) underflows to 0 in float32; the term is 0, not 0 * inf."""
    student, teacher, mask = _case("random")
    teacher[..., 3] += 200.0
    z = student.clone().requires_grad_()
    value = forward_kl_loss(z, teacher, mask)
    value.backward()
    ref_value, ref_grad = naive_forward_kl(student, teacher, mask.double())
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_identical_logits_give_zero_and_a_rounding_level_gradient():
    student, _, mask = _case("confident_teacher")
    z = student.clone().requires_grad_()
    value = forward_kl_loss(z, student.clone(), mask)
    value.backward()
    assert value.item() == 0.0  # log p - log q is exactly 0
    assert z.grad.abs().max() < 1e-6  # q - p through log-softmax's backward: float32 rounding only


def test_reductions_mask_and_teacher_gets_no_gradient():
    student, teacher, mask = _case("random")
    t = teacher.clone().requires_grad_()
    per = forward_kl_loss(student, t, mask, reduction="none")
    assert per.shape == mask.shape and (per[~mask] == 0).all() and (per[mask] > 0).all()
    torch.testing.assert_close(forward_kl_loss(student, t, mask, reduction="sum"), per.sum())
    torch.testing.assert_close(forward_kl_loss(student, t, mask), per.sum() / mask.sum())
    torch.testing.assert_close(forward_kl_loss(student, t), forward_kl_loss(student, t, torch.ones_like(mask)))
    assert not forward_kl_loss(student, t, mask).requires_grad  # the teacher is the target: detached
    assert forward_kl_loss(student, teacher, torch.zeros_like(mask)).item() == 0.0


def test_bad_inputs_name_the_problem():
    student, teacher, mask = _case("random")
    with pytest.raises(ValueError, match="same vocabulary"):
        forward_kl_loss(student, teacher[..., :-1], mask)
    with pytest.raises(ValueError, match="mask"):
        forward_kl_loss(student, teacher, mask[:, :-1])
    with pytest.raises(ValueError, match="reduction"):
        forward_kl_loss(student, teacher, mask, reduction="avg")
