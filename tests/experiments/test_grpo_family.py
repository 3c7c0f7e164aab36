"""experiments/grpo_compare family study: the unbiased pass@k against brute force and scipy, the binary reward, the
new task, and a trivial resumable grid."""

import itertools
import json
from fractions import Fraction

import pytest
import torch
from scipy.special import comb

from experiments.grpo_compare import family
from experiments.grpo_compare.passk import pass_at_k
from experiments.grpo_compare.tasks import all_correct_reward, make_dataset


@pytest.mark.parametrize("n, c, k", [(n, c, k) for n in (1, 4, 7) for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_brute_force(n, c, k):
    """Every k-subset of n samples (c correct) enumerated: the share with at least one correct."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    want = Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))
    assert pass_at_k(n, c, k) == pytest.approx(float(want), abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(64, 1, 64), (64, 1, 16), (64, 3, 4), (200, 5, 64), (1000, 2, 100),
                                     (64, 0, 16), (5000, 7, 1000)])
def test_pass_at_k_scipy(n, c, k):
    want = 1.0 - comb(n - c, k, exact=True) / comb(n, k, exact=True)  # exact integers; no overflow in the ratio
    assert pass_at_k(n, c, k) == pytest.approx(float(want), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 2, 0), (4, 2, 5), (4, -1, 1)])
def test_pass_at_k_bad_input(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_all_correct_reward_and_shift_task():
    data = make_dataset("shift", 3, 5, seed=0)
    for prompt, target in zip(data["prompt"], data["target"]):
        letters = prompt.split(":")[1].split("=")[0].split()
        assert target.split() == [chr((ord(x) - ord("a") + 1) % 6 + ord("a")) for x in letters]
    assert all_correct_reward([" b c", " b c d", " b x", " b"], ["b c"] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_family_runner_trivial_grid_and_resume(tmp_path):
    argv = ["--out", str(tmp_path), "--tasks", "sort", "--learning_rates", "5e-4", "--methods", "grpo", "nsr",
            "--seeds", "0", "--max_steps", "4", "--sft_epochs", "1", "--sft_examples", "16"]
    summary = family.main(argv)
    assert summary["runs"] == 2 and summary["machine"]["torch"] == torch.__version__
    assert [(c["method"], c["seeds"]) for c in summary["table"]] == [("grpo", [0]), ("nsr", [0])]
    for cell in summary["table"]:
        values = [cell[f"pass@{k}"]["mean"] for k in (1, 4, 16, 64)]
        assert values == sorted(values) and 0.0 <= values[0] and values[-1] <= 1.0  # pass@k grows with k
    runs = [json.loads(line) for line in (tmp_path / "family_runs.jsonl").read_text().splitlines()]
    assert all(r["steps"] == 4 and len(r["correct_counts_final"]) == family.EVAL_PROMPTS for r in runs)
    assert (tmp_path / "grpo_family.png").stat().st_size > 0
    assert "| sort |" in (tmp_path / "family_summary.md").read_text()
    run_file = next((tmp_path / "family_runs").rglob("seed0.json"))
    before = run_file.stat().st_mtime_ns
    assert family.main(argv)["runs"] == 2 and run_file.stat().st_mtime_ns == before  # resumed: nothing rerun
