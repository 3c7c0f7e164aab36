"""The real-model study's RL pair (experiments/real_tofu/rl.py: GRPO + retain vs CE-U-GRPO + retain, vLLM colocate
rollouts in a child process per run) on a tiny stand-in base model: the runs land in the study's schema, the
runner keeps their RL settings, claim (a) and relearning's R equal a hand computation."""

import json
from pathlib import Path

import pytest

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split
from experiments.real_tofu import report
from experiments.real_tofu.config import RealTofuConfig
from experiments.real_tofu.rl import rl_config
from experiments.real_tofu.run import run

pytest.importorskip("vllm")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_tofu_rl")
    texts = []
    for split in ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        d = load_split(split)
        texts += [*d["question"], *d["answer"]]
    # head_dim 32: vLLM's CPU attention needs >= 32
    base = save_tiny_model(root / "base", texts[:2000], vocab_size=512, hidden_size=64, num_heads=2, num_layers=1)
    cfg = RealTofuConfig(out=str(root / "out"), base_model=str(base), seeds=(0,),
                         objectives=("grpo_retain", "ceu_full_retain"), learning_rates=(1e-3,),
                         objective_learning_rates={}, num_retain_authors=1, finetune_epochs=1, finetune_lr=3e-3,
                         eval_retain=4, eval_general=4, max_new_tokens=4, max_length=128,
                         attacked=("ceu_full_retain",), relearn_lr=1e-3, rl_prompts_per_step=20, rl_generations=2,
                         rl_max_new_tokens=4)
    return cfg, run(cfg, workers=0, command="test")


def test_rl_runs_in_the_study_schema(study):
    cfg, result = study
    runs = result["per_seed"]["0"]
    for name in ("grpo_retain_lr0.001", "ceu_full_retain_lr0.001"):
        assert list(runs[name]) == ["2"]  # 40 forget prompts / 20 a step = 2 steps, evaluated at the last
        job = json.loads((Path(cfg.out) / "jobs" / "seed0" / f"{name}.json").read_text())
        assert [t["step"] for t in job["trace"]] == [1, 2] and all("reward" in t for t in job["trace"])
        assert job["settings"]["rl_generations"] == 2  # an RL job's result depends on the rl_* settings
    assert runs["grpo_retain_lr0.001"]["2"] != runs["ceu_full_retain_lr0.001"]["2"]  # the negative objectives differ
    assert (Path(cfg.out) / "models" / "seed0" / "ceu_full_retain_lr0.001" / "config.json").is_file()
    args = rl_config(cfg, 0, "ceu_full_retain", 1e-3, Path(cfg.out) / "x")
    assert args.use_vllm and args.vllm_mode == "colocate" and args.negative_objective == "ceu_full"


def test_claim_a_and_relearning_by_hand(study):
    _, result = study
    runs = result["per_seed"]["0"]
    limit = 0.9 * runs["full"]["0"]["model_utility"]
    ok = {o: runs[f"{o}_lr0.001"]["2"] for o in ("ceu_full_retain", "grpo_retain")
          if runs[f"{o}_lr0.001"]["2"]["model_utility"] >= limit}
    expected = "ceu_full_retain" in ok and ("grpo_retain" not in ok or ok["ceu_full_retain"]["forget_Q_A_Prob"]
                                            < ok["grpo_retain"]["forget_Q_A_Prob"])
    assert result["answer"]["claims"]["a"]["per_seed"]["0"]["holds"] == expected
    assert (report.operating_point(runs, "grpo_retain") is None) == ("grpo_retain" not in ok)
    rel = result["relearning"]
    assert "grpo_retain_lr0.001" not in rel  # not attacked
    r = rel["ceu_full_retain_lr0.001"]["0"]
    assert r["before"] == runs["ceu_full_retain_lr0.001"]["2"]["forget_Q_A_Prob"]
    d, d_ret = r["after"] - r["before"], rel["retain"]["after"] - rel["retain"]["before"]
    assert r["R"] == pytest.approx(1.0 if d <= 0 else min(d_ret / d, 1.0))
