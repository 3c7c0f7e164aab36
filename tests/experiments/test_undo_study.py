"""The UNDO study (experiments/undo) on a cut-down mini-TOFU (one teacher, NPO at a given operating point): the
compute count against a hand computation (the distillation data is the retain model's own training data), R against
the records, alpha = 0 starts at KL 0 and alpha = 1 noises every weight, the per-seed answers, and resume."""

import json

import pytest

from ceu_rl.tofu.attacks import relearn_robustness
from experiments.undo.config import UndoStudyConfig, student_name
from experiments.undo.run import run as run_undo

# as tests/experiments/test_attack_study.py: a 1-layer hidden-32 Llama, finetuned 2 epochs, 3 unlearning steps
MODEL = dict(num_retain_authors=1, eval_questions=4, vocab_size=320, hidden_size=32, num_layers=1, finetune_epochs=2,
             unlearn_epochs=1, max_new_tokens=8, eval_points=2, eval_gradnorm=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("undo")
    # a committed study's per-seed results as experiments/attacks/points.py reads them: NPO's operating point is
    # (lr 1e-3, step 2), the only point above the utility bar
    summary = {"forget_quality": 0.1, "forget_Q_A_Prob": 0.5}
    points = out / "points.json"
    points.write_text(json.dumps({"per_seed": {"0": {"full": {"0": {**summary, "model_utility": 1.0}},
                                                     "npo_lr0.001": {"2": {**summary, "model_utility": 0.95},
                                                                     "3": {**summary, "model_utility": 0.5}}}}}))
    cfg = UndoStudyConfig(out=str(out), seeds=(0,), teachers=("npo",), alphas=(0.0, 1.0), epochs=(1,),
                          studies={"offline": str(points)}, model_overrides=MODEL, leak_after_relearn=4)
    result = run_undo(cfg, command="test")
    records = {p.stem: json.loads(p.read_text()) for p in (out / "jobs" / "seed0").glob("*.json")}
    return cfg, result, records


def test_every_model_is_measured_with_the_required_fields(study):
    cfg, result, _ = study
    table = result["per_seed"]["0"]
    names = {"full", "retain", "npo"} | {student_name(t, a, e) for t in cfg.teachers for a in cfg.alphas
                                         for e in cfg.epochs}
    assert set(table) == names and result["complete_seeds"] == [0]
    assert result["operating_points"] == {"seed0 npo": {"lr": 1e-3, "step": 2}}
    for row in table.values():
        assert {"model_utility", "forget_Q_A_Prob", "R", "compute_fraction", "heldout_R"} <= set(row)
    assert table["retain"]["R"] == 1.0 and table["retain"]["compute_fraction"] == 1.0
    assert table["full"]["compute_fraction"] == 0.0
    assert result["command"] == "test" and result["total_job_cpu_s"] > 0


def test_compute_fraction_equals_the_hand_count(study):
    """Distilling on the retain model's own data for an epoch costs 8 (teacher 2 + student 6) x its tokens, the
    retain model 6 x finetune_epochs (2) x the same tokens: 8 / 12, after the teacher's unlearning run."""
    _, result, records = study
    table = result["per_seed"]["0"]
    npo = records["npo"]["unlearn_flops"] / records["retain"]["retain_training_flops"]
    assert 0 < npo == table["npo"]["compute_fraction"]
    for alpha in (0.0, 1.0):
        assert table[student_name("npo", alpha, 1)]["compute_fraction"] == pytest.approx(npo + 8 / 12, rel=1e-12)


def test_r_and_the_noise_against_the_records(study):
    _, result, records = study
    retain = records["retain"]["attacks"]
    student = records["students_npo_a1"]["students"][student_name("npo", 1.0, 1)]["attacks"]
    expected = relearn_robustness(student["before"]["forget_Q_A_Prob"],
                                  student["relearn"]["0.001"]["all"]["forget_Q_A_Prob"],
                                  retain["before"]["forget_Q_A_Prob"], retain["relearn"]["0.001"]["all"]["forget_Q_A_Prob"])
    assert result["per_seed"]["0"][student_name("npo", 1.0, 1)]["R"] == expected
    assert records["students_npo_a1"]["noised_fraction"] == 1.0
    assert records["students_npo_a0"]["trace"][0]["loss"] == 0.0  # alpha = 0: the student is the teacher
    # leak@k after relearning: the held-out half sampled from the relearned model, 4 samples, ROUGE-L recall >= 0.5
    leak = student["relearn"]["0.001"]["heldout_leak"]["question"]
    assert leak["ks"][-1] == 4 and len(leak["per_question"]) == len(student["relearn"]["heldout_idx"])
    hits = sum(q["max_rougeL_recall"] >= 0.5 for q in leak["per_question"]) / len(leak["per_question"])
    assert result["per_seed"]["0"][student_name("npo", 1.0, 1)]["heldout_leak_after_relearn"] == pytest.approx(hits)
    assert records["students_npo_a1"]["trace"][0]["loss"] > 0


def test_answers_per_seed_and_resume(study):
    cfg, result, _ = study
    answers = result["answers"]
    bar = 0.9 * result["per_seed"]["0"]["full"]["model_utility"]
    for name in answers["robust_students"]["0"]:
        row = result["per_seed"]["0"][name]
        assert row["R"] >= 0.8 and row["model_utility"] >= bar and row["compute_fraction"] < 1
    again = run_undo(cfg, command="test", report_only=True)
    assert again["per_seed"] == result["per_seed"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="teachers: unknown"):
        UndoStudyConfig(teachers=("ga",))
    with pytest.raises(ValueError, match="alphas"):
        UndoStudyConfig(alphas=(1.5,))
    with pytest.raises(ValueError, match="leak_after_relearn"):
        UndoStudyConfig(leak_after_relearn=-1)
