"""experiments/dpo_compare over seeds: its pair scoring agrees with TRL's own first-step log-probs, its pair metrics
with a hand computation, and its aggregates with numpy over the per-seed values."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.dpo_compare import run as dpo_compare


def test_pair_metrics_by_hand():
    before = torch.tensor([[-10.0, -12.0], [-20.0, -15.0], [-5.0, -5.0]], dtype=torch.float64)
    after = torch.tensor([[-9.0, -14.0], [-22.0, -15.5], [-5.0, -4.0]], dtype=torch.float64)
    m = dpo_compare.pair_metrics(before, after, beta=0.5)
    # changes: chosen +1, -2, 0; rejected -2, -0.5, +1; margins 0.5 * (3, -1.5, -1)
    assert m["chosen_logp_change"] == pytest.approx(-1 / 3)
    assert m["rejected_logp_change"] == pytest.approx(-0.5)
    assert m["reward_margin"] == pytest.approx(0.5 * (3 - 1.5 - 1) / 3)
    assert m["reward_accuracy"] == pytest.approx(1 / 3)


def test_two_seeds_one_step(tmp_path, capsys):
    # 8 pairs, batch 8, one epoch: TRL's single step sees every pair, with the policy still the initial model
    result = dpo_compare.main(["--out", str(tmp_path), "--seeds", "0", "1", "--epochs", "1", "--num_pairs", "8"])
    out = capsys.readouterr().out
    assert "[dpo_compare 2/2] seed 1 done" in out and "'loss'" not in out  # no per-step dicts on the terminal
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in dpo_compare.LOSSES:
        for metric in dpo_compare.METRICS:
            values = [saved["per_seed"][str(s)][name][metric] for s in (0, 1)]
            stat = saved["summary"][name][metric]
            assert stat["per_seed"] == values
            assert stat["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
            assert stat["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)
    dataset = dpo_compare.dpo.tofu_preference_dataset(8)
    before = dpo_compare.completion_logps(str(tmp_path / "seed0" / "tiny" / "warm"), dataset)
    first = result["traces"][0]["DPO"][0]
    assert before[:, 0].mean().item() == pytest.approx(first["logps/chosen"], rel=1e-4)
    assert before[:, 1].mean().item() == pytest.approx(first["logps/rejected"], rel=1e-4)
    assert result["machine"]["torch_cpu_capability"]
