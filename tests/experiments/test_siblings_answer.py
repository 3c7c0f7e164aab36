"""Issue 26's answer script: per seed at matched utility, from the --siblings run's own baselines; a committed study's
runs fill in only where the seed's full model is the same model."""

import json

from experiments.attacks.config import siblings_preset as attack_siblings
from experiments.mini_tofu.config import SIBLING_BASELINES, SIBLINGS, siblings_preset
from experiments.mini_tofu.siblings_answer import answer


def _point(prob, utility, fq=0.1):
    return {"forget_Q_A_Prob": prob, "model_utility": utility, "forget_quality": fq}


def _study(full_utility, runs):
    return {"per_seed": {"0": {"full": {"0": _point(0.9, full_utility, 1e-5)}, **runs}}}


def test_baselines_come_from_the_run_when_a_committed_full_model_differs(tmp_path):
    run = _study(1.0, {"wga_lr0.001": {"15": _point(0.3, 0.95), "30": _point(0.1, 0.5)},  # step 30: below 0.9x
                       "ce_u_retain_lr0.001": {"15": _point(0.2, 0.91)}})
    (tmp_path / "results.json").write_text(json.dumps(run))
    other = _study(0.99, {"npo_lr0.001": {"15": _point(0.01, 0.99)}})  # another machine's full model
    same = _study(1.0, {"ga_lr0.001": {"15": _point(0.5, 0.95)}, "wga_lr0.001": {"15": _point(0.0, 1.0)}})
    paths = []
    for name, study in (("other", other), ("same", same)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(study))
        paths.append(tmp_path / name / "results.json")
    ans = answer(tmp_path, committed=tuple(paths))
    assert ans["notes"] == ["seed 0: other not used (its full model differs from this run's: another machine or "
                            "settings)"]
    assert "npo" not in ans["points"] and ans["points"]["ga"]["0"]["forget_prob"] == 0.5  # filled from "same"
    assert ans["points"]["wga"]["0"]["forget_prob"] == 0.3  # the run's own wga, not the committed one
    pair = next(c for c in ans["comparisons"] if (c["variant"], c["baseline"]) == ("ce_u_retain", "wga"))
    assert pair["lower_forget_prob"] == [True] and pair["prob_every_seed"]
    assert next(c for c in ans["comparisons"] if c["variant"] == "wga" and c["baseline"] == "ga")[
        "lower_forget_prob"] == [True]


def test_siblings_presets_carry_their_baselines():
    cfg = siblings_preset()
    assert set(SIBLINGS) | set(SIBLING_BASELINES) <= set(cfg.objectives) and not cfg.eval_gradnorm
    assert cfg.lrs_of("grpo_retain") == (2e-4, 8e-4, 1.6e-3, 3.2e-3) and cfg.lrs_of("npo") == cfg.learning_rates
    attack = attack_siblings()
    assert list(attack.studies) == ["siblings"] and {"ce_u_retain", "rl_wga_retain"} <= set(attack.objectives)
