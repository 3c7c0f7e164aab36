"""leak@k and expected max against brute force over every k-subset; ROUGE counts by hand; sampling on a tiny model."""

import itertools
import random
from fractions import Fraction

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu.attacks.leak import (default_ks, expected_max_at_k, leak_at_k, leak_report, sample_answers,
                                      score_samples)


def _brute_leak(n, c, k):
    """The fraction of k-subsets of n samples (c of them leaking) that hold at least one leaking sample: exact."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def _brute_max(scores, k):
    subsets = list(itertools.combinations(scores, k))
    return sum(Fraction(max(s)) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_leak_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert leak_at_k(n, c, k) == pytest.approx(float(_brute_leak(n, c, k)), abs=1e-12), (n, c, k)


def test_leak_at_k_large_n_matches_exact_binomials():
    from math import comb

    for c, k in [(0, 1), (1, 1), (3, 128), (70, 128), (72, 128), (199, 5)]:
        exact = 1 - Fraction(comb(200 - c, k), comb(200, k))
        assert leak_at_k(200, c, k) == pytest.approx(float(exact), abs=1e-12)


@pytest.mark.parametrize("n", range(1, 8))
def test_expected_max_equals_enumeration(n):
    rng = random.Random(n)
    scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)]  # ties included
    for k in range(1, n + 1):
        assert expected_max_at_k(scores, k) == pytest.approx(float(_brute_max(scores, k)), abs=1e-12)
    assert expected_max_at_k(scores, n) == max(scores)
    assert expected_max_at_k(scores, 1) == pytest.approx(sum(scores) / n)


@pytest.mark.parametrize("bad", [(5, 0, 6), (5, 0, 0), (5, 6, 1), (5, -1, 1)])
def test_bad_counts_raise(bad):
    with pytest.raises(ValueError):
        leak_at_k(*bad)


def test_default_ks_cut_at_n():
    assert default_ks(200) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert default_ks(5) == (1, 2, 4)
    with pytest.raises(ValueError, match="k=8"):
        expected_max_at_k([0.1] * 5, 8)


def test_score_samples_counts_by_hand():
    # answer: 4 words; ROUGE-L recall = LCS / 4: 1.0, 0.5 ("the cat" in order), 0.25, 0.0
    answer = "the cat sat quietly"
    samples = [["the cat sat quietly", "the cat ran", "dogs sat", "nothing here"]]
    report = score_samples(["Q?"], [answer], samples, ks=(1, 2, 4), thresholds=(0.3, 0.5, 0.7))
    item = report["per_question"][0]
    assert item["counts"] == {"0.3": 2, "0.5": 2, "0.7": 1}
    assert item["max_rougeL_recall"] == 1.0 and item["mean_rougeL_recall"] == pytest.approx(1.75 / 4)
    # leak@k by hand: c=1 of n=4 -> k/4; c=2 -> 1 - C(2,k)/C(4,k)
    assert report["leak_at_k"]["0.7"] == pytest.approx([1 / 4, 2 / 4, 1.0])
    assert report["leak_at_k"]["0.5"] == pytest.approx([2 / 4, 1 - 1 / 6, 1.0])
    # E[max] over k: sorted 0, .25, .5, 1 -> k=1 mean; k=2 (0*0 + .25*1 + .5*2 + 1*3)/6; k=4 max
    assert report["expected_max_rougeL_recall"] == pytest.approx([1.75 / 4, 4.25 / 6, 1.0])


def test_leak_event_hook():
    event = lambda q, a, s: "Paris" in s  # noqa: E731 - a stand-in for an NLI model or a judge
    report = score_samples(["Capital?"], ["Paris"], [["Paris!", "Rome", "maybe Paris", "Lyon"]], ks=(1, 4),
                           leak_event=event)
    assert report["per_question"][0]["event_count"] == 2
    assert report["event_leak_at_k"] == pytest.approx([0.5, 1.0])


def test_score_samples_refuses_ragged_samples():
    with pytest.raises(ValueError, match="same number of samples"):
        score_samples(["a", "b"], ["x", "y"], [["x"], ["y", "y"]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = ["Question: Who is Ana?\nAnswer: Ana is a poet from Lisbon."] * 20
    path = save_tiny_model(tmp_path_factory.mktemp("leak-tiny"), texts, vocab_size=300, hidden_size=64)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_sampling_reproducible_and_sized(tiny, monkeypatch):
    model, tok = tiny
    qs = ["Who is Ana?", "Where is Lisbon?"]
    new_tokens, generate = [], model.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        new_tokens.append((out.shape[0], out.shape[1] - kwargs["input_ids"].shape[1], kwargs["do_sample"]))
        return out

    monkeypatch.setattr(model, "generate", spy)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = sample_answers(model, tok, qs, n=5, max_new_tokens=6, prompt_format="plain", batch_size=4, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert [rows for rows, _, _ in new_tokens] == [4, 4, 2]  # 2 x 5 rows, 4 per call
    assert all(width <= 6 and sampled for _, width, sampled in new_tokens)
    b = sample_answers(model, tok, qs, n=5, max_new_tokens=6, prompt_format="plain", batch_size=4, seed=7)
    c = sample_answers(model, tok, qs, n=5, max_new_tokens=6, prompt_format="plain", batch_size=4, seed=8)
    assert a == b and a != c
    assert [len(x) for x in a] == [5, 5]
    assert len({s for x in a for s in x}) > 1  # sampled, not greedy


def test_leak_report_on_questions_and_paraphrases(tiny):
    model, tok = tiny
    report = leak_report(model, tok, ["Who is Ana?"], ["Ana is a poet from Lisbon."], n=4, ks=(1, 2),
                         paraphrased_questions=["Tell me who Ana is."], max_new_tokens=5, prompt_format="plain")
    assert set(report) == {"settings", "question", "paraphrased_question"}
    assert report["settings"]["temperature"] == 1.0 and report["settings"]["top_k"] == 0
    assert report["settings"]["max_new_tokens"] == 5
    assert report["paraphrased_question"]["per_question"][0]["question"] == "Tell me who Ana is."
    with pytest.raises(ValueError, match="Unknown sampling option"):
        leak_report(model, tok, ["q"], ["a"], n=2, temprature=0.5)
