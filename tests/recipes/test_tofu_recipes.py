"""The TOFU recipes end to end on a tiny model: config parsing, CLI overrides, DDP (2 processes on CPU, gloo) equal
to one process at the same global batch, and the accelerate configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tofu_unlearn.py"


@pytest.fixture(scope="module")
def tiny_tofu(tmp_path_factory):
    """A tiny model and a TOFU-format data folder with 8 forget and 8 retain questions."""
    root = tmp_path_factory.mktemp("tofu-recipe")
    data = root / "data"
    data.mkdir()
    full = load_split("full")
    for name, rows in (("forget01", full.select(range(3992, 4000))), ("retain99", full.select(range(8)))):
        rows.to_json(data / f"{name}.json")
    # holdout01: the non-members of open-unlearning's privacy metrics, which the evaluation computes
    for name in ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed",
                 "holdout01"):
        load_split(name).select(range(4)).to_json(data / f"{name}.json")
    (data / "idontknow.jsonl").write_text("I don't know.\nNo idea.\n")
    texts = list(full.select(range(3992, 4000))["answer"]) + list(full.select(range(8))["answer"])
    model = save_tiny_model(root / "model", texts, vocab_size=300)
    return model, data


def _run(cmd, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(env_extra or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _common(model, data, out, objective, batch):
    return ["--config", str(ROOT / "recipes/configs/tofu" / f"{objective}.yaml"), "--model_name_or_path", str(model),
            "--data_source", str(data), "--forget_split", "forget01", "--retain_log", "", "--use_cpu", "true",
            "--bf16", "false", "--optim", "adamw_torch", "--gradient_checkpointing", "false", "--max_length", "128",
            "--num_train_epochs", "1", "--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps",
            "1", "--learning_rate", "1e-3", "--warmup_steps", "0", "--prompt_format", "plain", "--eval_questions",
            "2", "--eval_max_new_tokens", "4", "--output_dir", str(out), "--seed", "0", "--data_seed", "0"]


def test_unlearn_recipe_writes_results(tiny_tofu, tmp_path):
    model, data = tiny_tofu
    _run([sys.executable, str(RECIPE), *_common(model, data, tmp_path, "ce_u", 4)])
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["objective"] == "ce_u" and record["forget_split"] == "forget01"
    for key in ("model_utility", "forget_truth_ratio", "forget_Q_A_ROUGE"):
        assert key in record["before"] and key in record["after"]
    assert len(record["train_log"]) == 2  # 8 forget items / batch 4
    assert (tmp_path / "results.md").read_text().count("| ce_u |") == 1
    assert (tmp_path / "eval_after" / "TOFU_EVAL.json").is_file()
    # the saved model carries its training format and evaluation length (what the CLIs' defaults read)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["ceu_rl_prompt_format"] == "plain" and config["ceu_rl_max_new_tokens"] == 4


def test_ddp_two_processes_equal_one_process(tiny_tofu, tmp_path):
    """SimNPO is a per-sequence mean, so DDP's gradient average over equal local batches is the global mean."""
    model, data = tiny_tofu
    extra = ["--alpha", "0", "--beta", "0.1", "--evaluate_before", "false"]
    _run([sys.executable, str(RECIPE), *_common(model, data, tmp_path / "one", "simnpo", 4), *extra])
    # `accelerate launch --cpu` starts one process; torchrun's launcher with the recipe's use_cpu=true gives 2 gloo
    # processes (accelerate's MULTI_CPU)
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
          "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541", str(RECIPE),
          *_common(model, data, tmp_path / "two", "simnpo", 2), *extra])
    one = json.loads((tmp_path / "one" / "results.json").read_text())["train_log"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["train_log"]
    assert len(one) == len(two) == 2
    assert json.loads((tmp_path / "two" / "world_size.json").read_text()) == 2
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    w1 = load_file(tmp_path / "one" / "model" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model" / "model.safetensors")
    w0 = load_file(Path(model) / "model.safetensors")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-6)


def test_configs_parse_and_accelerate_configs_load():
    from trl import TrlParser

    from ceu_rl import UnlearnConfig

    sys.path.insert(0, str(ROOT / "recipes"))
    from tofu_common import ModelArguments  # noqa: E402
    from tofu_unlearn import TofuArguments  # noqa: E402

    for cfg in sorted((ROOT / "recipes/configs/tofu").glob("*.yaml")):
        if cfg.stem == "finetune" or cfg.stem.startswith("grpo"):  # tofu_finetune.py, tofu_grpo.py: own tests
            continue
        if cfg.stem.startswith("undo"):  # tofu_undo.py's own dataclasses
            from tofu_undo import UndoArguments  # noqa: E402

            from ceu_rl.unlearn import UndoConfig

            _, undo_args, undo_cfg = TrlParser((ModelArguments, UndoArguments, UndoConfig)).parse_args_and_config(
                ["--config", str(cfg), "--use_cpu", "true", "--bf16", "false", "--noise_alpha", "0.8"])
            assert undo_cfg.noise_alpha == 0.8 and undo_args.general_splits  # CLI overrides the YAML
            continue
        parser = TrlParser((ModelArguments, TofuArguments, UnlearnConfig))
        margs, targs, uargs = parser.parse_args_and_config(
            ["--config", str(cfg), "--use_cpu", "true", "--bf16", "false", "--optim", "adamw_torch",
             "--learning_rate", "3e-5"])
        assert uargs.objective == cfg.stem and uargs.learning_rate == 3e-5  # CLI overrides the YAML
        assert margs.model_name_or_path.startswith("open-unlearning/")
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for cfg in sorted((ROOT / "recipes/accelerate").glob("*.yaml")):
        loaded = load_config_from_file(str(cfg))
        kinds[cfg.stem] = str(loaded.distributed_type)
        assert yaml.safe_load(cfg.read_text())["num_processes"] == 2
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP",
                     "zero3": "DistributedType.DEEPSPEED"}


