"""TOFU metrics against independent computations (scipy, hand-computed values, rouge-score) and open-unlearning's
own logs."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from ceu_rl.tofu import metrics
from ceu_rl.tofu.data import EVAL_LOGS_DIR, FORGET_TO_RETAIN, load_idk, load_split, retain_eval_log


def test_truth_ratio_by_hand():
    # R = exp(-mean(wrong)) / exp(-correct): losses 1 and (2, 4) -> exp(-3)/exp(-1) = e^-2
    r = metrics.truth_ratios([1.0, 2.0], [[2.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(r, [math.exp(-2), math.exp(1)], rtol=1e-8)
    assert metrics.truth_ratio_forget_score(r) == pytest.approx((math.exp(-2) + math.exp(-1)) / 2, rel=1e-8)
    assert metrics.truth_ratio_utility_score(r) == pytest.approx((1 - math.exp(-2) + 0) / 2, rel=1e-8)


def test_normalised_probability_by_hand():
    np.testing.assert_allclose(metrics.normalised_probability([0.5], [[0.25, 0.25]]), [0.5], rtol=1e-8)


def test_forget_quality_is_scipy_ks_pvalue():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=40), rng.lognormal(0.5, size=400)
    assert metrics.forget_quality(a, b) == stats.ks_2samp(a, b).pvalue
    assert metrics.forget_quality(b, b) == 1.0


def test_model_utility_is_harmonic_mean():
    values = dict(zip(metrics.UTILITY_KEYS, [0.2, 0.4, 0.5, 0.8, 1.0, 0.25, 0.5, 0.6, 0.9]))
    expected = 9 / sum(1 / v for v in values.values())
    assert metrics.model_utility(values) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="missing \\['wf_Truth_Ratio'\\]"):
        metrics.model_utility({k: v for k, v in values.items() if k != "wf_Truth_Ratio"})


def test_rouge_recall_against_rouge_score_and_by_hand():
    s = metrics.rouge_scores("the cat sat", "the cat sat on the mat")
    assert s["rougeL_recall"] == pytest.approx(3 / 6)
    assert s["rouge1_recall"] == pytest.approx(3 / 6)


@pytest.mark.parametrize("retain", ["retain90", "retain95", "retain99"])
def test_open_unlearning_logs_reproduced_exactly(retain):
    log = json.loads((EVAL_LOGS_DIR / f"tofu_Llama-2-7b-chat-hf_{retain}" / "TOFU_EVAL.json").read_text())
    summary = metrics.summary_from_eval_log(log, log)
    for key, value in summary.items():
        if key != "forget_quality":
            assert value == pytest.approx(log[key]["agg_value"], rel=1e-12, abs=1e-15), key
    assert summary["forget_quality"] == 1.0  # a retain model against itself
    logged_summary = json.loads((EVAL_LOGS_DIR / f"tofu_Llama-2-7b-chat-hf_{retain}" / "TOFU_SUMMARY.json").read_text())
    assert summary["model_utility"] == pytest.approx(logged_summary["model_utility"], rel=1e-12)
    # per-question truth ratios from the logged per-answer losses
    for prefix, key, correct in (("forget", "forget_truth_ratio", "PARA"), ("retain", "retain_Truth_Ratio", "PARA"),
                                 ("ra", "ra_Truth_Ratio", None), ("wf", "wf_Truth_Ratio", None)):
        correct_key = f"{prefix}_Q_A_{correct}_Prob" if correct else f"{prefix}_Q_A_Prob"
        c = [v["avg_loss"] for v in log[correct_key]["value_by_index"].values()]
        w = [v["avg_loss"] for v in log[f"{prefix}_Q_A_PERT_Prob"]["value_by_index"].values()]
        logged = [v["score"] for v in log[key]["value_by_index"].values()]
        np.testing.assert_allclose(metrics.truth_ratios(c, w), logged, rtol=1e-12)
    for prefix in ("ra", "wf"):
        c = [v["prob"] for v in log[f"{prefix}_Q_A_Prob"]["value_by_index"].values()]
        w = [v["prob"] for v in log[f"{prefix}_Q_A_PERT_Prob"]["value_by_index"].values()]
        logged = [v["prob"] for v in log[f"{prefix}_Q_A_Prob_normalised"]["value_by_index"].values()]
        np.testing.assert_allclose(metrics.normalised_probability(c, w), logged, rtol=1e-12)


def test_score_cli_on_shipped_logs():
    path = retain_eval_log("forget05")
    out = subprocess.run([sys.executable, "-m", "ceu_rl.tofu.score", str(path), "--retain", str(path)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    logged = json.loads(path.read_text())
    assert result["forget_quality"] == 1.0
    assert result["model_utility"] == pytest.approx(logged["model_utility"]["agg_value"], rel=1e-12)
    bad = subprocess.run([sys.executable, "-m", "ceu_rl.tofu.score", "/nonexistent.json"], capture_output=True, text=True)
    assert bad.returncode != 0 and "does not exist" in bad.stderr


def test_loader_on_shipped_and_shared_data():
    sizes = {"full": 4000, "forget01": 40, "forget05": 200, "forget10": 400, "retain90": 3600, "retain_perturbed": 400,
             "real_authors_perturbed": 100, "world_facts_perturbed": 117, "forget10_perturbed": 400}
    for name, n in sizes.items():
        assert len(load_split(name)) == n, name
    full = load_split("full")
    for forget, retain in FORGET_TO_RETAIN.items():
        f, r = load_split(forget), load_split(retain)
        assert list(r["question"]) + list(f["question"]) == list(full["question"])
    pert = load_split("forget01_perturbed")
    assert all(len(p) == 5 for p in pert["perturbed_answer"])
    assert len(load_idk()) > 50
    import pathlib
    shared = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tofu"
    if shared.is_dir():  # the project's machines and CI: the shipped copy equals the shared one
        assert list(load_split("forget10", shared)["answer"]) == list(load_split("forget10")["answer"])


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown TOFU split 'forget11'"):
        load_split("forget11")
    with pytest.raises(FileNotFoundError, match="TOFU split 'forget01' not found"):
        load_split("forget01", tmp_path)
    (tmp_path / "forget01_perturbed.json").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(ValueError, match="lacks field\\(s\\) \\['paraphrased_answer', 'perturbed_answer'\\]"):
        load_split("forget01_perturbed", tmp_path)
