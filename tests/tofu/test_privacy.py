"""privleak against hand values and a value of open-unlearning's own summaries."""

import pytest

from ceu_rl.tofu.privacy import privleak


def test_privleak_by_hand():
    assert privleak(0.5) == 0.0  # the reference AUC 0.5 without a retain model
    assert privleak(0.3, 0.3) == 0.0  # the retain model's own level
    # (1 - 0.9) - (1 - 0.4) = -0.5 over (1 - 0.4): -83.3% (the model separates forget from holdout far better)
    assert privleak(0.9, 0.4) == pytest.approx(-0.5 / 0.6 * 100, rel=1e-9)
    assert privleak(1.0) == pytest.approx(-100, rel=1e-9)
    assert privleak(0.25) == pytest.approx(50, rel=1e-9)  # below the reference: positive


def test_privleak_matches_an_open_unlearning_summary_bit_for_bit():
    # tofu_Llama-3.2-1B-Instruct_retain90/TOFU_SUMMARY.json: mia_min_k and privleak (no retain log: ref 0.5)
    assert privleak(0.38261249999999997) == 23.477499995304495
