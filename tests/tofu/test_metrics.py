"""TOFU metrics against independent computations (scipy, hand-computed values, rouge-score) and open-unlearning's
own logs."""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from ceu_rl.tofu import metrics
from ceu_rl.tofu.data import EVAL_LOGS_DIR, FORGET_TO_RETAIN, load_idk, load_split, retain_eval_log
from ceu_rl.tofu.privacy import privleak


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


MODELS = ("Llama-2-7b-chat-hf", "Llama-3.2-1B-Instruct")
PRIVACY_KEYS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_gradnorm", "privleak",
                "extraction_strength", "exact_memorization")


def _shipped(model, name, file="TOFU_EVAL.json"):
    return json.loads((EVAL_LOGS_DIR / f"tofu_{model}_{name}" / file).read_text())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("retain", ["retain90", "retain95", "retain99"])
def test_open_unlearning_logs_reproduced_exactly(model, retain):
    log = _shipped(model, retain)
    summary = metrics.summary_from_eval_log(log, log)
    for key, value in summary.items():
        if key not in ("forget_quality", "privleak"):  # privleak: against itself here, against 0.5 in their log
            assert value == pytest.approx(log[key]["agg_value"], rel=1e-12, abs=1e-15), key
    assert summary["forget_quality"] == 1.0  # a retain model against itself
    assert summary["privleak"] == 0.0  # its min-k AUC against itself
    logged_summary = _shipped(model, retain, "TOFU_SUMMARY.json")
    assert summary["model_utility"] == pytest.approx(logged_summary["model_utility"], rel=1e-12)
    # open-unlearning evaluated its retain models without a retain log: privleak against the reference AUC 0.5. Every
    # privacy value of their summary, each recomputed from the per-item values, to the last bit (sklearn's AUC)
    alone = metrics.summary_from_eval_log(log)
    assert set(PRIVACY_KEYS) <= set(logged_summary)
    for key in PRIVACY_KEYS:
        assert alone[key] == logged_summary[key], key
        if key != "privleak":
            assert alone[key] == log[key]["agg_value"], key
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


@pytest.mark.parametrize("model", MODELS)
def test_full_model_privleak_against_the_matching_retain_log(model):
    # the full models' published summaries (no per-item file shipped): their privleak is min-k AUC against the
    # matching retain model's min-k AUC, which we recompute from that retain log's per-item scores
    for forget, retain in FORGET_TO_RETAIN.items():
        full = _shipped(model, f"full/evals_{forget}", "TOFU_SUMMARY.json")
        ref_auc = metrics.mia_auc_from_log(_shipped(model, retain), "mia_min_k")
        assert privleak(full["mia_min_k"], ref_auc) == full["privleak"], (forget, retain)


def test_privacy_keys_of_old_logs_and_bad_values():
    log = _shipped("Llama-3.2-1B-Instruct", "retain99")
    old = {k: v for k, v in log.items() if k not in PRIVACY_KEYS}
    summary = metrics.summary_from_eval_log(old, old)  # a log from before these metrics: left out, no error
    assert not set(PRIVACY_KEYS) & set(summary) and "forget_quality" in summary
    # a retain log without mia_min_k: privleak against 0.5, as open-unlearning
    assert metrics.summary_from_eval_log(log, old)["privleak"] == privleak(log["mia_min_k"]["auc"])
    bad = copy.deepcopy(log)
    bad["mia_min_k"]["holdout"]["value_by_index"]["3"]["score"] = float("nan")
    with pytest.raises(ValueError, match="'mia_min_k.holdout' question 3 has score=nan"):
        metrics.summary_from_eval_log(bad)
    with pytest.raises(ValueError, match="the retain log: 'mia_min_k.holdout' question 3 has score=nan"):
        metrics.summary_from_eval_log(log, bad)
    bad = copy.deepcopy(log)
    del bad["mia_zlib"]["forget"]
    with pytest.raises(ValueError, match="'mia_zlib' has no 'forget' scores"):
        metrics.summary_from_eval_log(bad)
    bad = copy.deepcopy(log)
    bad["extraction_strength"]["value_by_index"]["7"]["score"] = None
    with pytest.raises(ValueError, match="'extraction_strength' question 7 has score=None"):
        metrics.summary_from_eval_log(bad)
    # exact memorization: None is an item without answer tokens (left out of the mean), NaN is an error
    em = copy.deepcopy(log)
    em["exact_memorization"]["value_by_index"]["0"]["score"] = None
    rest = [v["score"] for k, v in log["exact_memorization"]["value_by_index"].items() if k != "0"]
    assert metrics.summary_from_eval_log(em)["exact_memorization"] == pytest.approx(sum(rest) / len(rest), rel=1e-12)
    em["exact_memorization"]["value_by_index"]["5"]["score"] = float("nan")
    with pytest.raises(ValueError, match="'exact_memorization' question 5 has score=nan"):
        metrics.summary_from_eval_log(em)
    bad = copy.deepcopy(log)
    del bad["mia_loss"]["forget"]["value_by_index"]["39"]
    with pytest.raises(ValueError, match="forget items of the eval log's metrics have different numbers"):
        metrics.summary_from_eval_log(bad)


def test_score_cli_on_shipped_logs():
    path = retain_eval_log("forget05")
    out = subprocess.run([sys.executable, "-m", "ceu_rl.tofu.score", str(path), "--retain", str(path)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    logged = json.loads(path.read_text())
    assert result["forget_quality"] == 1.0
    assert result["model_utility"] == pytest.approx(logged["model_utility"]["agg_value"], rel=1e-12)
    published = json.loads(path.with_name("TOFU_SUMMARY.json").read_text())
    for key in PRIVACY_KEYS:
        assert result[key] == (0.0 if key == "privleak" else published[key]), key  # privleak: vs itself
    from ceu_rl.tofu import score

    assert score.main([str(path)])["privleak"] == published["privleak"]  # no retain log: against 0.5
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
