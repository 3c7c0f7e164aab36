"""The attack study (experiments/attacks): operating points, a run rebuilt at its point equals the study's run at
that step, the measures against hand computations from the job records, and the per-seed verdicts."""

import json
import shutil
from pathlib import Path

import pytest

from experiments.attacks import report
from experiments.attacks.config import AttackStudyConfig, model_config
from experiments.attacks.points import operating_point
from experiments.attacks.run import run as run_attacks
from experiments.mini_tofu import MiniTofuConfig
from experiments.mini_tofu import run as run_mini_tofu

# cut down as tests/experiments/test_mini_tofu.py: a 1-layer hidden-32 Llama, 3 unlearning steps evaluated at 2 and 3
MODEL = dict(num_retain_authors=1, eval_questions=4, vocab_size=320, hidden_size=32, num_layers=1, finetune_epochs=2,
             unlearn_epochs=1, max_new_tokens=8, eval_points=2)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study_out, out = tmp_path_factory.mktemp("mini_tofu"), tmp_path_factory.mktemp("attacks")
    mini = run_mini_tofu(MiniTofuConfig(out=str(study_out), seeds=(0,), objectives=("ga",), learning_rates=(1e-3,),
                                        attacks=("retain", "ga"), **MODEL), workers=0, command="test")
    shutil.copytree(study_out / "models", out / "models")  # the study's finetuned models: not finetuned again
    cfg = AttackStudyConfig(out=str(out), seeds=(0,), objectives=("ga", "ga+sam", "ga+wa"), leak_n=4, leak_max_new_tokens=8,
                            leak_batch_size=64, relearn_lrs=(1e-3,), quant_bits=(4,), quant_method="fake",
                            leak_after_relearn=(1e-3,),
                            studies={"offline": str(study_out / "results.json")}, model_overrides=MODEL)
    result = run_attacks(cfg, workers=0, command="test")
    records = {p.stem: json.loads(p.read_text()) for p in (out / "attack_jobs" / "seed0").glob("*.json")
               if p.stem in ("full", "retain", "ga", "ga+sam", "ga+wa")}
    return cfg, mini, result, records, study_out


def _summary(**kw):
    base = {"forget_quality": 0.1, "model_utility": 0.8, "forget_Q_A_Prob": 0.5}
    return {**base, **kw}


def test_operating_point_is_the_lowest_forget_prob_above_the_utility_bar():
    runs = {"full": {"0": _summary(model_utility=1.0, forget_Q_A_Prob=0.9)},
            "npo_lr0.0002": {"15": _summary(forget_Q_A_Prob=0.4, model_utility=0.95),
                             "30": _summary(forget_Q_A_Prob=0.1, model_utility=0.85)},  # below 0.9 x 1.0
            "npo_lr0.0008": {"15": _summary(forget_Q_A_Prob=0.3, model_utility=0.9),
                             "30": _summary(forget_Q_A_Prob=0.3, model_utility=0.99)},  # tie: the earlier step
            "npo_x_lr0.001": {"15": _summary(forget_Q_A_Prob=0.0, model_utility=1.0)}}  # another objective
    point = operating_point(runs, "npo")
    assert (point["lr"], point["step"]) == (8e-4, 15)
    assert operating_point({"full": runs["full"], "ga_lr1": {"3": _summary(model_utility=0.2)}}, "ga") is None


def test_rebuilt_run_equals_the_study_run_at_its_step(study):
    cfg, mini, result, records, _ = study
    point = result["operating_points"]["seed0 ga"]
    assert point["lr"] == 1e-3 and point["step"] in (2, 3)
    rebuilt = report.summary_from_eval_log(records["ga"]["eval_log"], records["retain"]["eval_log"])
    committed = mini["per_seed"]["0"]["ga_lr0.001"][point["step"]]
    for key, value in committed.items():  # every reported metric, bit for bit
        assert rebuilt[key] == value, key
    assert "privleak" in rebuilt and "mia_min_k" in rebuilt  # open-unlearning's privacy metrics beside them


