"""Mini-TOFU runner: same seed -> identical numbers (two seeds, run twice), different seeds -> different numbers, and
the reported aggregates equal a hand computation (numpy) from the per-seed values."""

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.mini_tofu import MiniTofuConfig, run
from experiments.mini_tofu.config import OBJECTIVES, RL_OBJECTIVES, main_preset, rl_objective
from experiments.mini_tofu.run import config_from_args, parse

# cut down: 1-layer hidden-32 Llama, 1 retain author, 4 questions per utility set, 2 finetune epochs, 3 unlearning
# steps evaluated at steps 2 and 3 (the forget set stays forget01's 40 questions)
TINY = dict(seeds=(0, 1), objectives=("ga", "ce_u_retain"), learning_rates=(1e-3, 3e-3), num_retain_authors=1,
            eval_questions=4, vocab_size=320, hidden_size=32, num_layers=1, finetune_epochs=2, unlearn_epochs=1,
            max_new_tokens=8, eval_points=2)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    results = []
    for attempt in ("a", "b"):
        seeds = TINY["seeds"] if attempt == "a" else (0,)  # determinism needs one seed run twice
        cfg = MiniTofuConfig(out=str(tmp_path_factory.mktemp(f"mini_tofu_{attempt}")), **{**TINY, "seeds": seeds})
        run(cfg, workers=0, command="test")
        results.append((cfg, json.loads((Path(cfg.out) / "results.json").read_text())))
    return results


def test_same_seed_same_numbers_and_seeds_differ(two_runs):
    (_, a), (_, b) = two_runs
    assert a["per_seed"]["0"] == b["per_seed"]["0"]  # every metric at every evaluated step, bit for bit
    assert list(b["per_seed"]) == ["0"]
    full0, full1 = a["per_seed"]["0"]["full"]["0"], a["per_seed"]["1"]["full"]["0"]
    assert full0["forget_truth_ratio"] != full1["forget_truth_ratio"]  # the seed reaches the whole pipeline
    ga0 = a["per_seed"]["0"]["ga_lr0.001"]
    assert sorted(ga0) == ["2", "3"] and ga0["2"] != ga0["3"]  # evaluated during unlearning, and it moved


def test_aggregates_equal_a_hand_computation(two_runs):
    (cfg, a), _ = two_runs
    per_seed = a["per_seed"]
    for name, row in a["rows"].items():
        for metric in ("forget_quality", "model_utility", "forget_Q_A_Prob", "retain_Q_A_ROUGE"):
            values = [per_seed[str(s)][name][max(per_seed[str(s)][name], key=int)][metric] for s in cfg.seeds]
            assert row[metric]["per_seed"] == values
            assert row[metric]["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
            assert row[metric]["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)
    # best operating point by hand: the highest forget quality whose utility is >= 0.9x the seed's full model's
    for objective in cfg.objectives:
        picked = []
        for s in map(str, cfg.seeds):
            full = per_seed[s]["full"]["0"]
            points = [full] + [p for lr in cfg.learning_rates for p in per_seed[s][f"{objective}_lr{lr:g}"].values()]
            picked.append(max(p["forget_quality"] for p in points
                              if p["model_utility"] >= 0.9 * full["model_utility"]))
        best = a["best_operating_point"][objective]["forget_quality"]
        assert best["per_seed"] == picked
        assert best["mean"] == pytest.approx(np.mean(picked), rel=1e-12, abs=1e-15)
    out = Path(cfg.out)
    traj = json.loads((out / "trajectories.json").read_text())["trajectories"]["ce_u_retain_lr0.003"]
    step2 = [per_seed[str(s)]["ce_u_retain_lr0.003"]["2"]["forget_quality"] for s in cfg.seeds]
    point = next(p for p in traj["points"] if p["step"] == 2)
    assert point["log10_forget_quality"]["mean"] == pytest.approx(np.mean(np.log10(step2)), rel=1e-12)
    assert (out / "trajectories.png").stat().st_size > 10_000


def test_resume_reuses_finished_jobs(two_runs, capsys):
    cfg, before = two_runs[0]
    after = run(cfg, workers=0, command="test")
    assert "0 jobs to run (12 done already)" in capsys.readouterr().out
    assert json.loads(json.dumps(after["per_seed"])) == before["per_seed"]


def test_evaluating_during_unlearning_does_not_change_training(two_runs, tmp_path):
    # the main job evaluates only the last step, --full also halfway: the last step must be the same model
    cfg, a = two_runs[0]
    one = run(MiniTofuConfig(out=str(tmp_path), **{**TINY, "seeds": (0,), "objectives": ("ga",),
                                                   "learning_rates": (1e-3,), "eval_points": 1}), workers=0)
    assert list(one["per_seed"]["0"]["ga_lr0.001"]) == [3]
    assert one["per_seed"]["0"]["ga_lr0.001"][3] == a["per_seed"]["0"]["ga_lr0.001"]["3"]


def test_presets_and_cli():
    main = main_preset()
    # the offline objectives but SimNPO and KL (moved to --full for the real-model stage, issue 30), + GRPO and
    # CE-U-GRPO, both with the retain anchor; the cheap attacks on the RL pair, the retain floor and the full ceiling
    assert main.seeds == (0, 1, 2) and main.objectives == ("ga", "grad_diff", "npo", "ce_u", "ce_u_retain", "idk_dpo",
                                                            "ce_u_idk_dpo", "grpo_retain", "ceu_full_retain")
    assert main.attacks == ("full", "retain", "grpo_retain", "ceu_full_retain")
    assert main.learning_rates == (2e-4,) and main.eval_points == main.rl_eval_points == 1 and not main.eval_gradnorm
    assert set(config_from_args(parse(["--full"])).objectives) == set(OBJECTIVES)  # what moved is in --full
    rl = config_from_args(parse(["--full", "--rl"]))
    assert len(rl.seeds) == 5 and rl.out.endswith("mini_tofu_rl_full") and all(rl_objective(o) for o in rl.objectives)
    assert set(rl.objectives) == set(RL_OBJECTIVES) and len(rl.objectives) == 12 and rl.rl_eval_points == 2
    assert all(rl.lrs_of(o)[:3] == (5e-5, 2e-4, 8e-4) for o in rl.objectives)  # the offline --full grid, and more:
    assert rl.lrs_of("grpo_retain") == (5e-5, 2e-4, 8e-4, 1.6e-3, 3.2e-3) and len(rl.lrs_of("grpo")) == 3
    chosen = config_from_args(parse(["--full", "--rl", "--learning_rates", "2e-4"]))  # the user's grid, exactly
    assert chosen.lrs_of("grpo_retain") == chosen.lrs_of("ceu_full") == (2e-4,) and len(chosen.seeds) == 5
    full = config_from_args(parse(["--full"]))
    assert len(full.seeds) >= 5 and len(full.learning_rates) >= 3
    assert max(full.learning_rates) / min(full.learning_rates) >= 10 and 2e-4 in full.learning_rates
    assert config_from_args(parse(["--seeds", "3", "4", "--workers", "1"])).seeds == (3, 4)
    with pytest.raises(ValueError, match="objectives: unknown"):
        MiniTofuConfig(objectives=("gradient_ascent",))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        MiniTofuConfig(seeds=(1, 1))
