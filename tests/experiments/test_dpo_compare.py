"""experiments/dpo_compare: its pair scoring agrees with TRL's own first-step log-probs, its metrics with a hand
computation, its aggregates with numpy over the per-run values, and a second call resumes (runs nothing)."""

import json

import numpy as np
import pytest
import torch

from experiments.dpo_compare import data as dpo_data
from experiments.dpo_compare import report
from experiments.dpo_compare import run as dpo_compare
from experiments.dpo_compare.methods import METHODS, select


def test_pair_metrics_by_hand():
    before = torch.tensor([[-10.0, -12.0], [-20.0, -15.0], [-5.0, -5.0]], dtype=torch.float64)
    after = torch.tensor([[-9.0, -14.0], [-22.0, -15.5], [-5.0, -4.0]], dtype=torch.float64)
    m = dpo_compare.pair_metrics(before, after, beta=0.5, prefix="x_")
    # changes: chosen +1, -2, 0; rejected -2, -0.5, +1; margins 0.5 * (3, -1.5, -1)
    assert m["x_chosen_change"] == pytest.approx(-1 / 3)
    assert m["x_rejected_change"] == pytest.approx(-0.5)
    assert m["x_reward_margin"] == pytest.approx(0.5 * (3 - 1.5 - 1) / 3)
    assert m["x_reward_accuracy"] == pytest.approx(1 / 3)


def test_signs_and_method_selection():
    assert report.sign_in_every_seed([1.0, 0.1]) == "+"
    assert report.sign_in_every_seed([-1.0, -0.1]) == "-"
    assert report.sign_in_every_seed([-1.0, 0.0]) == "±"
    assert set(select(["DPO", "DPOP"])) == {"DPO", "DPOP"} and select(None) == METHODS
    with pytest.raises(ValueError, match="unknown"):
        select(["DPO", "KTO"])


def test_one_seed_two_methods_and_resume(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--seeds", "0", "1", "--lrs", "1e-3", "--methods", "DPO", "CE-U-DPO prefix g=4",
            "--epochs", "1", "--train_pairs", "8", "--held_out_pairs", "4", "--retain", "4", "--sft_epochs", "1"]
    result = dpo_compare.main(argv)
    out = capsys.readouterr().out
    assert "[dpo_compare 4/4]" in out and "'loss'" not in out  # one line per run, no per-step dicts
    assert result["complete"] and len(result["runs"]) == 4
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("DPO", "CE-U-DPO prefix g=4"):
        cell = saved["summary"][name]["1e-3"]
        for metric in dpo_compare.METRICS:
            values = [r[metric] for r in sorted(saved["runs"], key=lambda r: r["seed"]) if r["method"] == name]
            assert cell[metric]["per_seed"] == values
            assert cell[metric]["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
            assert cell[metric]["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)
    # the scoring agrees with TRL's own log-probs at its first step (policy = the SFT model, batch = all 8 pairs)
    run = next(r for r in saved["runs"] if r["method"] == "DPO" and r["seed"] == 0)
    first = json.loads((tmp_path / "runs/seed0/lr1e-3/DPO/log.jsonl").read_text().splitlines()[0])
    before = json.loads((tmp_path / "seed0/before.json").read_text())
    assert np.mean(np.array(before["train"])[:, 0]) == pytest.approx(first["logps/chosen"], rel=1e-4)
    assert np.mean(np.array(before["train"])[:, 1]) == pytest.approx(first["logps/rejected"], rel=1e-4)
    assert run["steps"] == 1 and saved["machine"]["torch_cpu_capability"]
    assert (tmp_path / "dpo_compare.png").stat().st_size > 0
    assert "| DPO | 1e-3 |" in (tmp_path / "results.md").read_text()
    # a second call finds every run on disk: nothing is retrained, the report is the same
    again = dpo_compare.main(argv)
    assert "done in" not in capsys.readouterr().out
    assert again["summary"] == result["summary"]


def test_partial_grid_is_labelled(tmp_path):
    result = report.write_report(tmp_path, [tmp_path / "runs/missing.json"], ["DPO"], ["1e-3"],
                                 {"command": "x", "machine": {}})
    assert not result["complete"] and result["missing_runs"] == ["runs/missing.json"]
    assert "Partial grid" in (tmp_path / "results.md").read_text()


def test_completion_logps_by_hand(tmp_path):
    """Summed log-prob of completion + EOS given the prompt, against a token-by-token loop over the model."""
    pairs = dpo_data.preference_pairs(0, 2)
    retain = dpo_data.retain_texts(2)
    path = dpo_data.build_model(tmp_path, pairs, pairs, retain, sft_epochs=1, seed=0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    got = dpo_data.completion_logps(model, tok, pairs["prompt"], pairs["chosen"])
    for i in range(2):
        prompt = tok(pairs["prompt"][i])["input_ids"]
        completion = tok(pairs["chosen"][i])["input_ids"] + [tok.eos_token_id]
        total = 0.0
        with torch.no_grad():
            for t, token in enumerate(completion):
                logits = model(input_ids=torch.tensor([prompt + completion[:t]])).logits[0, -1].double()
                total += torch.log_softmax(logits, -1)[token].item()
        assert got[i].item() == pytest.approx(total, rel=1e-5)


def test_shared_prefix_pairs():
    assert dpo_data._shared_prefix_rejected("a b c d", "w x y z") == "a b y z"
    assert dpo_data._shared_prefix_rejected("a b c", "w x y z") == "a y z"
    pairs = dpo_data.preference_pairs(0, 3, "shared_prefix")
    plain = dpo_data.preference_pairs(0, 3)
    assert pairs["chosen"] == plain["chosen"] and pairs["prompt"] == plain["prompt"]
    for chosen, rejected in zip(pairs["chosen"], pairs["rejected"]):
        half = chosen.split()[:len(chosen.split()) // 2]
        assert rejected.split()[:len(half)] == half and rejected != chosen
    with pytest.raises(ValueError, match="pair kind 'edit'"):
        dpo_data.preference_pairs(0, 3, "edit")

    class Tok:  # one id per character, EOS = 0
        eos_token_id = 0

        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    from datasets import Dataset
    toy = Dataset.from_dict({"chosen": ["abc", "xy"], "rejected": ["abd", "zy"]})
    # pair 1: "ab" shared of "abd"+EOS (4 tokens); pair 2: nothing of "zy"+EOS (3 tokens)
    assert dpo_data.shared_prefix_fraction(Tok(), toy) == {"rejected_tokens_shared": 2 / 7,
                                                           "pairs_sharing_first_token": 0.5}
