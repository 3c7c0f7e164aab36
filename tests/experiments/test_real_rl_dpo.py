"""experiments/real_rl/dpo: the on-policy pair builder, the TRL-style completion scoring (against a full-sequence
computation and TRL's own tokenization), the change metrics by hand, and the report's aggregates and per-seed claims
against numpy and direct comparisons. No vLLM: a tiny stand-in model and fake samples."""

import math
import os

import numpy as np
import pytest
import torch

from experiments.real_rl import dpo, dpo_report
from experiments.real_rl.tasks import make_dataset


def _msg(text):
    return [{"role": "user", "content": text}]


def test_pairs_from_samples_picks_first_correct_and_first_wrong_finished_reply():
    prompts = [_msg("What is 3 times 4?"), _msg("Largest of 10, 50, 20, 30?"), _msg("What is 2 times 2?"),
               _msg("What is 5 times 5?")]
    targets, tasks = ["12", "50", "4", "25"], ["mul", "max", "mul", "mul"]
    samples = [
        [("3 times 4 is 11.", False), ("3 times 4 is 12.", True), ("It is 13.", True), ("12", True)],  # pair
        [("50", True), ("The largest is 50.", True)],  # all correct: no pair
        [("2 times 2 is 4", False), ("5", True)],  # the only correct reply is unfinished: no pair
        [("25", True), ("26", True)],
    ]
    pairs, stats = dpo.pairs_from_samples(prompts, targets, tasks, samples)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("3 times 4 is 12.", "It is 13."), ("25", "26")]
    assert pairs[0]["sample_accuracy"] == pytest.approx(2 / 4)  # unfinished correct replies still count here
    assert stats == {"max": {"prompts": 1, "pairs": 0, "all_correct": 1, "all_wrong": 0},
                     "mul": {"prompts": 3, "pairs": 2, "all_correct": 0, "all_wrong": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl.tiny_models import save_tiny_model

    data = make_dataset(16, 0)
    texts = [p[0]["content"] for p in data["prompt"]] + [f"{a} times {b} is {a * b}." for a in range(2, 13)
                                                          for b in range(2, 13)]
    path = save_tiny_model(tmp_path_factory.mktemp("tiny"), texts, vocab_size=256, seed=0)
    torch.manual_seed(0)
    return path, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_completion_ids_match_trl_tokenization(tiny):
    _, _, tok = tiny
    prompt = _msg("What is 3 times 4?")
    p_ids, c_ids = dpo.completion_ids(tok, prompt, "3 times 4 is 12.")
    full = tok(tok.apply_chat_template(prompt + [{"role": "assistant", "content": "3 times 4 is 12."}],
                                       tokenize=False), add_special_tokens=False)["input_ids"]
    assert p_ids + c_ids == full
    assert tok.eos_token_id in c_ids  # the end of turn is scored and trained on
    assert tok.decode(c_ids).replace(" ", "").startswith("3times4is12.")


def test_completion_logps_equal_unbatched_full_sequence_sum(tiny):
    _, model, tok = tiny
    prompts = [_msg("What is 3 times 4?"), _msg("Which is the largest of these numbers: 11, 42, 17, 90?")]
    replies = ["3 times 4 is 12.", "90"]
    got = dpo.completion_logps(model, tok, prompts, replies, batch_size=2)  # padded batch
    for prompt, reply, value in zip(prompts, replies, got):
        p_ids, c_ids = dpo.completion_ids(tok, prompt, reply)
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        expected = sum(torch.log_softmax(logits[i - 1], -1)[ids[0, i]].item() for i in range(len(p_ids), ids.shape[1]))
        assert value == pytest.approx(expected, abs=1e-6)


def test_shared_prefix_stats_by_hand(tiny):
    _, _, tok = tiny
    prompt = _msg("What is 3 times 4?")
    pairs = [{"prompt": prompt, "chosen": "3 times 4 is 12.", "rejected": "3 times 4 is 13."},
             {"prompt": prompt, "chosen": "12", "rejected": "Hello"}]
    s = dpo.shared_prefix_stats(tok, pairs)
    shared, rej = [], []
    for p in pairs:
        a, b = dpo.completion_ids(tok, p["prompt"], p["chosen"])[1], dpo.completion_ids(tok, p["prompt"], p["rejected"])[1]
        shared.append(len(os.path.commonprefix([a, b])))
        rej.append(len(b))
    assert shared[0] >= 5 and s["mean_shared_prefix_tokens"] == pytest.approx(np.mean(shared))
    assert s["rejected_tokens_shared"] == pytest.approx(sum(shared) / sum(rej))
    assert s["pairs_sharing_first_token"] == pytest.approx(np.mean([k > 0 for k in shared]))


def test_change_metrics_by_hand():
    before = {"train_chosen": [-10.0, -20.0], "train_rejected": [-12.0, -15.0], "heldout_chosen": [-1.0],
              "heldout_rejected": [-2.0], "world_facts": [-3.0, -4.0], "retain90": [-30.0]}
    after = {"train_chosen": [-9.0, -22.0], "train_rejected": [-14.0, -15.5], "heldout_chosen": [-1.5],
             "heldout_rejected": [-1.0], "world_facts": [-3.5, -4.1], "retain90": [-29.0]}
    m = dpo.change_metrics(before, after, beta=0.5)
    assert m["train_chosen_change"] == pytest.approx(-0.5) and m["train_rejected_change"] == pytest.approx(-1.25)
    assert m["train_reward_margin"] == pytest.approx(0.5 * ((1 + 2) + (-2 + 0.5)) / 2)
    assert m["train_reward_accuracy"] == 0.5 and m["heldout_reward_accuracy"] == 0.0
    assert m["collateral_world_facts"] == pytest.approx(-0.3) and m["collateral_retain90"] == pytest.approx(1.0)


def _fake_rows(rng):
    rows = []
    for seed in (0, 1, 2):
        for m in dpo.METHOD_NAMES:
            row = {"method": m, "seed": seed, "pass@1": float(rng.uniform(0.1, 0.5)), "pass@1_mul": 0.3,
                   "pass@1_max": 0.2, "train_seconds": 1.0, "run_seconds": 2.0}
            for k in dpo_report.KEYS:
                row.setdefault(k, float(rng.normal()))
            rows.append(row)
    return rows


def test_report_aggregates_and_claims_against_direct_computation():
    rng = np.random.default_rng(0)
    rows = _fake_rows(rng)
    base = {"pass@1": 0.3}
    methods = list(dpo.METHOD_NAMES)
    cells = dpo_report.cells_by_seed(rows, base)
    table = {r["method"]: r for r in dpo_report.summarize(cells, methods)}
    for m in methods:
        v = [r["train_chosen_change"] for r in rows if r["method"] == m]
        assert table[m]["train_chosen_change"]["mean"] == pytest.approx(np.mean(v))
        assert table[m]["train_chosen_change"]["sd"] == pytest.approx(np.std(v, ddof=1))
        d = [r["pass@1"] - 0.3 for r in rows if r["method"] == m]
        assert table[m]["pass@1_delta"]["per_seed"] == pytest.approx(d)
    ans = dpo_report.answers(cells, methods)
    get = {(r["seed"], r["method"]): r for r in rows}
    for m in dpo.CEU:
        for i, s in enumerate((0, 1, 2)):
            mine = get[(s, m)]
            assert ans[m]["chosen_up"][i] == all(mine["train_chosen_change"] > get[(s, b)]["train_chosen_change"]
                                                 for b in dpo.BASELINES)
            assert ans[m]["rejected_least"][i] == all(
                mine["train_rejected_change"] > get[(s, b)]["train_rejected_change"] for b in dpo.BASELINES)
            assert ans[m]["least_collateral"][i] == (mine["collateral_world_facts"] == max(
                get[(s, o)]["collateral_world_facts"] for o in methods))
            assert ans[m]["pass@1_above_DPO"][i] == (mine["pass@1"] > get[(s, "DPO")]["pass@1"])
    pair = ans["CE-U-DPO full g=1 vs CE-U-DPO prefix g=1"]
    assert pair["prefix_rejected"] == [get[(s, "CE-U-DPO prefix g=1")]["train_rejected_change"] for s in (0, 1, 2)]
    assert pair["full_raises_rejected"] == [get[(s, "CE-U-DPO full g=1")]["train_rejected_change"] > 0
                                            for s in (0, 1, 2)]
    # a method clearly best on every claim is reported so in every seed
    for s in (0, 1, 2):
        cells[s]["CE-U-DPO prefix g=1"].update(train_chosen_change=100.0, train_rejected_change=100.0,
                                               collateral_world_facts=100.0)
    best = dpo_report.answers(cells, methods)["CE-U-DPO prefix g=1"]
    assert best["chosen_up"] == best["rejected_least"] == best["least_collateral"] == [True] * 3
    text = dpo_report.markdown(dpo_report.summarize(cells, methods), best and dpo_report.answers(cells, methods),
                               {"pass@1": 0.3, "pass@1_mul": 0.4, "pass@1_max": 0.2}, {}, {"command": "x"})
    assert "| CE-U-DPO prefix g=1 | [0, 1, 2] | yes/yes/yes |" in text and not math.isnan(table["DPO"]["pass@1"]["mean"])


def test_one_training_step_on_the_tiny_model(tiny, tmp_path):
    """The run's trainer set-up (TRL conversational pairs, one step) moves the chosen-vs-rejected margin up."""
    path, model, tok = tiny
    prompt = _msg("What is 3 times 4?")
    pairs = {"train": [{"prompt": prompt, "chosen": "3 times 4 is 12.", "rejected": "3 times 4 is 13."}] * 4}

    class Args:
        batch_size, max_steps, lr, beta = 4, 3, "1e-2", 0.1

    before = dpo.completion_logps(model, tok, [prompt] * 2, ["3 times 4 is 12.", "3 times 4 is 13."])
    trained, seconds, history, config = dpo.train_one(str(path), pairs, "CE-U-DPO prefix g=1", 0, Args, tmp_path / "r")
    after = dpo.completion_logps(trained, tok, [prompt] * 2, ["3 times 4 is 12.", "3 times 4 is 13."])
    assert len(history) == 3 and config["rejected_objective"] == "ceu_prefix"
    assert (after[0] - before[0]) - (after[1] - before[1]) > 0


def test_longest_shared_prefix_pairing():
    prompt = _msg("Which is the largest of these numbers: 11, 42, 17, 90?")
    replies = [("90", True), ("The largest is 42.", True), ("The largest is 90.", True), ("The largest is 17.", True)]
    shared = lambda p, a, b: len(os.path.commonprefix([a, b]))  # noqa: E731  (characters stand in for tokens)
    first, _ = dpo.pairs_from_samples([prompt], ["90"], ["max"], [replies])
    longest, _ = dpo.pairs_from_samples([prompt], ["90"], ["max"], [replies], shared_len=shared)
    assert (first[0]["chosen"], first[0]["rejected"]) == ("90", "The largest is 42.")
    assert (longest[0]["chosen"], longest[0]["rejected"]) == ("The largest is 90.", "The largest is 42.")


def test_long_prefix_subset_changes_by_hand():
    before = {"train_chosen": [-1.0, -2.0, -3.0], "train_rejected": [-4.0, -5.0, -6.0]}
    after = {"train_chosen": [0.0, -2.0, -1.0], "train_rejected": [-5.0, -3.0, -6.5]}
    out = dpo_report.subset_changes(before, after, {"train": [7, 0, 5]}, threshold=5)
    assert out["train_chosen_change_long"] == pytest.approx((1.0 + 2.0) / 2)
    assert out["train_rejected_change_long"] == pytest.approx((-1.0 - 0.5) / 2)
    assert out["train_chosen_change_short"] == pytest.approx(0.0)
    assert out["train_rejected_change_short"] == pytest.approx(2.0)
