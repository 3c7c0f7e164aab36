"""Spread over seeds: every reported number comes with its mean, standard deviation and per-seed values."""

from __future__ import annotations

import math
import statistics


def mean_sd(values) -> dict:
    """{"mean", "sd" (sample sd, n - 1; 0 for one seed), "per_seed"} of a list of per-seed values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_sd needs at least one per-seed value.")
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def log10_mean_sd(values, floor: float = 1e-300) -> dict:
    """Mean and sd of log10(values) (p-values such as forget quality span decades: their geometric mean)."""
    return mean_sd([math.log10(max(v, floor)) for v in values])


def fmt(stat: dict, spec: str = ".3f") -> str:
    return f"{stat['mean']:{spec}} ± {stat['sd']:{spec}}"
