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


def test_undo_students_of_a_saved_teacher(study):
    """experiments/real_tofu/undo.py on the study's saved teacher, at distillation lr 0: the alpha-0 student is the
    teacher's weights, so its measures equal the teacher's own final evaluation (the pipeline loads, noises and
    measures the right model); the alpha-1 student is a fresh initialisation whose KL to the teacher is > 0; R is
    OpenUnlearning's formula by hand. (With lr > 0 alpha 0 is not a fixed point: Adam scales the ~1e-9 gradient of
    float round-off to full-size steps.)"""
    from experiments.real_tofu import undo

    cfg, result = study
    out = Path(cfg.out)
    assert (out / "models" / "seed0" / "ce_u_retain_lr0.001" / "config.json").is_file()  # attacked runs are kept
    undo.main(["--out", cfg.out, "--seed", "0", "--teacher", "ce_u_retain_lr0.001", "--alphas", "0", "1",
               "--epochs", "1", "--general_authors", "1", "--distill_lr", "0"])
    res = json.loads((out / "undo" / "results.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert {"full", "retain", "ce_u_retain_lr0.001", "undo:ce_u_retain_lr0.001_a0",
            "undo:ce_u_retain_lr0.001_a1"} <= set(rows)
    teacher, same, fresh = rows["ce_u_retain_lr0.001"], rows["undo:ce_u_retain_lr0.001_a0"], rows["undo:ce_u_retain_lr0.001_a1"]
    assert teacher["forget_Q_A_Prob"] == pytest.approx(result["per_seed"]["0"]["ce_u_retain_lr0.001"]["2"]["forget_Q_A_Prob"])
    for key in ("forget_Q_A_Prob", "retain_Q_A_Prob", "model_utility"):
        assert same[key] == pytest.approx(teacher[key], rel=1e-4, abs=1e-7), key
    assert fresh["forget_Q_A_Prob"] != pytest.approx(teacher["forget_Q_A_Prob"], rel=1e-3)
    record = json.loads((out / "undo" / "seed0" / "ce_u_retain_lr0.001_a0.json").read_text())
    assert record["general_rows"] == 20 and record["distill_rows"] == 40  # 1 retain author + 1 general author
    assert all(abs(t["loss"]) < 1e-6 for t in record["trace"])  # identical weights: KL 0 at every step
    fresh_record = json.loads((out / "undo" / "seed0" / "ce_u_retain_lr0.001_a1.json").read_text())
    assert min(t["loss"] for t in fresh_record["trace"]) > 1e-3
    rel = result["relearning"]
    d_ret = rel["retain"]["after"] - rel["retain"]["before"]
    for r in (same, fresh):
        d = r["forget_prob_after_relearning"] - r["forget_Q_A_Prob"]
        assert r["R"] == pytest.approx(1.0 if d <= 0 else min(d_ret / d, 1.0))
        assert r["distill_compute_fraction"] > 0


def test_undo_attacks_a_teacher_the_study_did_not(study):
    """A teacher whose study run was not attacked (not the highest lr) is measured by undo.py itself, once, with the
    same evaluation and relearning attack: its measures equal the study's (same weights) and its R is by hand."""
    import os

    from experiments.real_tofu import undo

    cfg, result = study
    out = Path(cfg.out)
    job = json.loads((out / "jobs" / "seed0" / "ce_u_retain_lr0.001.json").read_text())
    job.pop("relearn")
    (out / "jobs" / "seed0" / "unattacked.json").write_text(json.dumps({**job, "name": "unattacked"}))
    os.symlink((out / "models" / "seed0" / "ce_u_retain_lr0.001").resolve(), out / "models" / "seed0" / "unattacked")
    try:
        undo.main(["--out", cfg.out, "--seed", "0", "--teacher", "unattacked", "--alphas"])
        rows = {r["name"]: r for r in json.loads((out / "undo" / "results.json").read_text())["rows"]}
        assert rows["unattacked"]["forget_Q_A_Prob"] == pytest.approx(rows["ce_u_retain_lr0.001"]["forget_Q_A_Prob"])
        rel = result["relearning"]
        d = rows["unattacked"]["forget_prob_after_relearning"] - rows["unattacked"]["forget_Q_A_Prob"]
        d_ret = rel["retain"]["after"] - rel["retain"]["before"]
        assert rows["unattacked"]["R"] == pytest.approx(1.0 if d <= 0 else min(d_ret / d, 1.0))
        assert (out / "undo" / "seed0" / "unattacked.json").is_file()
    finally:
        (out / "jobs" / "seed0" / "unattacked.json").unlink()
        (out / "models" / "seed0" / "unattacked").unlink()
        (out / "undo" / "seed0" / "unattacked.json").unlink(missing_ok=True)
