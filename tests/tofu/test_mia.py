"""The MIA scores and AUC against brute force: pairwise counts, per-position loops in float64, autograd's .backward."""

import math
import zlib

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import mia


def _pairwise_auc(forget, holdout):
    """P(holdout > forget) + P(tie) / 2 by counting every pair: holdout (non-member) is the positive class."""
    wins = sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout)
    return wins / (len(forget) * len(holdout))


@pytest.mark.parametrize("seed", range(6))
def test_auc_is_the_pairwise_count_with_ties_half(seed):
    rng = np.random.default_rng(seed)
    n_f, n_h = rng.integers(1, 40, size=2)
    if seed % 2:  # many ties: small integers
        f, h = rng.integers(0, 5, n_f).astype(float), rng.integers(0, 5, n_h).astype(float)
    else:
        f, h = rng.normal(size=n_f), rng.normal(0.5, size=n_h)
    assert mia.mia_auc(f, h) == pytest.approx(_pairwise_auc(f, h), abs=1e-12)


def test_auc_convention_and_edge_cases():
    assert mia.mia_auc([1.0, 2.0], [3.0, 4.0]) == 1.0  # forget losses lower: the forget items look like members
    assert mia.mia_auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert mia.mia_auc([2.0] * 5, [2.0] * 3) == 0.5  # identical scores: cannot be told apart
    assert mia.mia_auc([1.0], [1.0, 2.0]) == 0.75
    with pytest.raises(ValueError, match="needs forget and holdout scores"):
        mia.mia_auc([], [1.0])
    with pytest.raises(ValueError, match="must be finite"):
        mia.mia_auc([float("nan")], [1.0])


def test_loss_and_zlib_by_hand():
    assert mia.loss_score([math.log(0.5), math.log(0.25)]) == pytest.approx((math.log(2) + math.log(4)) / 2)
    text = "Ana was born in Lisbon. Ana was born in Lisbon."
    compressed = len(zlib.compress(text.encode("utf-8")))
    assert compressed < len(text)  # the repetition compresses
    assert mia.zlib_score(3.0, text) == pytest.approx(3.0 / compressed)
    assert mia.zlib_score(1.0, "é") == 1.0 / len(zlib.compress("é".encode("utf-8")))
    assert mia.reference_score(2.5, 1.0) == 1.5


def test_min_k_counts_and_values_by_hand():
    # k = 0.4: floor(0.4 n) tokens, at least one (open-unlearning's max(1, int(n * k)))
    for n in range(1, 30):
        lp = -np.arange(1, n + 1, dtype=float)  # -1, -2, ..., -n
        count = max(1, (2 * n) // 5)
        expected = np.mean(np.arange(n - count + 1, n + 1))  # the `count` most negative, negated
        assert mia.min_k_score(lp) == pytest.approx(expected, rel=1e-12), n
    assert mia.min_k_score([-1.0, -5.0, -3.0, -2.0, -4.0]) == 4.5
    assert mia.min_k_score([]) == 0.0  # an item without tokens, as open-unlearning
    assert mia.min_k_plus_plus_score([], [], []) == 0.0


def _min_k_pp_brute(logits, targets, k=0.4):
    z = []
    for row, t in zip(logits, targets):
        m = max(row)
        lse = m + math.log(sum(math.exp(x - m) for x in row))
        logp = [x - lse for x in row]
        p = [math.exp(v) for v in logp]
        mu = sum(pi * li for pi, li in zip(p, logp))
        var = sum(pi * (li - mu) ** 2 for pi, li in zip(p, logp))  # centred form, unlike the code's
        z.append((logp[t] - mu) / math.sqrt(max(var, 1e-6)))
    z.sort()
    count = max(1, int(len(z) * k))
    return -sum(z[:count]) / count


@pytest.mark.parametrize("n", [1, 3, 5, 12])
def test_min_k_plus_plus_against_per_position_loops(n):
    rng = np.random.default_rng(n)
    logits = rng.normal(0, 3, size=(n, 11))
    targets = rng.integers(0, 11, n)
    lp = torch.log_softmax(torch.tensor(logits), -1)
    mu, var = mia.vocab_moments(lp)
    token_lp = lp[torch.arange(n), torch.tensor(targets)].numpy()
    assert mia.min_k_plus_plus_score(token_lp, mu, var) == pytest.approx(_min_k_pp_brute(logits, targets), rel=1e-10)


def test_min_k_plus_plus_variance_floor():
    logits = np.array([[60.0, 0.0, 0.0, 0.0], [0.5, 0.1, 0.2, 0.0]])  # the first row: variance ~ 1e-23 < 1e-6
    lp = torch.log_softmax(torch.tensor(logits), -1)
    mu, var = mia.vocab_moments(lp)
    assert var[0] < 1e-6
    assert mia.min_k_plus_plus_score(lp[[0, 1], [1, 0]].numpy(), mu, var) == pytest.approx(
        _min_k_pp_brute(logits, [1, 0]), rel=1e-10)
    with pytest.raises(ValueError, match="must have the token log-probs' shape"):
        mia.min_k_plus_plus_score([0.0, 1.0], [0.0], [1.0])


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory):
    texts = ["Ana was born in Lisbon.", "Bo writes poems about the sea.", "Question: Answer:"] * 5
    path = save_tiny_model(tmp_path_factory.mktemp("mia-tiny"), texts, vocab_size=300, hidden_size=32)
    return AutoModelForCausalLM.from_pretrained(path).double()


@pytest.mark.parametrize("p", [1, 2, float("inf")])
def test_gradient_norm_against_backward_in_float64(tiny64, p):
    model = tiny64
    ids = torch.tensor([5, 17, 40, 33, 8, 91, 12, 2])
    labels = torch.tensor([-100, -100, -100, 33, 8, 91, 12, 2])  # answer 33 8 91 12 + EOS 2
    # by hand: -mean log p of the answer tokens but the last (EOS), then .backward and each .grad's p-norm
    model.zero_grad(set_to_none=True)
    logits = model(ids[None]).logits[0]
    loss = -torch.stack([torch.log_softmax(logits[j - 1], -1)[ids[j]] for j in (3, 4, 5, 6)]).mean()
    loss.backward()
    norms = [q.grad.norm(p).item() for q in model.parameters() if q.grad is not None]
    expected = sum(norms) / len(norms)
    model.zero_grad(set_to_none=True)
    assert mia.gradient_norm(model, ids, labels, p) == pytest.approx(expected, rel=1e-10)
    assert all(q.grad is None for q in model.parameters())  # the model's grad buffers are left alone


def test_gradient_norm_errors(tiny64):
    ids = torch.tensor([5, 17, 2])
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        mia.gradient_norm(tiny64, ids, torch.tensor([-100, 17, 2]), p=3)
    with pytest.raises(ValueError, match="at least two labelled tokens"):
        mia.gradient_norm(tiny64, ids, torch.tensor([-100, -100, 2]))


def test_mia_entry_layout():
    entry = mia.mia_entry([1.0, 2.0], [3.0])
    assert entry["auc"] == entry["agg_value"] == 1.0
    assert entry["forget"] == {"agg_value": 1.5, "value_by_index": {"0": {"score": 1.0}, "1": {"score": 2.0}}}
    assert entry["holdout"]["value_by_index"] == {"0": {"score": 3.0}}
