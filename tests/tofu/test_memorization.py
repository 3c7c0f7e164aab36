"""Exact memorization and extraction strength against hand values and open-unlearning's loop written out."""

import numpy as np
import pytest

from ceu_rl.tofu import memorization


def _es_loop(preds, labels):
    """open-unlearning's extraction strength, as its loop reads (memorization.py)."""
    n = len(labels)
    if n == 0:
        return 0
    for k in range(n):
        if list(preds[k:]) == list(labels[k:]):
            break
    return 1 - k / n


def test_extraction_strength_by_hand():
    labels = [4, 7, 1, 9, 3]
    assert memorization.extraction_strength(labels, labels) == 1.0  # the whole answer from its first token
    assert memorization.extraction_strength([0, 0, 1, 9, 3], labels) == 1 - 2 / 5  # from the third token on
    # nothing matches: the loop ends at k = n - 1, i.e. 1/n, the same as when only the last token matches; written
    # 1 - (n - 1) / n as open-unlearning computes it (0.19999999999999996, as in their logs' 1 - 93/94)
    assert memorization.extraction_strength([0, 0, 0, 0, 0], labels) == 1 - 4 / 5
    assert memorization.extraction_strength([0, 0, 0, 0, 3], labels) == 1 - 4 / 5
    assert memorization.extraction_strength([4, 7, 1, 9, 0], labels) == 1 - 4 / 5  # a mismatch at the end
    assert memorization.extraction_strength([], []) == 0.0  # no answer tokens: 0, counted in the mean
    with pytest.raises(ValueError, match="same shape"):
        memorization.extraction_strength([1], [1, 2])


@pytest.mark.parametrize("seed", range(5))
def test_extraction_strength_against_the_loop(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = int(rng.integers(0, 9))
        labels = rng.integers(0, 3, n)
        preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 3, n))
        assert memorization.extraction_strength(preds, labels) == _es_loop(preds, labels)


def test_exact_memorization_by_hand_and_empty_rows():
    assert memorization.exact_memorization([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    assert memorization.exact_memorization([5], [5]) == 1.0
    assert memorization.exact_memorization([], []) is None  # open-unlearning: None, left out of the mean
    assert memorization.exact_memorization_mean([0.5, None, 1.0]) == 0.75
    with pytest.raises(ValueError, match="no item has answer tokens"):
        memorization.exact_memorization_mean([None, None])
    assert memorization.extraction_strength_mean([0.0, 1.0, 0.5]) == 0.5
    with pytest.raises(ValueError, match="same shape"):
        memorization.exact_memorization([1, 2], [1])
