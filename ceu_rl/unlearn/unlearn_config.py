"""Configuration of UnlearnTrainer (TRL-style dataclass over transformers' TrainingArguments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .sam import WeightAveragingCallback, check_perturbation_options

# objective -> (needs a retain set, needs a frozen reference model)
OBJECTIVES = {
    "ga": (False, False),
    "grad_diff": (True, False),
    "npo": (True, True),
    "simnpo": (True, False),
    "ce_u": (False, False),
    "ce_u_retain": (True, False),
    "kl": (True, True),
    "idk_dpo": (True, True),
    "ce_u_idk_dpo": (True, True),
    "wga": (True, False),
    "satimp": (True, False),
    "wtnpo": (True, True),
    "undial": (False, True),
    "rmu": (True, True),
}
RMU_PARAMS = ("all", "paper")


@dataclass
class UnlearnConfig(TrainingArguments):
    r"""
    Arguments of [`UnlearnTrainer`]: transformers' `TrainingArguments` plus the unlearning objective.

    Parameters:
        objective (`str`, defaults to `"ce_u"`):
            - `"ga"`: gradient ascent on the forget set (Jang et al. 2023; TOFU's GA baseline, Maini et al. 2024).
            - `"grad_diff"`: GA on forget + CE on retain (TOFU's Grad. Diff.; Liu et al. 2022).
            - `"npo"`: NPO on forget + CE on retain, reference = the model before unlearning (Zhang et al. 2024,
              arXiv 2404.05868; open-unlearning's recipe).
            - `"simnpo"`: SimNPO on forget + CE on retain, no reference (Fan et al. 2024, arXiv 2410.07163).
            - `"ce_u"`: CE-U on the forget set only, no reference and no retain data, as in the CE-U paper (Bo Yang,
              arXiv 2503.01224).
            - `"ce_u_retain"`: the unified loss: CE-U on forget tokens and CE on retain tokens, one token mean
              (the CE-U paper's unified framework).
            - `"kl"`: GA on forget + KL(p_ref || p) on retain (TOFU's KL baseline).
            - `"idk_dpo"`: DPO with an "I don't know" answer as chosen and the forget answer as rejected, + CE on
              retain (Maini et al. 2024; Rafailov et al. 2023).
            - `"ce_u_idk_dpo"`: the same with CE-U-DPO (DPO's rejected-side gradient ascent replaced by CE-U).
            CE-U's siblings (`ceu_rl.objectives.sibling_losses`; GradDiff-style retain NLL where they have one, as
            open-unlearning and the authors' code):
            - `"wga"`: weighted gradient ascent, per-token weight p^`wga_beta`, + CE on retain (Wang et al., ICLR
              2025, arXiv 2502.19301; open-unlearning's WGA).
            - `"satimp"`: weight p^`satimp_beta1` (1 - p)^`satimp_beta2`, + CE on retain (Yang et al., ICML 2025,
              arXiv 2505.11953; open-unlearning's SatImp).
            - `"wtnpo"`: token-wise NPO weight times p^`wtnpo_alpha`, reference = the model before unlearning,
              + CE on retain (arXiv 2502.19301, the authors' code).
            - `"undial"`: self-distillation to the frozen model's distribution with the label logit lowered by
              `undial_beta`; no retain term (Dong et al., NAACL 2025, arXiv 2402.10052: the paper uses none;
              open-unlearning's UNDIAL.yaml has alpha 0). Full B x T x V logits of the forget batch.
            - `"rmu"`: layer-`rmu_layer` activations on forget tokens pushed toward `rmu_steering_coeff` * u (u a
              random unit vector seeded by `seed`), + `alpha` * the distance of the same activations to the frozen
              model's on retain tokens (Li et al., WMDP, arXiv 2403.03218). Which parameters train: `rmu_params`.
        alpha (`float`, defaults to `1.0`): weight of the retain term.
        gamma (`float`, defaults to `1.0`): weight of the forget term.
        beta (`float`, defaults to `0.1`): NPO / DPO temperature (SimNPO: use 2.5, open-unlearning's value).
        delta (`float`, defaults to `0.0`): SimNPO's margin.
        ignore_first_n_answer_tokens (`int`, defaults to `1`): CE-U objectives skip the first n answer tokens of each
            forget answer (as the CE-U author's code does: the first token is often generic).
        ce_u_fused_linear (`bool`, defaults to `True`): ce_u and ce_u_retain compute CE-U with
            `ceu_rl.objectives.linear_ce_u_loss` on the backbone's hidden states and the LM head's weight: exact at
            p -> 1 and no B x T x V logits (chunked over tokens). Needs a plain `nn.Linear` head without logit
            scaling or soft-capping; otherwise (e.g. a LoRA-wrapped head) the trainer warns with the reason and uses
            TRL's fused log-prob head (log-prob and entropy only; float32 error bound in `ce_u_loss_from_logprobs`).
        ce_u_from_logits (`bool`, defaults to `False`): compute CE-U from full logits with `ce_u_loss` (exact at
            p -> 1, B x T x V memory); takes precedence over `ce_u_fused_linear`.
        wga_beta (`float`, defaults to `1.0`): WGA's exponent (>= 0; 0 is GA). 1.0 is open-unlearning's WGA.yaml and
            the README's "set to 1.0"; the authors' G-effect code defaults to 5.
        satimp_beta1 (`float`, defaults to `5.0`), satimp_beta2 (`float`, defaults to `1.0`): SatImp's exponents
            (>= 0), open-unlearning's SatImp.yaml; the authors' README (tmlr-group/SatImp) recommends beta2 = 0.1.
            open-unlearning's yaml also sets gamma 0.1, alpha 1 (its README says gamma 1, alpha 0.1, the authors'
            retain coefficient 0.1): set `gamma` / `alpha` here, whose defaults stay 1.
        wtnpo_beta (`float`, defaults to `4.0`), wtnpo_alpha (`float`, defaults to `1.5`): WTNPO's temperature and
            extra exponent (>= 0), the authors' code defaults (tmlr-group/G-effect).
        undial_beta (`float`, defaults to `10.0`): UNDIAL's logit penalty (>= 0), open-unlearning's UNDIAL.yaml (its
            grid: 3, 10, 30).
        rmu_layer (`int`, *optional*): index of the decoder layer whose output is steered. Default
            min(7, n_layers // 2 - 1) (at least 0): layer 7 as the WMDP paper on 32-layer Zephyr-7B and
            open-unlearning on 16-layer Llama-3.2-1B, capped at the middle of smaller models (layer 0 of a 2-layer
            model). Must be < the number of layers.
        rmu_steering_coeff (`float`, defaults to `2.0`): c, the target's norm (> 0); open-unlearning's TOFU RMU.yaml
            (the WMDP paper: 6.5 for Zephyr-7B). It should be compared with the layer's activation norm.
        rmu_params (`str`, defaults to `"all"`): which parameters train: `"all"` (open-unlearning's TOFU RMU.yaml,
            after the G-effect code; parameters after the steered layer get no gradient from either term) or
            `"paper"` (the WMDP paper and code: the MLP down-projection weights of layers max(0, l - 2) .. l only;
            on a 2-layer model with l = 0 that is layer 0's `mlp.down_proj.weight`).
        sam_rho (`float`, defaults to `0.0` = off): sharpness-aware unlearning (Fan et al., ICML 2025, arXiv
            2502.05374; code OPTML-Group/Unlearn-Smooth), for every objective: per micro-batch the forget term's
            gradient is taken at w + rho * g / ||g||_2 (g its gradient at w, one L2 norm over all trainable
            parameters: the direction that raises the forget loss, as relearning does) and the retain term's at w.
            ce_u_retain's one token mean is split into its forget-token part (CE-U sum / all tokens) and retain-token
            part (CE sum / all tokens), which add up to it: only the forget part is perturbed, as in the paper's
            min-max over the forget loss. About twice the forget forward/backward per step; not with DeepSpeed/FSDP.
            The paper's rho: 0.01 (NPO+SAM, MUSE and WMDP scripts) and 0.1 (WMDP configs) on 7B models; see
            `ceu_rl.unlearn.sam` and docs/unlearning_robustness.md.
        adv_relearn_steps (`int`, defaults to `0` = off), adv_relearn_lr (`float`, defaults to `0.0`): the
            adversarial variant instead of SAM's perturbation: `adv_relearn_steps` plain SGD steps of size
            `adv_relearn_lr` on the NLL of the forget batch's answers (a relearning attack), the forget gradient at
            the relearned weights, the retain gradient at w (first-order, after TAR, arXiv 2408.00761).
        weight_averaging (`bool`, defaults to `False`): the unlearned model is the uniform mean of the iterates at
            steps >= `weight_averaging_start` x max_steps that are multiples of `weight_averaging_interval`
            (defaults `0.8` and `5`: the paper's steps 100, 105, ..., 125 of 125). No extra passes.
        max_length (`int`, defaults to `256`): prompt + answer tokens per item.
        prompt_format (`str`, defaults to `"auto"`): "llama2", "chat", "plain" or "auto" (see `ceu_rl.tofu.formatting`):
            "auto" takes the format recorded in the model's config (`ceu_rl_prompt_format`), else guesses; the format
            used is recorded there, so the saved model carries it.
    """

    objective: str = field(default="ce_u", metadata={"help": f"one of {sorted(OBJECTIVES)}"})
    alpha: float = field(default=1.0, metadata={"help": "weight of the retain term"})
    gamma: float = field(default=1.0, metadata={"help": "weight of the forget term"})
    beta: float = field(default=0.1, metadata={"help": "NPO / SimNPO / DPO temperature"})
    delta: float = field(default=0.0, metadata={"help": "SimNPO margin"})
    ignore_first_n_answer_tokens: int = field(default=1, metadata={"help": "CE-U: skip the first n answer tokens"})
    ce_u_fused_linear: bool = field(default=True, metadata={"help": "CE-U with the exact fused linear + CE-U op"})
    ce_u_from_logits: bool = field(default=False, metadata={"help": "CE-U from full logits instead of the fused head"})
    wga_beta: float = field(default=1.0, metadata={"help": "WGA: weight p^beta (>= 0)"})
    satimp_beta1: float = field(default=5.0, metadata={"help": "SatImp: weight p^beta1 (1-p)^beta2, beta1 >= 0"})
    satimp_beta2: float = field(default=1.0, metadata={"help": "SatImp: beta2 >= 0"})
    wtnpo_beta: float = field(default=4.0, metadata={"help": "WTNPO: NPO temperature per token (>= 0)"})
    wtnpo_alpha: float = field(default=1.5, metadata={"help": "WTNPO: extra exponent p^alpha (>= 0)"})
    undial_beta: float = field(default=10.0, metadata={"help": "UNDIAL: teacher's label logit lowered by beta"})
    rmu_layer: int | None = field(default=None, metadata={"help": "RMU: steered layer (default min(7, n//2-1))"})
    rmu_steering_coeff: float = field(default=2.0, metadata={"help": "RMU: norm c of the target c*u (> 0)"})
    rmu_params: str = field(default="all", metadata={"help": f"RMU: trainable parameters, one of {RMU_PARAMS}"})
    sam_rho: float = field(default=0.0, metadata={"help": "SAM radius on the forget term (0 = off)"})
    adv_relearn_steps: int = field(default=0, metadata={"help": "adversarial relearning steps before the forget "
                                                                 "gradient (0 = off)"})
    adv_relearn_lr: float = field(default=0.0, metadata={"help": "SGD step size of the relearning adversary"})
    weight_averaging: bool = field(default=False, metadata={"help": "average the late unlearning iterates"})
    weight_averaging_start: float = field(default=0.8, metadata={"help": "first averaged step / max_steps"})
    weight_averaging_interval: int = field(default=5, metadata={"help": "steps between averaged iterates"})
    max_length: int = field(default=256, metadata={"help": "max prompt + answer tokens"})
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain"})
    # Overrides of TrainingArguments defaults for unlearning
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep the forget/retain columns"})
    report_to: str | list[str] = field(default="none", metadata={"help": "logging integrations"})
    logging_steps: float = field(default=1, metadata={"help": "log every n steps"})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is not one of {sorted(OBJECTIVES)}.")
        for name in ("alpha", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if self.ignore_first_n_answer_tokens < 0:
            raise ValueError("ignore_first_n_answer_tokens must be >= 0.")
        for name in ("wga_beta", "satimp_beta1", "satimp_beta2", "wtnpo_beta", "wtnpo_alpha", "undial_beta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} is out of range: use a value >= 0 (see UnlearnConfig's "
                                 "docstring for each paper's value).")
        if not self.rmu_steering_coeff > 0:
            raise ValueError(f"rmu_steering_coeff={self.rmu_steering_coeff} is out of range: use a value > 0 (the "
                             "norm of RMU's target; 2 in open-unlearning's TOFU config).")
        if self.rmu_layer is not None and self.rmu_layer < 0:
            raise ValueError(f"rmu_layer={self.rmu_layer} is out of range: use a layer index >= 0, or None for the "
                             "default min(7, n_layers // 2 - 1).")
        if self.rmu_params not in RMU_PARAMS:
            raise ValueError(f"rmu_params={self.rmu_params!r} is not one of {RMU_PARAMS}.")
        # the relearning-resistance options (ceu_rl.unlearn.sam): their ranges, ValueError naming the field
        check_perturbation_options(self.sam_rho, self.adv_relearn_steps, self.adv_relearn_lr)
        WeightAveragingCallback(self.weight_averaging_start, self.weight_averaging_interval)

    @property
    def needs_retain(self) -> bool:
        return OBJECTIVES[self.objective][0]

    @property
    def needs_reference(self) -> bool:
        return OBJECTIVES[self.objective][1]
