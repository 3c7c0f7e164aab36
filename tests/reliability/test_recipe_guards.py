"""What a user of the recipes gets: a GPU config on a machine without a GPU (a flag list, or `--cpu`), an output folder
that already holds results (refused unless --overwrite_output_dir), and a quiet terminal (per-step dicts go to
log.jsonl, not stdout)."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

import dpo  # noqa: E402
import tofu_unlearn  # noqa: E402
from tofu_common import CPU_FLAGS, ModelArguments, parse_recipe_args  # noqa: E402
from trl import TrlParser  # noqa: E402

from ceu_rl import UnlearnConfig  # noqa: E402

GPU_CONFIG = str(ROOT / "recipes/configs/tofu/ce_u.yaml")  # open-unlearning's bf16 + paged_adamw_32bit


def _parser():
    return TrlParser((ModelArguments, tofu_unlearn.TofuArguments, UnlearnConfig))


def test_gpu_config_on_a_machine_without_gpu_names_the_flags(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the GPU config is valid")
    argv = ["--config", GPU_CONFIG, "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit,
                       match=r"error: this config is set up for GPUs.*--cpu.*--bf16 false --optim adamw_torch"):
        parse_recipe_args(_parser(), argv)
    # bf16 turned off by hand but the paged (bitsandbytes, CUDA-only) optimizer left: the same advice, naming optim
    with pytest.raises(SystemExit, match=r"--cpu.*optim=paged_adamw_32bit needs a CUDA GPU"):
        parse_recipe_args(_parser(), [*argv, "--bf16", "false", "--use_cpu", "true"])
    # the whole recipe stops with that one line, before loading any model
    monkeypatch.setattr(sys, "argv", ["tofu_unlearn.py", *argv])
    with pytest.raises(SystemExit, match="--cpu"):
        tofu_unlearn.main()


def test_cpu_switch_sets_the_cpu_flags(tmp_path):
    *_, cfg, overwrite = parse_recipe_args(_parser(), ["--config", GPU_CONFIG, "--output_dir", str(tmp_path), "--cpu"])
    assert CPU_FLAGS == ("--use_cpu", "true", "--bf16", "false", "--optim", "adamw_torch")
    assert cfg.use_cpu and not cfg.bf16 and cfg.optim == "adamw_torch" and not overwrite
    assert cfg.learning_rate == 1e-5 and cfg.objective == "ce_u"  # the rest of the config is kept


def test_output_folder_with_results_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "results.json").write_text("{}")
    argv = ["--config", GPU_CONFIG, "--output_dir", str(tmp_path), "--cpu"]
    monkeypatch.setattr(sys, "argv", ["tofu_unlearn.py", *argv])
    with pytest.raises(SystemExit,
                       match=r"already holds results of an earlier run \(results.json\).*--overwrite_output_dir"):
        tofu_unlearn.main()
    assert (tmp_path / "results.json").read_text() == "{}"  # untouched
    with pytest.raises(SystemExit, match="already holds results"):
        dpo.main(["--config", str(ROOT / "recipes/configs/dpo/ceu_tiny.yaml"), "--output_dir", str(tmp_path)])
    *_, overwrite = parse_recipe_args(_parser(), [*argv, "--overwrite_output_dir"])
    assert overwrite


def test_recipe_terminal_is_quiet_and_logs_go_to_jsonl(tmp_path, capfd):
    history = dpo.main(["--config", str(ROOT / "recipes/configs/dpo/ceu_tiny.yaml"), "--output_dir", str(tmp_path),
                        "--num_pairs", "8", "--tiny_sft_epochs", "1", "--max_steps", "3", "--disable_tqdm", "true"])
    out, err = capfd.readouterr()
    assert "'loss'" not in out + err and "{'" not in out  # no per-step dictionaries on the terminal
    assert f"model: {tmp_path}" in out  # a summary line saying where the results are
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if "loss" in r] == [h["loss"] for h in history] and len(history) == 3
