"""The DPO and GRPO recipes on their offline defaults, shortened: they run, log the CE-U metrics and write history."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

import dpo  # noqa: E402
import grpo  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from experiments.grpo_compare.tasks import make_dataset, positional_reward  # noqa: E402


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
