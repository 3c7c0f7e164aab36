"""The DPO and GRPO recipes on their offline defaults, shortened: they run, log the CE-U metrics and write history."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

import dpo  # noqa: E402
import grpo  # noqa: E402
import grpo_compare  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from grpo_tasks import make_dataset, positional_reward  # noqa: E402


def test_dpo_recipe_offline_default(tmp_path):
    history = dpo.main(["--config", str(ROOT / "recipes/configs/dpo/ceu_tiny.yaml"), "--output_dir", str(tmp_path),
                        "--num_pairs", "8", "--tiny_sft_epochs", "1", "--max_steps", "2"])
    assert len(history) == 2 and all("loss/ceu_term" in h and "rewards/margins" in h for h in history)
    assert json.loads((tmp_path / "log_history.json").read_text()) == history


def test_grpo_recipe_offline_default(tmp_path):
    history = grpo.main(["--config", str(ROOT / "recipes/configs/grpo/reverse_tiny.yaml"), "--output_dir",
                         str(tmp_path), "--num_prompts", "16", "--sft_examples", "16", "--sft_epochs", "1",
                         "--max_steps", "2"])
    assert len(history) == 2 and all("ceu/p_negative_mean" in h and "reward" in h for h in history)
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()][:2] == [1, 2]


def test_grpo_configs_parse_with_their_task():
    from tofu_common import ModelArguments
    from trl import TrlParser

    from ceu_rl import CEUGRPOConfig

    for name, task in (("reverse_tiny", "reverse"), ("sort_tiny", "sort")):
        _, task_args, _ = TrlParser((ModelArguments, grpo.TaskArguments, CEUGRPOConfig)).parse_args_and_config(
            ["--config", str(ROOT / f"recipes/configs/grpo/{name}.yaml")])
        assert task_args.task == task


def test_reverse_reward_is_positional_partial_credit():
    assert positional_reward([" d c b a", " d c a b", "x"], ["d c b a"] * 3) == [1.0, 0.5, 0.0]


def test_sort_task_targets_and_reward():
    data = make_dataset("sort", 20, 4, seed=3)
    for prompt, target in zip(data["prompt"], data["target"]):
        letters = prompt.removeprefix("Sort: ").removesuffix(" =").split()
        assert len(letters) == 4 and target.split() == ["(", *sorted(letters), ")"]
    # 6 positions: brackets count, a shifted answer earns only what lines up
    assert positional_reward([" ( a b c d )", " ( a b d c )", " a b c d", ""], ["( a b c d )"] * 4) == \
        [1.0, 4 / 6, 0.0, 0.0]
    with pytest.raises(ValueError, match="task='nope'"):
        make_dataset("nope", 1, 4, 0)


def _shared_by_brute_force(prompts, completions, advantages):
    """Independent reference: set of (prompt, prefix) pairs of positive completions, looked up per negative token."""
    positive = {(p, tuple(c[: t + 1])) for p, c, a in zip(prompts, completions, advantages) if a > 0
                for t in range(len(c))}
    return [[a < 0 and (p, tuple(c[: t + 1])) in positive for t in range(len(c))]
            for p, c, a in zip(prompts, completions, advantages)]


def test_shared_negative_tokens_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    batch, length = 24, 6
    prompt_ids = torch.randint(3, 5, (batch, 3), generator=gen)  # few distinct prompts: groups with repeats
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[::5, 0] = 0  # left padding changes nothing (masked ids count as the same)
    completion_ids = torch.randint(5, 7, (batch, length), generator=gen)  # 2 tokens: many shared prefixes
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    completion_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    advantages = torch.randn(batch, generator=gen)
    advantages[::7] = 0.0
    got = grpo_compare.shared_negative_tokens(prompt_ids, prompt_mask, completion_ids, completion_mask, advantages)
    prompts = [tuple(i for i, m in zip(p.tolist(), mk.tolist()) if m) for p, mk in zip(prompt_ids, prompt_mask)]
    completions = [c[:n].tolist() for c, n in zip(completion_ids, lengths)]
    want = _shared_by_brute_force(prompts, completions, advantages.tolist())
    assert [row[:n].tolist() for row, n in zip(got, lengths)] == want
    assert not got[completion_mask == 0].any() and 0 < got.sum() < (advantages < 0).sum() * length


def test_grpo_compare_runner_trivial_grid_and_resume(tmp_path):
    objectives = grpo_compare.available_objectives()[:2]  # "pg" and the first CE-U variant the config declares
    argv = ["--out", str(tmp_path), "--tasks", "sort", "--learning_rates", "5e-4", "--objectives", *objectives,
            "--seeds", "0", "--max_steps", "2", "--num_prompts", "8"]
    summary = grpo_compare.main(argv)
    assert objectives[0] == "pg" and summary["runs"] == 2 and summary["machine"]["torch"] == torch.__version__
    assert [(c["objective"], c["seeds"]) for c in summary["table"]] == [(o, [0]) for o in objectives]
    for cell in summary["table"]:
        final = cell["reward_final"]
        assert final["per_seed"] == [final["mean"]] and 0.0 <= final["mean"] <= 1.0
    (decision,) = summary["decisions"]
    assert decision["objective"] == objectives[1] and isinstance(decision["default_ok_every_seed"], bool)
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    shared_p = [h["shared/p_mean"] for r in runs for h in r["history"] if h["shared/p_mean"] is not None]
    assert len(runs) == 2 and all(len(r["history"]) == 2 for r in runs)
    assert shared_p and all(0 < p < 1 for p in shared_p)
    assert (tmp_path / "grpo_compare.png").stat().st_size > 0 and "| sort |" in (tmp_path / "summary.md").read_text()
    run_file = next((tmp_path / "runs").rglob("seed0.json"))
    before = run_file.stat().st_mtime_ns
    assert grpo_compare.main(argv)["runs"] == 2 and run_file.stat().st_mtime_ns == before  # resumed: nothing rerun