def test_tofu_grpo_recipe(tiny_tofu, tmp_path):
    model, data = tiny_tofu
    recipe = ROOT / "recipes" / "tofu_grpo.py"
    for objective in ("pg", "ceu_full"):
        out = tmp_path / objective
        _run([sys.executable, str(recipe), "--config", str(ROOT / "recipes/configs/tofu/grpo.yaml"),
              "--model_name_or_path", str(model), "--data_source", str(data), "--forget_split", "forget01",
              "--retain_log", "", "--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false",
              "--prompt_format", "plain", "--max_length", "128", "--max_steps", "2", "--per_device_train_batch_size",
              "4", "--num_generations", "4", "--max_completion_length", "8", "--learning_rate", "1e-3",
              "--eval_questions", "2", "--eval_max_new_tokens", "4", "--negative_objective", objective,
              "--output_dir", str(out), *(["--retain_coef", "1.0", "--retain_batch_size", "2"] * (objective == "pg"))])
        record = json.loads((out / "results.json").read_text())
        assert record["objective"] == ("grpo_retain" if objective == "pg" else "ce_u_grpo")
        assert all(("retain/nll" in h) == (objective == "pg") for h in record["train_log"])
        assert len(record["train_log"]) == 2 and all("reward" in h for h in record["train_log"])
        assert "model_utility" in record["before"] and "model_utility" in record["after"]


def test_tofu_grpo_mini_tofu_config_parses_with_its_anchor_options():
    from trl import TrlParser

    from ceu_rl import CEUGRPOConfig

    sys.path.insert(0, str(ROOT / "recipes"))
    from tofu_common import ModelArguments  # noqa: E402
    from tofu_grpo import AnchorArguments, PromptArguments  # noqa: E402
    from tofu_unlearn import TofuArguments  # noqa: E402

    parser = TrlParser((ModelArguments, TofuArguments, PromptArguments, AnchorArguments, CEUGRPOConfig))
    config = ["--config", str(ROOT / "recipes/configs/tofu/grpo_mini_tofu.yaml")]
    _, tofu, prompt, anchor, cfg = parser.parse_args_and_config(config)
    # the study's best form (docs/mini_tofu_rl): ceu_full + retain NLL at lr 8e-4, no KL
    assert (cfg.negative_objective, cfg.beta, cfg.learning_rate) == ("ceu_full", 0.0, 8e-4)
    assert (anchor.retain_coef, anchor.retain_questions, tofu.forget_split) == (1.0, 120, "forget01")
    _, _, _, anchor, cfg = parser.parse_args_and_config([*config, "--retain_coef", "0", "--beta", "0.1"])
    assert (anchor.retain_coef, cfg.beta, cfg.use_bias_correction_kl) == (0.0, 0.1, False)  # the KL form
    assert cfg.per_device_train_batch_size // cfg.num_generations == 2 and cfg.max_completion_length == 48