def test_measures_equal_hand_computations_from_the_records(study):
    _, _, result, records, _ = study
    ga, retain = records["ga"]["attacks"], records["retain"]["attacks"]
    got = result["per_seed"]["0"]["ga"]
    before, after = ga["before"]["forget_Q_A_Prob"], ga["relearn"]["0.001"]["all"]["forget_Q_A_Prob"]
    r_before, r_after = retain["before"]["forget_Q_A_Prob"], retain["relearn"]["0.001"]["all"]["forget_Q_A_Prob"]
    # the attacks ran on a copy that trains: relearning raised the forget answers' p (a copy of a trainer-patched
    # model would run the original's modules and change nothing), and 4-bit rounding moved it
    assert after > before and ga["quantize"]["4bit"]["forget_Q_A_Prob"] != before
    expected_r = 1.0 if after <= before else min((r_after - r_before) / (after - before), 1.0)
    assert got["relearn 0.001: R (prob)"] == pytest.approx(expected_r, abs=1e-12)
    assert got["relearn 0.001: forget prob"] == after and got["4bit: forget prob"] == ga["quantize"]["4bit"][
        "forget_Q_A_Prob"]
    leak = ga["leak"]["question"]
    # leak@1 = the mean fraction of leaking samples; leak@n = the fraction of questions with any leaking sample
    counts = [q["counts"]["0.5"] for q in leak["per_question"]]
    assert got["leak@1"] == pytest.approx(sum(counts) / (4 * len(counts)), abs=1e-12)
    assert got["leak@4"] == pytest.approx(sum(c > 0 for c in counts) / len(counts), abs=1e-12)
    assert len(ga["relearn"]["heldout_idx"]) == 20 and set(ga["quantize"]["4bit"]["quantization"])
    # leak@k again after relearning, on the 20 held-out questions: leak@n = the share with any leaking sample
    after = ga["relearn"]["0.001"]["heldout_leak"]["question"]["per_question"]
    assert len(after) == 20
    assert got["relearn 0.001: held-out leak@4"] == pytest.approx(
        sum(q["counts"]["0.5"] > 0 for q in after) / 20, abs=1e-12)


def test_claims_mark_every_seed():
    table = {0: {"a": {"m": 0.1}, "b": {"m": 0.2}}, 1: {"a": {"m": 0.3}, "b": {"m": 0.3}},
             2: {"a": {"m": 0.5}, "b": {"m": 0.4}}}
    original = report.CLAIMS
    try:
        report.CLAIMS = (("a", "b"),)
        verdict = report.claims(table, ["m"])["a vs b"]
    finally:
        report.CLAIMS = original
    assert verdict["m"] == {"per_seed": "Y=n", "every_seed": False} and verdict["seeds"] == [0, 1, 2]


def test_resume_runs_nothing_and_files_are_written(study, capsys):
    cfg, _, result, _, _ = study
    again = run_attacks(cfg, workers=0, command="test")
    assert "0 jobs to run" in capsys.readouterr().out and again["per_seed"] == result["per_seed"]
    for name in ("results.json", "results.md", "attacks.png", "leak_at_k.png"):
        assert (Path(cfg.out) / name).is_file()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="objectives: unknown"):
        AttackStudyConfig(objectives=("gradient_ascent",))
    with pytest.raises(ValueError, match="leak_n"):
        AttackStudyConfig(leak_n=0)
    with pytest.raises(ValueError, match="leak_after_relearn"):
        AttackStudyConfig(relearn_lrs=(1e-3,), leak_after_relearn=(3e-3,))
    with pytest.raises(ValueError, match="offline-only variant"):
        AttackStudyConfig(objectives=("grpo_retain+adv",))  # the RL trainer would ignore adv_relearn_*: refused
    assert AttackStudyConfig(objectives=("npo+adv", "rl_wga_retain+sam03", "rmu")).objectives[1] == "rl_wga_retain+sam03"
    assert model_config(AttackStudyConfig(), "npo+adv").objective_overrides["npo"] == {
        "adv_relearn_steps": 1, "adv_relearn_lr": 0.015}


def test_mini_tofu_attacks_its_final_models(study):
    # the main job's cheap form: the attacked models' final step gets leak@16 and the held-out relearning
    _, mini, _, _, study_out = study
    assert set(mini["attacks"]) == {"retain", "ga_lr0.001"}
    ga = mini["attacks"]["ga_lr0.001"]
    assert 0 <= ga["leak@1"]["mean"] <= ga["leak@16"]["mean"] <= 1 and "relearn 0.001: held-out prob" in ga
    assert not any(k.startswith("4bit") or k.endswith("R (prob)") and "held-out" not in k for k in ga)
    assert "Attacks on the final models" in (study_out / "results.md").read_text()
    assert (study_out / "attacks.png").is_file()


def test_sam_variant_trains_at_the_plain_point_with_sam(study):
    # "ga+sam": GA at GA's operating point (lr, step), with sam_rho 0.1: another model than plain GA's
    _, _, result, records, _ = study
    assert result["operating_points"]["seed0 ga+sam"] == result["operating_points"]["seed0 ga"]
    plain, sam = records["ga"], records["ga+sam"]
    assert sam["objective"] == "ga" and (sam["lr"], sam["step"]) == (plain["lr"], plain["step"])
    assert sam["attacks"]["before"]["forget_Q_A_Prob"] != plain["attacks"]["before"]["forget_Q_A_Prob"]
    assert model_config(AttackStudyConfig(), "ga+sam").objective_overrides["ga"] == {"sam_rho": 0.1}
    assert "ga" not in model_config(AttackStudyConfig(), "ga").objective_overrides


