"""The real-model TOFU study's pipeline on a tiny stand-in base model: the full and retain finetunes run once and
every seed reports against them, the schema is mini-TOFU's with every metric, jobs are reused, and the claims'
verdicts equal a hand computation from the per-seed values."""

import json
from pathlib import Path

import pytest

from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split
from experiments.real_tofu import report
from experiments.real_tofu.config import RealTofuConfig
from experiments.real_tofu.run import run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_tofu")
    texts = []
    for split in ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        d = load_split(split)
        texts += [*d["question"], *d["answer"], *(p for ps in d["perturbed_answer"] for p in ps)]
    base = save_tiny_model(root / "base", texts[:3000], vocab_size=512, hidden_size=32, num_layers=1, seed=0)
    cfg = RealTofuConfig(out=str(root / "out"), base_model=str(base), seeds=(0, 1),
                         objectives=("grad_diff", "ce_u_retain", "idk_dpo", "ce_u_idk_dpo"), learning_rates=(1e-3,),
                         objective_learning_rates={},
                         num_retain_authors=1, finetune_epochs=1, finetune_lr=3e-3, unlearn_epochs=1, batch_size=20,
                         eval_retain=4, eval_general=4, max_new_tokens=4, max_length=256, attacked=("ce_u_retain",),
                         relearn_lr=1e-3)
    result = run(cfg, workers=0, command="test")
    return cfg, result


def test_schema_and_shared_finetunes(study):
    cfg, result = study
    per_seed = result["per_seed"]
    assert sorted(per_seed) == ["0", "1"]
    for seed in per_seed.values():
        assert {"base", "full", "retain", "grad_diff_lr0.001", "ce_u_idk_dpo_lr0.001"} <= set(seed)
        assert list(seed["grad_diff_lr0.001"]) == ["2"]  # 40 forget questions / batch 20 = 2 steps, evaluated last
        summary = seed["ce_u_retain_lr0.001"]["2"]
        for key in ("model_utility", "forget_Q_A_Prob", "ra_Q_A_ROUGE", "wf_Q_A_Prob_normalised", "privleak",
                    "mia_min_k", "extraction_strength", "forget_quality"):
            assert key in summary
    # the pretrained model is fixed: one full and one retain model, the same numbers in every seed
    assert per_seed["0"]["full"] == per_seed["1"]["full"] and per_seed["0"]["retain"] == per_seed["1"]["retain"]
    assert per_seed["0"]["full"] != per_seed["0"]["base"]
    # the seed reaches unlearning (data order)
    assert per_seed["0"]["grad_diff_lr0.001"] != per_seed["1"]["grad_diff_lr0.001"]
    jobs = sorted(p.relative_to(Path(cfg.out) / "jobs").as_posix() for p in (Path(cfg.out) / "jobs").rglob("*.json"))
    assert "seedshared/full.json" in jobs and not any(j.startswith("seed0/full") for j in jobs)
    assert (Path(cfg.out) / "answer.md").is_file()


def test_claims_equal_a_hand_computation(study):
    _, result = study
    for seed, runs in result["per_seed"].items():
        gd = runs["grad_diff_lr0.001"]["2"]
        ce = runs["ce_u_retain_lr0.001"]["2"]
        expected_b = ce["forget_Q_A_Prob"] <= gd["forget_Q_A_Prob"] and ce["model_utility"] > gd["model_utility"]
        assert result["answer"]["claims"]["b"]["per_seed"][seed]["holds"] == expected_b
        expected_c = runs["ce_u_idk_dpo_lr0.001"]["2"]["forget_Q_A_Prob"] < runs["idk_dpo_lr0.001"]["2"]["forget_Q_A_Prob"]
        assert result["answer"]["claims"]["c"]["per_seed"][seed]["holds"] == expected_c
        full_u = runs["full"]["0"]["model_utility"]
        op = report.operating_point(runs, "grad_diff")
        assert (op is None) == (gd["model_utility"] < 0.9 * full_u)


def test_relearning_r_by_hand(study):
    _, result = study
    rel = result["relearning"]
    assert sorted(rel["ce_u_retain_lr0.001"]) == ["0", "1"] and "grad_diff_lr0.001" not in rel
    d_ret = rel["retain"]["after"] - rel["retain"]["before"]
    for seed, r in rel["ce_u_retain_lr0.001"].items():
        assert r["before"] == result["per_seed"][seed]["ce_u_retain_lr0.001"]["2"]["forget_Q_A_Prob"]
        d = r["after"] - r["before"]
        assert r["R"] == pytest.approx(1.0 if d <= 0 else min(d_ret / d, 1.0))


def test_rerun_reuses_every_job(study, capsys):
    cfg, result = study
    again = run(cfg, workers=0, command="test")
    assert again["per_seed"] == json.loads(json.dumps(result["per_seed"]))
    assert "[real-tofu] seed" not in capsys.readouterr().out  # nothing ran again
    assert run(cfg, workers=0, command="test", report_only=True)["per_seed"] == again["per_seed"]


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="eval_retain must be >= 1"):
        RealTofuConfig(eval_retain=0)
