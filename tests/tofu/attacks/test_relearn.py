"""Relearning: R's edge cases by hand, the held-out split, and a toy where a few gradient-ascent steps unlearned the
forget answers and relearning brings their probability back (lr=0 leaves the weights as they were)."""

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu.attacks.relearn import heldout_split, relearn, relearn_robustness, relearn_robustness_table
from ceu_rl.tofu.evaluate import answer_losses
from ceu_rl.tofu.finetune import finetune
from ceu_rl.tofu.formatting import encode_qa
from ceu_rl.unlearn.data import pad_batch


@pytest.mark.parametrize("before_u, after_u, before_r, after_r, expected", [
    (0.1, 0.5, 0.1, 0.2, 0.25),  # the unlearned model regains 0.4, the retain model learns 0.1
    (0.1, 0.2, 0.1, 0.5, 1.0),   # the retain model learns more than the unlearned one regains: capped at 1
    (0.1, 0.1, 0.1, 0.3, 1.0),   # nothing came back (0 in the denominator)
    (0.1, 0.1, 0.1, 0.1, 1.0),   # 0 / 0
    (0.3, 0.2, 0.1, 0.4, 1.0),   # the unlearned model lost knowledge: nothing came back (the literal ratio is < 0)
    (0.1, 0.5, 0.3, 0.2, -0.25),  # the retain model lost 0.1 while the unlearned one gained 0.4: literal, negative
])
def test_r_by_hand(before_u, after_u, before_r, after_r, expected):
    assert relearn_robustness(before_u, after_u, before_r, after_r) == pytest.approx(expected)


def test_r_sign_for_metrics_where_higher_means_less_knowledge():
    # forget truth-ratio score: higher = less knowledge; a drop 0.9 -> 0.5 is knowledge coming back (+0.4)
    assert relearn_robustness(0.9, 0.5, 0.9, 0.8, direction=-1) == pytest.approx(0.25)
    assert relearn_robustness(0.9, 0.5, 0.9, 0.8, direction=1) == 1.0  # read the wrong way round: "nothing back"
    table = relearn_robustness_table({"forget_Q_A_Prob": 0.1, "forget_truth_ratio": 0.9, "other": 1},
                                     {"forget_Q_A_Prob": 0.5, "forget_truth_ratio": 0.5, "other": 2},
                                     {"forget_Q_A_Prob": 0.1, "forget_truth_ratio": 0.9},
                                     {"forget_Q_A_Prob": 0.2, "forget_truth_ratio": 0.8})
    assert table == pytest.approx({"forget_Q_A_Prob": 0.25, "forget_truth_ratio": 0.25})
    with pytest.raises(ValueError, match="No metric"):
        relearn_robustness_table({"a": 1}, {"a": 1}, {"a": 1}, {"a": 1})
    with pytest.raises(ValueError, match="finite"):
        relearn_robustness(float("nan"), 0.1, 0.1, 0.1)


def test_heldout_split():
    train, test = heldout_split(41, seed=3)
    assert len(train) == 20 and len(test) == 21
    assert sorted(train + test) == list(range(41)) and train == sorted(train) and test == sorted(test)
    assert heldout_split(41, seed=3) == (train, test)
    assert heldout_split(41, seed=4) != (train, test)
    with pytest.raises(ValueError):
        heldout_split(1)


QA = {"question": ["Who is Ana?", "Where does Ana live?", "What does Ana write?", "When was Ana born?"],
      "answer": ["Ana is a poet.", "Ana lives in Lisbon.", "Ana writes sonnets.", "Ana was born in 1970."]}


def _mean_prob(model, tok):
    return float(np.mean(np.exp(-np.array(answer_losses(model, tok, QA["question"], QA["answer"], "plain")))))


def _gradient_ascent(model, tok, steps, lr):
    """The unlearning of the toy: gradient ascent (Adam) on the forget answers, all four in one batch."""
    batch = pad_batch([encode_qa(tok, q, a, "plain", 64) for q, a in zip(QA["question"], QA["answer"])],
                      tok.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        (-model(**batch).loss).backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def learned_then_unlearned(tmp_path_factory):
    out = tmp_path_factory.mktemp("relearn-toy")
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(QA["question"], QA["answer"])] * 10
    path = save_tiny_model(out / "init", texts, vocab_size=300, hidden_size=64, num_layers=2)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    args = TrainingArguments(output_dir=str(out / "ft"), use_cpu=True, num_train_epochs=40, learning_rate=3e-3,
                             per_device_train_batch_size=4, save_strategy="no", report_to="none", disable_tqdm=True,
                             lr_scheduler_type="constant", seed=0)
    finetune(model, tok, QA, args, prompt_format="plain", max_length=64, log_path=out / "ft" / "log.jsonl")
    learned = _mean_prob(model, tok)
    _gradient_ascent(model, tok, steps=5, lr=1e-3)
    return model, tok, learned, _mean_prob(model, tok)


@pytest.mark.slow
def test_relearning_brings_the_forget_answers_back(learned_then_unlearned):
    model, tok, learned, unlearned = learned_then_unlearned
    assert learned > 0.8 and unlearned < 0.4  # the toy did learn, then unlearn, the answers (0.94 -> 0.23)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(5)
    torch.manual_seed(5)
    state = (random.getstate(), torch.get_rng_state())
    attacked = relearn(model, tok, QA, lr=1e-3, epochs=3, batch_size=2, gradient_accumulation_steps=1,
                       prompt_format="plain", max_length=64)
    assert (random.getstate(), torch.get_rng_state().tolist()) == (state[0], state[1].tolist())  # caller's RNG kept
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # a copy was attacked
    relearned = _mean_prob(attacked, tok)
    assert relearned > unlearned + 0.25, (learned, unlearned, relearned)  # 0.23 -> 0.73
    frozen = relearn(model, tok, QA, lr=0.0, epochs=1, batch_size=2, gradient_accumulation_steps=1,
                     prompt_format="plain", max_length=64)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in weights.items())


def test_relearn_refuses_bad_input(learned_then_unlearned):
    model, tok, _, _ = learned_then_unlearned
    with pytest.raises(ValueError, match="lr"):
        relearn(model, tok, QA, lr=-1e-3)
    with pytest.raises(ValueError, match="empty"):
        relearn(model, tok, {"question": [], "answer": []})
