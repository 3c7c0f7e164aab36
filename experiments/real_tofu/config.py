"""Settings of TOFU on a real pretrained model (SmolLM2-135M-Instruct, `ceu_rl.models.smollm2`), sized for a CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mini_tofu.config import MiniTofuConfig

# the offline objectives of issue 30 (GradDiff, NPO, SimNPO, CE-U+retain, IdkDPO, CE-U-IdkDPO, SatImp, RMU) and its
# RL pair (claim a: GRPO + retain vs CE-U-GRPO + retain, experiments/real_tofu/rl.py)
RL_OBJECTIVES = ("grpo_retain", "ceu_full_retain")
OBJECTIVES = ("grad_diff", "npo", "simnpo", "ce_u_retain", "idk_dpo", "ce_u_idk_dpo", "satimp", "rmu", *RL_OBJECTIVES)
# the first ones run: the claims (b) and (c) of issue 30 and the NPO baseline
CORE_OBJECTIVES = ("ce_u_retain", "grad_diff", "idk_dpo", "ce_u_idk_dpo", "npo")


@dataclass
class RealTofuConfig(MiniTofuConfig):
    """TOFU's protocol at a size two CPU cores run. The pretrained model is fixed: the "full" model (finetuned on the
    retain authors and forget01's two authors) and the "retain" model (the retain authors only) are finetuned once,
    with `finetune_seed`; a seed is the unlearning run's data order and seed. Chat template, answer-only NLL.

    Eval sets (questions): the forget split (forget01: all 40, with its paraphrased and 5 perturbed answers), the
    first `eval_retain` retain questions (authors the models were finetuned on), the first `eval_general` real-author
    and world-facts questions each; generations greedy, `max_new_tokens`.
    """

    out: str = "outputs/real_tofu"
    base_model: str = ""  # a HF folder or hub id; "" = ceu_rl.models.smollm2_path()
    prompt_format: str = "chat"
    objectives: tuple[str, ...] = CORE_OBJECTIVES
    # the finetune's lr (TOFU unlearns at its finetune lr), and for the pair of claim (b) also 0.3x of it, so that
    # their forgetting can be matched; a grid cut to a CPU budget (each run ~8 min of CPU, an evaluation ~4 of them)
    learning_rates: tuple[float, ...] = (1e-4,)
    # RL: GRPO + retain at 1e-4 (the finetune's) and 3e-4 (0.88x utility in seed 0); CE-U-GRPO + retain at 1e-4 lost
    # 0.28 of the utility in seed 0 (3e-4 stopped there), so 3e-5 below it
    objective_learning_rates: dict = field(default_factory=lambda: {"ce_u_retain": (3e-5, 1e-4),
                                                                    "grad_diff": (3e-5, 1e-4),
                                                                    "grpo_retain": (1e-4, 3e-4),
                                                                    "ceu_full_retain": (3e-5, 1e-4)})
    num_retain_authors: int = 4  # 4 retain + forget01's 2 = 6 authors finetuned
    finetune_epochs: int = 5
    finetune_lr: float = 1e-4
    finetune_batch_size: int = 8
    finetune_seed: int = 0
    batch_size: int = 4  # unlearning: 4 forget + 4 retain questions a step
    unlearn_epochs: int = 1  # 10 steps on forget01 (TOFU unlearns for 5 epochs; a CPU budget)
    eval_retain: int = 20
    eval_general: int = 20
    max_new_tokens: int = 48
    max_length: int = 256
    # the relearning attack (issue 30, claim e; OpenUnlearning's protocol): answer-only NLL on all 40 forget
    # questions for one epoch (batch 8: 5 steps) at `relearn_lr` (the finetune lr; OpenUnlearning relearns at 2x),
    # then the forget metrics again; on the full and retain models and on the final model of the runs of `attacked`
    # at their highest lr (each ~2.5 min of CPU)
    attacked: tuple[str, ...] = ("ce_u_retain", "grad_diff", *RL_OBJECTIVES)
    relearn_lr: float = 1e-4
    eval_gradnorm: bool = False  # a backward pass per item: not at this size on a CPU
    # RL unlearning (rl.py), mini-TOFU's settings cut to a CPU budget: one pass over the 40 forget prompts, 4 a step
    # with 4 sampled answers each (10 steps, as the offline runs'; mini-TOFU: 2 x 8, 2 epochs), 48 new tokens at
    # temperature 1 (a model that knows the answer must still produce some that miss it, or GRPO has no signal), the
    # retain anchor on 4 retain pairs a step (the offline batch), evaluated at the last step
    rl_epochs: int = 1
    rl_prompts_per_step: int = 4
    rl_generations: int = 4
    rl_retain_batch_size: int = 4
    rl_eval_points: int = 1
    objective_overrides: dict = field(default_factory=lambda: {
        "simnpo": {"beta": 2.5},
        # RMU on 30 layers: WMDP steers layer 7 of 32 in 7B models (~1/4 of the depth), so layer 7 of 30 here;
        # the coefficient is mini-TOFU's 8 (not tuned on this model)
        "rmu": {"rmu_layer": 7, "rmu_steering_coeff": 8.0},
    })

    def __post_init__(self):
        super().__post_init__()
        for name in ("eval_retain", "eval_general", "finetune_epochs", "finetune_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")


def base_model_path(cfg: RealTofuConfig) -> str:
    if cfg.base_model:
        return cfg.base_model
    from ceu_rl.models import smollm2_path

    return smollm2_path()