def test_merge_prior_fills_only_what_this_run_lacks(tmp_path):
    prior = {"command": "earlier", "machine": "m", "config": {"objectives": ["a", "b"]},
             "per_seed": {"0": {"a": {"m": 9.0}, "b": {"m": 2.0}}, "1": {"a": {"m": 3.0}}},
             "leak_curves": {"1": {"a": {"question": {"ks": [1, 2], "leak_at_k": [0.1, 0.2]}}}}}
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(prior))
    table, curves = {0: {"a": {"m": 1.0}}}, {}
    taken = report.merge_prior(table, curves, str(path))
    assert table == {0: {"a": {"m": 1.0}, "b": {"m": 2.0}}, 1: {"a": {"m": 3.0}}}  # this run's seed-0 "a" stays
    assert taken["models"] == {"0": ["b"], "1": ["a"]} and taken["command"] == "earlier"
    assert curves == {"1": {"a": prior["leak_curves"]["1"]["a"]}}


def test_a_study_grows_by_seeds_with_prior(study, tmp_path):
    # a later run's report over its own seed and the seeds of an earlier results.json (here seed 0 renamed 5)
    cfg, _, result, _, _ = study
    shutil.copytree(Path(cfg.out) / "attack_jobs", tmp_path / "attack_jobs")
    earlier = {**result, "per_seed": {"5": result["per_seed"]["0"]}, "leak_curves": {"5": result["leak_curves"]["0"]}}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    from dataclasses import replace

    merged = run_attacks(replace(cfg, out=str(tmp_path), prior=str(tmp_path / "earlier.json")), workers=0,
                         command="test", report_only=True)
    assert merged["rows"]["ga"]["seeds"] == [0, 5] and merged["merged_from"]["models"]["5"]
    assert merged["rows"]["ga"]["forget prob"]["per_seed"] == [result["per_seed"]["0"]["ga"]["forget prob"]] * 2
    assert "seed 5: " in (tmp_path / "results.md").read_text() and (tmp_path / "leak_at_k.png").is_file()


def test_the_first_study_that_has_an_objective_gives_its_point(tmp_path):
    from experiments.attacks.points import operating_points

    def study(name, prob):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"per_seed": {"0": {"full": {"0": _summary(model_utility=1.0)},
                                                       "npo_lr0.001": {"15": _summary(forget_Q_A_Prob=prob,
                                                                                      model_utility=0.95)}}}}))
        return str(path)

    points = operating_points(("npo", "npo+sam"), (0,), {"a": study("a", 0.4), "b": study("b", 0.1)})
    assert points[(0, "npo")]["summary"]["forget_Q_A_Prob"] == 0.4 == points[(0, "npo+sam")]["summary"][
        "forget_Q_A_Prob"]


def test_weight_averaging_window_ends_at_the_operating_point(study):
    # "+wa" averages the iterates from round(0.8 x step) to the point's step: at step 3 two iterates (2, 3), another
    # model than plain GA; at step 2 one snapshot, the last iterate (plain GA's model)
    _, _, result, records, _ = study
    plain, wa = records["ga"], records["ga+wa"]
    assert (wa["lr"], wa["step"]) == (plain["lr"], plain["step"])
    same = wa["attacks"]["before"]["forget_Q_A_Prob"] == plain["attacks"]["before"]["forget_Q_A_Prob"]
    assert same == (plain["step"] == 2)
    with pytest.raises(ValueError, match="offline-only variant"):
        AttackStudyConfig(objectives=("grpo_retain+wa",))


def test_cli_leak_with_defaults_equals_the_main_job_on_its_model(study, tmp_path):
    # issue 30: the saved mini-TOFU models record their plain format and generation length, so the CLI pointed at one
    # with no --prompt_format / --max_new_tokens measures what the main job measured (its n, batch size and seed)
    from ceu_rl.tofu.attacks.__main__ import main as attacks_cli
    from experiments.attacks.config import main_job_preset

    _, _, _, _, study_out = study
    preset = main_job_preset()
    job = json.loads((study_out / "jobs" / "seed0" / "retain.json").read_text())["attacks"]["leak"]
    assert job["settings"]["prompt_format"] == "plain" and job["settings"]["max_new_tokens"] == MODEL["max_new_tokens"]
    attacks_cli(["leak", "--model", str(study_out / "models" / "seed0" / "retain"), "--forget_split", "forget01",
                 "--n", str(preset.leak_n), "--batch_size", str(preset.leak_batch_size), "--no_paraphrased",
                 "--out", str(tmp_path)])
    cli = json.loads((tmp_path / "LEAK.json").read_text())["model"]
    assert {k: cli["settings"][k] for k in ("prompt_format", "max_new_tokens")} == {
        "prompt_format": "plain", "max_new_tokens": MODEL["max_new_tokens"]}
    for item in cli["question"]["per_question"]:  # the main job's record keeps no texts
        item.pop("question"), item.pop("answer")
    assert cli["question"] == job["question"]
