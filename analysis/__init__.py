"""Gradient analysis of CE-U vs gradient ascent, DPO and GRPO: closed forms, autograd checks, traces and plots.

`python -m analysis plots --out DIR [--quick]`; derivations in analysis/DERIVATIONS.md.
"""

from .callback import GradientTraceCallback, TokenProbabilityProbe

__all__ = ["GradientTraceCallback", "TokenProbabilityProbe"]
