"""The DPO and GRPO recipes on their offline defaults, shortened: they run, log the CE-U metrics and write history."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

import dpo  # noqa: E402
import grpo  # noqa: E402


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


def test_reverse_reward_is_positional_partial_credit():
    assert grpo.reverse_reward([" d c b a", " d c a b", "x"], ["d c b a"] * 3) == [1.0, 0.5, 0.0]
