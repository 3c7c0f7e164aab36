"""token_weights: each weight of the GRPO family against a plain-Python / float64 reference, and range errors."""

import math

import pytest
import torch

from ceu_rl.objectives.reweighted_logprobs import negative_token_weight
from ceu_rl.objectives.token_weights import (
    advantage_reweighting_weight,
    ceu_mix_weight,
    clip_cov_weight,
    positive_token_weight,
    shared_negative_token_weight,
)

P = [[0.2, 0.5, 0.9], [0.01, 0.6, 0.99]]
ADV = [[-1.0], [1.0]]


def _logp():
    return torch.log(torch.tensor(P, dtype=torch.float64))


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_ceu_mix(lam):
    want = [[(1 - lam) + lam * p / (1 - p) if a[0] < 0 else 1.0 for p in row] for row, a in zip(P, ADV)]
    got = negative_token_weight("ceu_mix", _logp(), torch.tensor(ADV, dtype=torch.float64), ceu_mix_lambda=lam)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    torch.testing.assert_close(ceu_mix_weight(_logp(), lam)[0], torch.tensor(want[0], dtype=torch.float64))


def test_advantage_reweighting_and_positive_weight():
    torch.testing.assert_close(advantage_reweighting_weight(_logp(), 0.3),
                               torch.tensor([[0.3 * p + 0.7 for p in row] for row in P], dtype=torch.float64))
    got = positive_token_weight(_logp(), torch.tensor(ADV), 0.1)
    assert got.tolist() == [[1.0] * 3, [0.1] * 3]


def test_shared_negative():
    adv = torch.tensor([[-1.0], [-1.0]])
    got = shared_negative_token_weight(_logp(), adv, torch.tensor([2, 0]), 0.5)
    assert got.tolist() == [[0.5, 0.5, 1.0], [1.0, 1.0, 1.0]]


@pytest.mark.parametrize("seed", range(4))
def test_clip_cov_against_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    logp = torch.log(torch.rand(6, 5, generator=gen, dtype=torch.float64) * 0.98 + 0.01)
    adv = torch.randn(6, 1, generator=gen, dtype=torch.float64)
    mask = (torch.arange(5) < torch.randint(1, 6, (6, 1), generator=gen)).long()
    cells = [(i, t) for i in range(6) for t in range(5) if mask[i, t]]
    mean_l = math.fsum(logp[c].item() for c in cells) / len(cells)
    mean_a = math.fsum(adv[c[0], 0].item() for c in cells) / len(cells)
    cov = sorted(((logp[c].item() - mean_l) * (adv[c[0], 0].item() - mean_a), c) for c in cells)[::-1]
    ratio = 0.25
    zeroed = {c for v, c in cov[:int(ratio * len(cells))] if v > 0}
    got = clip_cov_weight(logp, adv, mask, ratio)
    assert {(i, t) for i in range(6) for t in range(5) if got[i, t] == 0} == zeroed and zeroed
    assert torch.equal(clip_cov_weight(logp, adv, mask, 0.0), torch.ones_like(logp))


@pytest.mark.parametrize("call, match", [
    (lambda: ceu_mix_weight(_logp(), 1.2), r"ceu_mix_lambda=1.2 is out of range: use a value in \[0, 1\]"),
    (lambda: advantage_reweighting_weight(_logp(), -0.1), r"ar_alpha=-0.1 is out of range"),
    (lambda: positive_token_weight(_logp(), torch.tensor(ADV), -1.0), r"positive_weight=-1.0 is out of range"),
    (lambda: clip_cov_weight(_logp(), torch.tensor(ADV), torch.ones(2, 3), 1.5), r"clip_cov_ratio=1.5"),
    (lambda: shared_negative_token_weight(_logp(), torch.tensor(ADV), torch.zeros(2), 2.0), "shared_negative_weight"),
])
def test_ranges(call, match):
    with pytest.raises(ValueError, match=match):
        call()
