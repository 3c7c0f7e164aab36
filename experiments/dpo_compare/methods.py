"""The compared methods: CEUDPOConfig fields per method (everything else is the same for all runs).

TRL 1.16's own fixes for likelihood displacement (`DPOConfig.loss_type`): IPO (Azar et al. 2023, arXiv 2310.12036),
APO-zero and APO-down (D'Oosterlinck et al. 2024, arXiv 2408.06266), NCA (Chen et al. 2024, arXiv 2402.05369);
DPO-Positive (Pal et al. 2024, arXiv 2402.13228) is not in TRL 1.16 and is `loss_type="dpop"` of CEUDPOConfig.
CE-U-DPO: `rejected_objective` x `ceu_weight` grid (gamma; analysis/DERIVATIONS.md Sec. 9).
"""

from __future__ import annotations

BASELINES = {
    "DPO": {"loss_type": "sigmoid"},
    "IPO": {"loss_type": "ipo"},
    "APO-zero": {"loss_type": "apo_zero"},
    "APO-down": {"loss_type": "apo_down"},
    "NCA": {"loss_type": "nca_pair"},
    "DPOP": {"loss_type": "dpop", "dpop_lambda": 50.0},
}
CEU_WEIGHTS = (1.0, 4.0, 16.0, 64.0)
CEU_VARIANTS = {
    f"CE-U-DPO {objective.removeprefix('ceu_')} g={gamma:g}":
        {"loss_type": "ceu", "rejected_objective": objective, "ceu_weight": gamma}
    for objective in ("ceu_full", "ceu_prefix") for gamma in CEU_WEIGHTS
}
METHODS = {**BASELINES, **CEU_VARIANTS}


def select(names) -> dict:
    """METHODS restricted to `names` (all when None); an unknown name is a ValueError listing the known ones."""
    if names is None:
        return dict(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"--methods {unknown}: unknown; use names from {list(METHODS)}.")
    return {n: METHODS[n] for n in names}
