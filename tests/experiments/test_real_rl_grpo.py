"""The real-model RL study's tasks, reward and report logic (experiments/real_rl), on hand-made inputs."""

import json

import pytest

from experiments.real_rl import grpo_report
from experiments.real_rl.tasks import exact_answer_reward, last_integer, make_dataset


def test_reward_reads_the_last_integer_of_a_sentence_answer():
    texts = ["9 times 3 is 27.", "59 + 63 = 152", [{"role": "assistant", "content": "The largest is 75"}], "no", ""]
    assert [last_integer(t) for t in texts[:2]] == ["27", "152"]
    assert exact_answer_reward(texts, ["27", "122", "75", "1", "1"]) == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_targets_are_right_and_held_out_prompts_are_excluded():
    held = make_dataset(32, 10_000)
    train = make_dataset(64, 0, exclude=held)
    assert train["task"][:4] == ["mul", "max", "mul", "max"]
    assert not {p[0]["content"] for p in train["prompt"]} & {p[0]["content"] for p in held["prompt"]}
    for prompt, target, task in zip(train["prompt"], train["target"], train["task"]):
        numbers = [int(x) for x in prompt[0]["content"].replace("?", " ").replace(",", " ").split() if x.isdigit()]
        assert int(target) == (numbers[0] * numbers[1] if task == "mul" else max(numbers))
    assert make_dataset(8, 3)["target"] == make_dataset(8, 3)["target"]
    with pytest.raises(ValueError, match="tasks="):
        make_dataset(4, 0, tasks=("mul", "divide"))


def _row(method, seed, p1, p16, lr=2e-5):
    history = [{"step": i + 1, "reward": 0.1 * i, "entropy": 1.0 - 0.1 * i, "grad_norm": 1.0} for i in range(4)]
    return {"method": method, "seed": seed, "learning_rate": lr, "train_seconds": 10.0, "eval_seconds": 5.0,
            "pass_at_k_final": {"1": p1, "4": p1, "16": p16}, "pass_at_k_mul_final": {"1": p1},
            "pass_at_k_max_final": {"1": p1}, "history": history}


BASE = {"samples": 64, "pass_at_k": {"1": 0.3, "4": 0.6, "16": 0.9, "64": 0.97},
        "pass_at_k_mul": {"1": 0.4}, "pass_at_k_max": {"1": 0.2}}


def test_gain_and_breadth_answers_per_seed():
    rows = [_row("grpo", 0, 0.5, 0.90), _row("ceu_min", 0, 0.47, 0.95),  # gains 0.2 vs 0.17: 0.85x, above
            _row("grpo", 1, 0.4, 0.92), _row("ceu_min", 1, 0.37, 0.91),  # 0.1 vs 0.07: 0.7x, below
            _row("grpo", 2, 0.3, 0.9), _row("ceu_min", 2, 0.35, 0.95)]  # GRPO gained nothing
    ans = grpo_report.answers(rows, BASE)
    by_seed = {x["seed"]: x for x in ans["gain"]}
    assert by_seed[0]["ratio"] == pytest.approx(0.17 / 0.2) and by_seed[0]["reaches_0.8x"]
    assert by_seed[1]["ratio"] == pytest.approx(0.7) and not by_seed[1]["reaches_0.8x"]
    assert by_seed[2]["ratio"] is None and not by_seed[2]["reaches_0.8x"]
    assert ans["reaches_0.8x_every_seed"] == {"ceu_min @ lr 2e-05": False}
    assert [x["above"] for x in ans["breadth"]] == [True, False, True]
    assert "above_at_64" not in ans["breadth"][0] and ans["ceu_min_pass64_above_grpo_every_seed"] == {}


def test_breadth_at_64_where_both_runs_scored_64_samples():
    rows = [_row("grpo", 0, 0.5, 0.90), _row("ceu_min", 0, 0.47, 0.95), _row("grpo", 1, 0.4, 0.92),
            _row("ceu_min", 1, 0.37, 0.91)]
    for row, p64 in zip(rows, (0.97, 1.0, 1.0, 1.0)):
        row["pass_at_k_final"]["64"] = p64
    ans = grpo_report.answers(rows, BASE)
    assert [(x["ceu_min_pass@64"], x["grpo_pass@64"], x["above_at_64"]) for x in ans["breadth"]] == [
        (1.0, 0.97, True), (1.0, 1.0, False)]  # a tie at the ceiling is not "above"
    assert ans["ceu_min_pass64_above_grpo_every_seed"] == {"lr 2e-05": False}
    assert "lr 2e-05, pass@64: seed 0: 1.000 vs 0.970; seed 1: 1.000 vs 1.000" in grpo_report.markdown([], ans, BASE)


def test_report_writes_table_with_per_seed_deltas(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    paths = []
    for i, row in enumerate([_row("grpo", 0, 0.5, 0.9), _row("grpo", 1, 0.4, 0.8)]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(row))
    summary = grpo_report.write_report(tmp_path, paths, ["grpo"], "cmd")
    cell = summary["table"][0]
    assert cell["pass@1_delta"]["per_seed"] == pytest.approx([0.2, 0.1])
    assert cell["pass@1"]["mean"] == pytest.approx(0.45)
    assert cell["entropy_first"]["mean"] == pytest.approx(0.95) and cell["entropy_last"]["mean"] == pytest.approx(0.75)
    assert (tmp_path / "grpo.png").is_file() and "+0.200, +0.100" in (tmp_path / "summary.md").read_text()
