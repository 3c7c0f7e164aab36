"""TOFU unlearning benchmark: data, metrics (open-unlearning's definitions), evaluation."""

from .data import FORGET_TO_RETAIN, load_idk, load_split, retain_eval_log

__all__ = ["FORGET_TO_RETAIN", "load_idk", "load_split", "retain_eval_log"]
