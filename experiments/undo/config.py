"""Settings of the UNDO study (issue 32, item 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..attacks.config import STUDIES

# the teachers: the attack-robustness study's objectives at their operating points, and the full model itself (no
# unlearning step: does the unlearning step matter?)
TEACHERS = ("full", "npo", "ce_u_retain", "grad_diff", "ceu_full_retain")
REFERENCES = ("full", "retain")


@dataclass
class UndoStudyConfig:
    """Per seed: the full and retain models (mini-TOFU's finetunes), each unlearned teacher rebuilt at its operating
    point (experiments/attacks/points.py), and per teacher and alpha one distillation run of max(epochs) epochs whose
    student is measured after each of `epochs`.

    Distillation: `UndoTrainer`, forward KL on every non-padding position of the retain model's own training data (the
    6 retain authors' 120 questions + the 80 general questions, prompt and answer), batch 16, AdamW at a constant
    `distill_lr` (mini-TOFU's finetune lr: the student relearns what a noised model lost at the rate the models were
    trained at), the noise drawn as the model's own initialisation with seed `seed + noise_seed_offset` (not the seed
    whose initialisation the full model started from). With a constant lr the state after e epochs of a longer run is
    that of an e-epoch run, so one run gives every length.

    Measures (the attack study's protocol, experiments/attacks/suite.py): TOFU model utility and forget prob; then
    relearning on all 40 forget questions at `relearn_lr` (1 epoch, batch 8: 5 steps) for OpenUnlearning's R of
    forget prob, and on a seeded half with the other half held out (held-out recovery, and leak@k sampled from the
    relearned model on the held-out half)."""

    out: str = "outputs/undo"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    teachers: tuple[str, ...] = TEACHERS
    alphas: tuple[float, ...] = (0.2, 0.5, 0.8)
    epochs: tuple[int, ...] = (5, 10)  # x 200 questions; the retain model: 20 epochs of the same 200
    distill_lr: float = 3e-3
    distill_batch_size: int = 16
    noise_seed_offset: int = 1000
    relearn_lr: float = 1e-3
    # leak@k on the held-out half after relearning the other half (the attack study's `leak_after_relearn`): samples
    # per question (0: not measured; the committed 5-seed table of 2026-12-07 was made without it)
    leak_after_relearn: int = 32
    studies: dict = field(default_factory=lambda: dict(STUDIES))
    # MiniTofuConfig fields over mini-TOFU's --full preset (the models the operating points were found with); the
    # gradient-norm MIA is left out of the evaluations (a privacy metric this study does not report)
    model_overrides: dict = field(default_factory=lambda: {"eval_gradnorm": False})

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        self.teachers = tuple(self.teachers)
        self.alphas = tuple(float(a) for a in self.alphas)
        self.epochs = tuple(sorted(int(e) for e in self.epochs))
        unknown = sorted(set(self.teachers) - set(TEACHERS))
        if unknown:
            raise ValueError(f"teachers: unknown {unknown}; choose from {list(TEACHERS)}.")
        if not self.alphas or not all(0 <= a <= 1 for a in self.alphas):
            raise ValueError(f"alphas must be in [0, 1], got {self.alphas}.")
        if self.leak_after_relearn < 0:
            raise ValueError(f"leak_after_relearn must be >= 0 (samples per question; 0: off), got "
                             f"{self.leak_after_relearn}.")
        if not self.epochs or self.epochs[0] < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")


def student_name(teacher: str, alpha: float, epochs: int) -> str:
    return f"undo:{teacher}:a{alpha:g}:e{epochs}"
