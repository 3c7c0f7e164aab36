"""ce_u_loss_from_logprobs (what TRL's fused head gives: log p_y, entropy) against the full-logits reference."""

import pytest
import torch

from ceu_rl.objectives import ce_u_loss_from_logprobs

from .reference import logits_with_label_prob, naive_ce_u


def _logprob_form_on_logits(logits, labels, **kw):
    """Value and logit gradient of the log-prob form, with log p_y and H computed from `logits` in their dtype."""
    z = logits.clone().requires_grad_()
    logp_all = torch.log_softmax(z, dim=-1)
    logp = logp_all.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    value = ce_u_loss_from_logprobs(logp, entropy, reduction="none", **kw)
    value.sum().backward()
    return value.detach(), z.grad


@pytest.mark.parametrize("vocab", [2, 100, 32000])
def test_float64_equals_full_form_below_one_minus_1e6(vocab):
    gen = torch.Generator().manual_seed(vocab)
    p = torch.tensor([1e-4, 0.1, 0.5, 0.9, 0.999, 1 - 1e-5, 1 - 2e-6], dtype=torch.float64)
    logits, labels = logits_with_label_prob(p, vocab, gen)
    value, grad = _logprob_form_on_logits(logits, labels)
    ref_value, ref_grad = naive_ce_u(logits, labels)
    # float64: log p_y has ~1e-16 absolute error, divided by 1 - p_y >= 1e-6
    torch.testing.assert_close(value, ref_value, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-10)


def test_float32_within_documented_tolerance_where_one_minus_p_above_1e2():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.01, 0.3, 0.7, 0.95, 0.98, 0.99], dtype=torch.float64)
    logits, labels = logits_with_label_prob(p, 32000, gen)
    value, grad = _logprob_form_on_logits(logits.float(), labels)
    ref_value, ref_grad = naive_ce_u(logits.float(), labels)
    torch.testing.assert_close(value.double(), ref_value, rtol=5e-2, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=5e-2, atol=1e-6)


def test_p_rounding_to_one_is_finite_and_capped():
    logp = torch.tensor([0.0, -1e-9, -1e-3], requires_grad=True)
    entropy = torch.tensor([0.0, 1e-8, 1e-2])
    value = ce_u_loss_from_logprobs(logp, entropy, reduction="none")
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logp.grad).all()
    # w = p / max(1 - p, 1e-6) <= 1e6 in float32
    assert logp.grad.max() <= 1e6 * (1 + 1e-6)
    torch.testing.assert_close(logp.grad[2], torch.exp(torch.tensor(-1e-3)) / -torch.expm1(torch.tensor(-1e-3)))


def test_gradient_is_weight_times_grad_logp_and_entropy_gets_none():
    logp = torch.log(torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)).requires_grad_()
    entropy = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64, requires_grad=True)
    value = ce_u_loss_from_logprobs(logp, entropy, reduction="sum")
    value.backward()
    p = logp.detach().exp()
    torch.testing.assert_close(logp.grad, p / (1 - p))
    assert entropy.grad is None or torch.equal(entropy.grad, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(value.detach(), ((entropy.detach() + p * logp.detach()) / (1 - p)).sum())


def test_mask_and_reductions():
    logp = torch.log(torch.tensor([[0.2, 0.5], [0.9, 0.3]], dtype=torch.float64)).requires_grad_()
    entropy = torch.tensor([[2.0, 1.0], [0.5, 1.5]], dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True]])
    p = logp.detach().exp()
    per = (entropy + p * logp.detach()) / (1 - p) * mask
    none = ce_u_loss_from_logprobs(logp, entropy, mask, reduction="none")
    torch.testing.assert_close(none.detach(), per)
    torch.testing.assert_close(ce_u_loss_from_logprobs(logp, entropy, mask).detach(), per.sum() / 3)
    mean_acc = ce_u_loss_from_logprobs(logp, entropy, mask, num_items_in_batch=6)
    torch.testing.assert_close(mean_acc.detach(), per.sum() / 6)
    empty = ce_u_loss_from_logprobs(logp, entropy, torch.zeros_like(mask))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(logp.grad, torch.zeros_like(logp))


def test_bad_input():
    with pytest.raises(ValueError, match="entropy has shape"):
        ce_u_loss_from_logprobs(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="logprobs must be <= 0"):
        ce_u_loss_from_logprobs(torch.tensor([0.5]), torch.tensor([0.1]))
    with pytest.raises(ValueError, match="mask has shape"):
        ce_u_loss_from_logprobs(torch.zeros(3) - 1, torch.zeros(3), torch.ones(2, dtype=torch.bool))
