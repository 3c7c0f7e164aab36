"""Settings of the mini-TOFU experiment and its two presets: the main job (fits `bash run.sh main`) and `--full`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

OBJECTIVES = ("ga", "grad_diff", "npo", "simnpo", "kl", "ce_u", "ce_u_retain", "idk_dpo", "ce_u_idk_dpo")
MATCHED_LR = 2e-4  # the matched-settings run: every objective at this learning rate


@dataclass
class MiniTofuConfig:
    """One seed = one whole pipeline: model initialisation, both finetunes, every unlearning run (data order, retain
    pairing, IdK answers) all draw from it, so the spread over seeds covers the training dynamics end to end."""

    out: str = "outputs/mini_tofu"
    seeds: tuple[int, ...] = (0, 1, 2)
    objectives: tuple[str, ...] = OBJECTIVES
    learning_rates: tuple[float, ...] = (MATCHED_LR,)
    forget_split: str = "forget01"  # 2 authors, 40 questions; forget05 (200) costs 5x the forget-side compute
    num_retain_authors: int = 6  # the first TOFU authors (20 questions each) are the retain set
    eval_questions: int = 40  # per model-utility set (retain, real authors, world facts); the forget set: all of it
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 2
    finetune_epochs: int = 20
    finetune_lr: float = 3e-3
    unlearn_epochs: int = 10
    eval_points: int = 1  # evaluations during unlearning, evenly spaced, the last at the final step
    batch_size: int = 16
    max_new_tokens: int = 48
    objective_overrides: dict = field(default_factory=lambda: {"simnpo": {"beta": 2.5}})

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        self.objectives = tuple(self.objectives)
        self.learning_rates = tuple(float(lr) for lr in self.learning_rates)
        unknown = sorted(set(self.objectives) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"objectives: unknown {unknown}; choose from {list(OBJECTIVES)}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise ValueError(f"learning_rates must be positive, got {self.learning_rates}.")
        if self.eval_points < 1:
            raise ValueError(f"eval_points must be >= 1 (the final step is always evaluated), got {self.eval_points}.")


def main_preset(**overrides) -> MiniTofuConfig:
    """`bash run.sh main`: 3 seeds, every objective at the matched learning rate, evaluated at the last step (30) only
    (an evaluation costs about a quarter of an unlearning run: the 10-minute budget of the main job)."""
    return replace(MiniTofuConfig(), **overrides)


def full_preset(**overrides) -> MiniTofuConfig:
    """`--full`: 5 seeds, every objective at 3 learning rates spanning 16x (the matched 2e-4 in the middle), evaluated
    at steps 15 and 30; else the main job's settings (evaluating does not change training: its seeds 0-2 at lr 2e-4
    end where the main job's runs end). The committed docs/mini_tofu results."""
    cfg = MiniTofuConfig(out="outputs/mini_tofu_full", seeds=(0, 1, 2, 3, 4), learning_rates=(5e-5, MATCHED_LR, 8e-4),
                         eval_points=2)
    return replace(cfg, **overrides)
