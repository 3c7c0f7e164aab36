"""reweighted_logprobs (same value, gradient w grad l), ce_u_weight, divergence_from_positives and
negative_token_weight against independent references (float64 autograd, plain Python)."""

import pytest
import torch

from ceu_rl.objectives import (
    ce_u_loss,
    ce_u_weight,
    divergence_from_positives,
    negative_token_weight,
    reweighted_logprobs,
)


def test_value_is_bit_exact_and_gradient_is_reweighted():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=gen, dtype=torch.float32, requires_grad=True)
    logp = torch.log_softmax(logits, -1)[:, 0]
    weight = torch.rand(5, generator=gen) * 3
    out = reweighted_logprobs(logp, weight)
    assert torch.equal(out, logp)
    (g,) = torch.autograd.grad((out * torch.arange(1.0, 6.0)).sum(), logits, retain_graph=True)
    (expected,) = torch.autograd.grad((logp * weight * torch.arange(1.0, 6.0)).sum(), logits)
    torch.testing.assert_close(g, expected)


def test_ce_u_weight_gives_ce_u_gradient():
    """w grad log p_y = grad CE-U (full-logits `ce_u_loss`), float64."""
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(6, 50, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    labels = torch.randint(0, 50, (6,), generator=gen)
    logp = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    (ours,) = torch.autograd.grad(reweighted_logprobs(logp, ce_u_weight(logp)).sum(), logits)
    (ref,) = torch.autograd.grad(ce_u_loss(logits, labels, reduction="sum"), logits)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    p = logp.detach().exp()
    torch.testing.assert_close(ce_u_weight(logp), p / (1 - p))
    assert ce_u_weight(torch.zeros(1)).item() == pytest.approx(1e6)  # log p = 0: capped, not inf


def _reference_divergence(ids, mask, adv, group):
    out = []
    for i in range(len(ids)):
        toks = [t for t, m in zip(ids[i], mask[i]) if m]
        best = 0
        for j in range(i // group * group, i // group * group + group):
            if adv[j] > 0:
                other = [t for t, m in zip(ids[j], mask[j]) if m]
                n = 0
                while n < min(len(toks), len(other)) and toks[n] == other[n]:
                    n += 1
                best = max(best, n)
        out.append(best)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_divergence_from_positives_against_python(seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 3, (12, 6), generator=gen)  # 3 symbols: long shared prefixes are common
    lengths = torch.randint(1, 7, (12,), generator=gen)
    mask = (torch.arange(6) < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 99)  # padding never counts as shared
    adv = torch.randn(12, generator=gen)
    got = divergence_from_positives(ids, mask, adv, group_size=4)
    assert got.tolist() == _reference_divergence(ids.tolist(), mask.tolist(), adv.tolist(), 4)


def test_negative_token_weight_per_variant():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.9], [0.2, 0.5, 0.9]]))
    adv = torch.tensor([[-1.0], [1.0]])
    w = 1 / torch.tensor([0.8, 0.5, 0.1]) * torch.tensor([0.2, 0.5, 0.9])
    torch.testing.assert_close(negative_token_weight("ceu_full", logp, adv)[0], w)
    torch.testing.assert_close(negative_token_weight("ceu_min", logp, adv)[0], w.clamp(max=1))
    prefix = negative_token_weight("ceu_prefix", logp, adv, torch.tensor([2, 0]))[0]
    torch.testing.assert_close(prefix, torch.tensor([1.0, 1.0, w[2].item()]))
    for name in ("pg", "ceu_full", "ceu_min", "ceu_prefix"):
        weight = negative_token_weight(name, logp, adv, torch.tensor([2, 0]))
        assert torch.equal(weight[1], torch.ones(3))  # A > 0: untouched
    with pytest.raises(ValueError, match="negative_objective='gaa'"):
        negative_token_weight("gaa", logp, adv)
    with pytest.raises(ValueError, match="needs divergence_index"):
        negative_token_weight("ceu_prefix", logp, adv)
    with pytest.raises(ValueError, match="group_size=3 must divide"):
        divergence_from_positives(torch.zeros(4, 2, dtype=torch.long), torch.ones(4, 2), torch.zeros(4), 3)
