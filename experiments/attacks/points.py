"""The operating points that the attack study re-judges, read from the committed studies' per-seed results.

Per seed and objective: among the evaluated points (learning rate, step) whose model utility is >= 0.9x that seed's
full model's, the one with the lowest forget prob (teacher-forced p of the forget answers): the point where each
objective's forgetting claim was strongest, as in docs/mini_tofu_rl/answer.md. Ties: the earlier step, then the
smaller learning rate (the less-trained model).
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import STUDIES, base_objective

UTILITY_FRACTION = 0.9


def _lr_of(name: str) -> float:
    return float(name.rsplit("_lr", 1)[1])


def operating_point(per_seed_runs: dict, objective: str) -> dict | None:
    """{"lr", "step", "summary"} of `objective` in one seed's {name: {step: summary}} (None: not in that study).
    The full model (step 0) is no candidate: the study asks what the unlearned model keeps."""
    full = per_seed_runs["full"]["0"]
    limit = UTILITY_FRACTION * full["model_utility"]
    candidates = [(s["forget_Q_A_Prob"], int(step), _lr_of(name), s)
                  for name, steps in per_seed_runs.items() if name.rsplit("_lr", 1)[0] == objective
                  for step, s in steps.items() if s["model_utility"] >= limit]
    if not candidates:
        return None
    prob, step, lr, summary = min(candidates, key=lambda c: c[:3])
    return {"lr": lr, "step": step, "summary": summary}


def operating_points(objectives, seeds, studies: dict = STUDIES) -> dict:
    """{(seed, objective): point} for every objective found in a committed study (in `studies` order: the first that
    has it); an objective whose every point is below the utility bar in a seed gets no point there (the report says
    so)."""
    out, requested = {}, set(objectives)
    variants = [o for o in objectives if base_objective(o) != o]  # at their plain form's operating point
    objectives = list(dict.fromkeys(base_objective(o) for o in objectives))
    for path in studies.values():
        per_seed = json.loads(Path(path).read_text())["per_seed"]
        for seed in seeds:
            runs = per_seed.get(str(seed), {})
            for objective in objectives:
                if any(n.rsplit("_lr", 1)[0] == objective for n in runs):
                    point = operating_point(runs, objective)
                    if point is not None:  # the first study that has the objective gives its point
                        out.setdefault((seed, objective), point)
    for name in variants:
        out.update({(seed, name): point for (seed, o), point in list(out.items()) if o == base_objective(name)})
    return {key: point for key, point in out.items() if key[1] in requested}
