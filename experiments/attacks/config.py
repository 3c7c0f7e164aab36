"""Settings of the attack study (issue 24, item 3): which models are attacked, and how hard."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

OFFLINE = ("ga", "grad_diff", "npo", "simnpo", "kl", "ce_u", "ce_u_retain", "idk_dpo", "ce_u_idk_dpo")
# the RL study's forms that its claims name: the anchored pairs, and the unanchored pair
RL = ("grpo_retain", "ceu_full_retain", "ceu_prefix_retain", "grpo_kl", "ceu_full_kl", "grpo", "ceu_full")
# CE-U's siblings (issue 26), offline and as the RL negative with the retain anchor, and the baselines they are
# compared with, all at their operating points in docs/mini_tofu_siblings (one study, one machine: siblings_preset)
SIBLINGS = ("wga", "satimp", "undial", "rmu", "rl_wga_retain", "rl_satimp_retain")
SIBLING_BASELINES = ("ce_u", "ce_u_retain", "ceu_full_retain", "grpo_retain")
LEAK_THRESHOLD = "0.5"  # the leak event reported in tables and plots (ROUGE-L recall >= 0.5; 0.3 and 0.7 kept too)
# relearning-resistant forms (issue 25, docs/unlearning_robustness.md): "<objective>+<variant>" is the objective at
# the plain form's operating point (lr, step) with these settings. sam: rho 0.1, a ball about as strong as one
# relearning Adam step at lr 3e-4; sam03: rho 0.3, about one step at the attack's lr 1e-3; adv: the first-order
# adversarial form, one SGD relearning step of lr 0.015 (||delta|| ~ rho 0.1 for NPO) before each update (offline
# objectives only: the RL trainer has SAM only); wa: weight averaging of every iterate in the last 20% of the steps up
# to the operating point (jobs.point_job sets the window; interval 1: 7 iterates at step 30, the paper averages 6 of
# 125 steps; offline only).
VARIANTS = {"sam": {"sam_rho": 0.1}, "sam03": {"sam_rho": 0.3},
            "adv": {"adv_relearn_steps": 1, "adv_relearn_lr": 0.015},
            "wa": {"weight_averaging": True, "weight_averaging_interval": 1}}
OFFLINE_ONLY_VARIANTS = ("adv", "wa")
REFERENCES = ("full", "retain")
ROOT = Path(__file__).resolve().parents[2]
STUDIES = {"offline": str(ROOT / "docs" / "mini_tofu" / "results.json"),
           "rl": str(ROOT / "docs" / "mini_tofu_rl" / "results.json")}  # attacked like the rest: the ceiling and the floor of what an attack can show


@dataclass
class AttackStudyConfig:
    """Each model at its operating point (experiments/attacks/points.py) gets the TOFU evaluation with
    open-unlearning's privacy metrics, then three attacks, each on a fresh copy of the model:

    - leak@k: `leak_n` samples per forget question (and per paraphrased question) at temperature 1, top-p 1;
    - relearning: answer-only NLL on the 40 forget questions for `relearn_epochs` epoch(s) (OpenUnlearning's
      protocol), and on a seeded half of them with the other half held out, at each of `relearn_lrs`: the mini-TOFU
      models were finetuned at lr 3e-3 (TOFU's 1e-5 for Llama-2-7b: OpenUnlearning relearns at 2x the finetune lr),
      so the grid is 1/3x and 1x the finetune lr (at 3e-4 the probe on seed 0 moved no model); batch 8, no
      accumulation (40 questions = 5 steps an epoch);
    - quantization: every linear layer but the LM head at `quant_bits` (bitsandbytes NF4 / LLM.int8 when installed,
      else the documented stand-in).
    """

    out: str = "outputs/attacks"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    objectives: tuple[str, ...] = OFFLINE + RL
    leak_n: int = 32  # the paper: 200; sampling is ~all of the suite's cost on CPU (200: ~2.5 min per model)
    leak_max_new_tokens: int = 48  # mini-TOFU's generation length
    leak_batch_size: int = 400
    relearn_lrs: tuple[float, ...] = (1e-3, 3e-3)
    relearn_epochs: float = 1
    relearn_batch_size: int = 8
    quant_bits: tuple[int, ...] = (4, 8)
    quant_method: str = "auto"  # bitsandbytes when installed (its CPU 4-bit needs in_features % 64 == 0), else "fake"
    leak_paraphrased: bool = True  # leak@k on TOFU's paraphrased questions too
    # relearning lrs after whose held-out attack leak@k is measured again, on the held-out questions (issue 25: does
    # what relearning brings back also come out under sampling?); off in the main study (~+10 s per model and lr)
    leak_after_relearn: tuple[float, ...] = ()
    cheap: bool = False  # the main job's form: relearning's held-out form only (no whole-set relearn, no seen half)
    # where the operating points come from (the committed studies' per-seed results) and the mini-TOFU settings the
    # models are rebuilt with (MiniTofuConfig fields over mini-TOFU's --full preset; tests cut them down)
    studies: dict = field(default_factory=lambda: dict(STUDIES))
    model_overrides: dict = field(default_factory=dict)
    # a previous run's results.json: its per-seed measures (and leak curves, where it has them) fill in the
    # (seed, model) pairs this run did not compute, so a study can grow by seeds across sessions; the report names
    # the run each seed came from (results.json "merged_from")
    prior: str | None = None

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        self.objectives = tuple(self.objectives)
        self.relearn_lrs = tuple(float(x) for x in self.relearn_lrs)
        self.leak_after_relearn = tuple(float(x) for x in self.leak_after_relearn)
        if set(self.leak_after_relearn) - set(self.relearn_lrs):
            raise ValueError(f"leak_after_relearn {self.leak_after_relearn} must be among relearn_lrs "
                             f"{self.relearn_lrs}.")
        unknown = sorted(o for o in self.objectives if base_objective(o) not in OFFLINE + RL + SIBLINGS
                         or o.partition("+")[2] not in ("", *VARIANTS))
        if unknown:
            raise ValueError(f"objectives: unknown {unknown}; choose from {list(OFFLINE + RL + SIBLINGS)}, each "
                             f"optionally with +{' / +'.join(VARIANTS)}.")
        from ..mini_tofu.config import rl_objective

        rl_only = sorted(o for o in self.objectives
                         if o.partition("+")[2] in OFFLINE_ONLY_VARIANTS and rl_objective(base_objective(o)))
        if rl_only:
            raise ValueError(f"objectives: {rl_only} ask for an offline-only variant ({OFFLINE_ONLY_VARIANTS}) of an RL "
                             "objective, whose trainer has SAM only; use +sam or +sam03.")
        if self.leak_n < 1 or not self.relearn_lrs or min(self.relearn_lrs) <= 0:
            raise ValueError(f"leak_n must be >= 1 and relearn_lrs positive, got {self.leak_n}, {self.relearn_lrs}.")


def base_objective(name: str) -> str:
    """"npo+sam" -> "npo": the objective whose operating point a variant is trained at."""
    return name.partition("+")[0]


def model_config(cfg: AttackStudyConfig, name: str = ""):
    """The mini-TOFU settings of the attacked models (those of the committed studies unless overridden); for a
    variant "<objective>+<variant>", the objective's overrides extended by the variant's settings."""
    from ..mini_tofu.config import full_preset as mini_tofu_full

    model = mini_tofu_full(**cfg.model_overrides)
    base, _, variant = name.partition("+")
    if variant:
        overrides = {**model.objective_overrides, base: {**model.objective_overrides.get(base, {}),
                                                         **VARIANTS[variant]}}
        model = replace(model, objective_overrides=overrides)
    return model


def main_job_preset(**overrides) -> AttackStudyConfig:
    """The cheap form `bash run.sh main` runs on its own final models (experiments/mini_tofu, `attacks`): 16 samples
    per forget question, relearning on a seeded half at lr 1e-3 (held-out half measured). No quantization: at this
    scale the unlearning updates are below one NF4 step and it moves nothing (docs/attacks.md)."""
    return replace(AttackStudyConfig(leak_n=16, leak_paraphrased=False, relearn_lrs=(1e-3,), quant_bits=(),
                                     cheap=True), **overrides)


def full_preset(**overrides) -> AttackStudyConfig:
    """The committed study (docs/attacks_study): 5 seeds, every objective, n = 32 samples, the relearning lr grid."""
    return replace(AttackStudyConfig(), **overrides)


def siblings_preset(**overrides) -> AttackStudyConfig:
    """The siblings' attack study (docs/attacks_study/siblings): CE-U's siblings and the baselines they are compared
    with, each at its operating point in the --siblings study (docs/mini_tofu_siblings), where they all ran on one
    machine; otherwise as full_preset."""
    return replace(AttackStudyConfig(out="outputs/attacks_siblings", objectives=SIBLINGS + SIBLING_BASELINES,
                                     studies={"siblings": str(ROOT / "docs" / "mini_tofu_siblings" / "results.json")}),
                   **overrides)


def robustness_preset(**overrides) -> AttackStudyConfig:
    """Issue 25's study (docs/attacks_study/robustness): NPO, CE-U+retain, GradDiff, GRPO+retain, CE-U-GRPO+retain and
    SatImp, plain, with SAM (rho 0.1) and, offline, with the adversarial step and with weight averaging, at the plain
    form's operating point;
    leak@k is measured again after relearning (held-out half, lr 1e-3)."""
    base = ("npo", "ce_u_retain", "grad_diff", "grpo_retain", "ceu_full_retain", "satimp")
    offline = ("npo", "ce_u_retain", "grad_diff", "satimp")
    objectives = base + tuple(f"{o}+sam" for o in base) + tuple(f"{o}+adv" for o in offline) + tuple(
        f"{o}+wa" for o in offline)
    # SatImp, the sibling that forgot most at matched utility and kept it best under relearning
    # (docs/attacks_study/siblings), at its point in the --siblings study; the others at the committed studies' points
    studies = {**STUDIES, "siblings": str(ROOT / "docs" / "mini_tofu_siblings" / "results.json")}
    return replace(AttackStudyConfig(out="outputs/attacks_robustness", objectives=objectives, studies=studies,
                                     leak_after_relearn=(1e-3,)), **overrides)
