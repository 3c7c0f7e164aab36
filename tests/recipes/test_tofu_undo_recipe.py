"""recipes/tofu_undo.py end to end on a tiny model: the YAML parses, the student is written and evaluated."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split

ROOT = Path(__file__).resolve().parents[2]


def test_undo_recipe_writes_the_student_and_results(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    full = load_split("full")
    full.select(range(3992, 4000)).to_json(data / "forget01.json")
    full.select(range(8)).to_json(data / "retain99.json")
    for name in ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed",
                 "holdout01"):
        load_split(name).select(range(4)).to_json(data / f"{name}.json")
    model = save_tiny_model(tmp_path / "model", list(full.select(range(8))["answer"]), vocab_size=300)
    config = yaml.safe_load((ROOT / "recipes/configs/tofu/undo.yaml").read_text())
    assert config["noise_alpha"] == 0.5 and config["general_splits"] == ["real_authors_perturbed",
                                                                         "world_facts_perturbed"]
    out = tmp_path / "undo"
    cmd = [sys.executable, str(ROOT / "recipes/tofu_undo.py"), "--config", str(ROOT / "recipes/configs/tofu/undo.yaml"),
           "--model_name_or_path", str(model), "--data_source", str(data), "--forget_split", "forget01",
           "--retain_log", "", "--cpu", "--gradient_checkpointing", "false", "--max_length", "128", "--max_steps",
           "2", "--warmup_steps", "0", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
           "--prompt_format", "plain", "--eval_questions", "2", "--eval_max_new_tokens", "4", "--noise_alpha", "0.8",
           "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["noise_alpha"] == 0.8 and record["objective"] == "undo(alpha=0.8)"
    assert len(record["train_log"]) == 2 and record["distilled_tokens"] > 0
    assert "model_utility" in record["after"] and (out / "model" / "config.json").is_file()
