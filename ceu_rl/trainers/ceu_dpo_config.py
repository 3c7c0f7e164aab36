"""Configuration of CE-U-DPO: TRL's DPOConfig plus `loss_type="ceu"` (with `ceu_weight`, `rejected_objective`) and
the DPO-Positive baseline `loss_type="dpop"` (with `dpop_lambda`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import DPOConfig

from ..objectives.dpo_weights import CE_U_REJECTED_OBJECTIVES, REJECTED_OBJECTIVES

# loss types this package adds to TRL's; each stands alone (not combinable in a list with others)
OWN_LOSS_TYPES = ("ceu", "dpop")


@dataclass
class CEUDPOConfig(DPOConfig):
    r"""
    [`~trl.DPOConfig`] with one more loss type, `"ceu"` (CE-U-DPO). Every other field keeps TRL's meaning, and any
    other `loss_type` runs TRL's DPO unchanged.

    With `loss_type="ceu"` the per-pair loss is

        L = -log sigma(beta * (Dw - sg(Dl)))  +  ceu_weight * sg(beta * sigma(-u)) * sum_t CE-U(rejected token t)

    with D = summed completion log-prob of the policy minus the reference's, u = beta * (Dw - Dl) and sg the
    stop-gradient. DPO's gradient contains beta * sigma(-u) * grad log pi(rejected): gradient ascent on every rejected
    token (Rafailov et al., "Direct Preference Optimization", NeurIPS 2023, https://huggingface.co/papers/2305.18290),
    which vanishes on confident tokens and pushes log pi(rejected) to -inf without limit (the likelihood displacement
    of Razin et al., https://huggingface.co/papers/2410.08847). CE-U-DPO keeps the chosen term and DPO's adaptive
    weight beta * sigma(-u) and replaces that ascent with CE-U (Bo Yang, "CE-U: Cross Entropy Unlearning",
    https://huggingface.co/papers/2503.01224), whose token gradient is bounded and stops once the token is forgotten.

    Implementation: TRL's "sigmoid" loss body on log-probs whose rejected tokens carry the gradient
    ceu_weight * p / (1 - p) * grad log pi (`reweighted_logprobs`): the same gradient as L above, and the loss value
    is DPO's. So TRL's options of that loss body keep their meaning, the gradient ascent inside each becoming CE-U
    (each has a rejected-side gradient c * grad log pi(rejected) with c >= 0, checked): `f_divergence_type`
    (forward_kl, js_divergence, alpha_divergence: c = beta sigma(-beta delta) f''-factor > 0), LD-DPO's `ld_alpha`
    (c carries alpha on the tokens past the shorter completion), WPO's `use_weighting` (c carries the detached pair
    weight). Not supported: `label_smoothing` (TRL's sigmoid loss ignores it), `loss_weights` (a single loss).

    `loss_type="dpop"` is DPO-Positive (Pal et al. 2024, "Smaug", https://huggingface.co/papers/2402.13228), which
    TRL 1.16 does not ship: -log sigma(beta (D_w - D_l - dpop_lambda max(0, -D_w))), a baseline for the comparison
    in docs/dpo_compare. It runs TRL's "sigmoid" loss body on chosen log-probs that carry the penalty (so TRL's logged
    `logps/chosen` and `rewards/chosen` include it); not with `ld_alpha`, `f_divergence_type` other than reverse_kl,
    `use_weighting`, `label_smoothing` or `loss_weights`.

    Parameters:
        ceu_weight (`float`, *optional*, defaults to `1.0`):
            gamma above: the weight of the CE-U term on rejected tokens relative to DPO's own weight on the rejected
            side. `0.0` keeps only the chosen side of DPO's gradient. Only used with `loss_type="ceu"`. On a token the
            rejected answer shares (same context, same token) with the chosen one, `ceu_full` drives p to
            1 / (1 + gamma) (analysis/DERIVATIONS.md Sec. 9), so large gamma lowers the chosen answer's prefix too;
            with `ceu_prefix` gamma only acts past the shared prefix.
        rejected_objective (`str`, *optional*, defaults to `"ceu_full"`):
            What rejected completion tokens receive with `loss_type="ceu"`: `"ceu_full"` CE-U on every token
            (CE-U-DPO as first written); `"ceu_prefix"` DPO's own gradient on the common prefix of the pair's
            chosen and rejected completions (where it cancels the chosen side's pull exactly, so those tokens are
            left alone, as by DPO) and CE-U from the first token where the rejected answer leaves the chosen one.
            Measured (docs/dpo_compare): the same as `ceu_full` when the answers share little; on pairs sharing half
            their answer, `ceu_full` at gamma 1 raised the rejected answer in every seed and `ceu_prefix` lowered it.
            CE-U's siblings, as CE-U-GRPO's `negative_objective` (weight times gamma, on every rejected token; logit
            push on the token w (1 - p) instead of DPO's 1 - p): `"wga"` w = p^`wga_beta`, WGA's weight (Wang et al.,
            "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", ICLR 2025,
            https://huggingface.co/papers/2502.19301); `"satimp"` w = p^`satimp_beta1` (1 - p)^`satimp_beta2`,
            SatImp's weight (Yang et al., "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", ICML
            2025, https://huggingface.co/papers/2505.11953). Both grow with p like CE-U's but are bounded by 1, so
            the push still vanishes on confident tokens (analysis/DERIVATIONS.md Sec. 10); the logged
            `loss/wga_term` / `loss/satimp_term` is gamma sg(beta sigma(-u)) sum_t sg(w) log pi (in place of
            `loss/ceu_term`).
        wga_beta (`float`, *optional*, defaults to `1.0`):
            `rejected_objective="wga"`'s exponent (finite, >= 0): w = p^beta on rejected tokens; 0 is DPO's gradient
            (times gamma), 1.0 open-unlearning's WGA default (WGA, arXiv 2502.19301).
        satimp_beta1 (`float`, *optional*, defaults to `5.0`), satimp_beta2 (`float`, *optional*, defaults to `1.0`):
            `rejected_objective="satimp"`'s exponents (finite, >= 0): w = p^beta1 (1 - p)^beta2 on rejected tokens
            (SatImp, arXiv 2505.11953; open-unlearning's defaults, the authors' README recommends beta2 = 0.1).
        dpop_lambda (`float`, *optional*, defaults to `50.0`):
            lambda of DPO-Positive (`loss_type="dpop"`): the weight of the penalty max(0, log pi_ref(y_w) -
            log pi(y_w)) on the chosen answer falling below the reference.
        ceu_exact_gradient (`bool`, *optional*, defaults to `False`):
            Compute CE-U's gradient on rejected tokens exactly in float32, from the policy's last hidden states and LM
            head (`exact_ce_u_logprobs`: `linear_ce_u_loss` on those tokens, masked log-sum-exp), instead of w * grad
            log pi with w = p / (1 - p) and grad log pi both from TRL's float32 fused head, whose relative error grows
            as err(log pi) / (1 - p): ~1e-2 at 1 - p = 1e-4, ~100% at 1 - p = 1e-6 (V = 32k), i.e. on confident
            tokens, where CE-U's weight is largest. An exact w alone would not help: TRL's backward forms the label's
            logit gradient as 1 - exp(log pi), with the same error. Cost: one extra chunked LM-head forward and
            backward over those tokens only (`benchmarks/results/exact_weight.json`). Needs a plain `nn.Linear` LM
            head (no PEFT adapter on it), no Liger kernel, no logit scaling or soft-capping. Only used with
            `loss_type="ceu"` and `rejected_objective` `"ceu_full"` or `"ceu_prefix"` (refused with `"wga"` and
            `"satimp"`: it computes CE-U's gradient, and their bounded weights need no exact path).
    """

    ceu_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight gamma of the CE-U term on rejected tokens (CE-U-DPO, loss_type='ceu'); 0 keeps only "
            "DPO's chosen-side gradient."
        },
    )
    rejected_objective: str = field(
        default="ceu_full",
        metadata={"help": "loss_type='ceu': 'ceu_full' (CE-U on every rejected token), 'ceu_prefix' (DPO's gradient "
                  "on the prefix shared with the chosen answer, CE-U from where they diverge), 'wga' (WGA's weight "
                  "p^wga_beta, arXiv 2502.19301) or 'satimp' (SatImp's p^satimp_beta1 (1-p)^satimp_beta2, "
                  "arXiv 2505.11953) on every rejected token."},
    )
    wga_beta: float = field(
        default=1.0,
        metadata={"help": "rejected_objective='wga': w = p^beta on rejected tokens, beta >= 0 (arXiv 2502.19301)."},
    )
    satimp_beta1: float = field(
        default=5.0,
        metadata={"help": "rejected_objective='satimp': w = p^beta1 (1-p)^beta2 on rejected tokens, beta1 >= 0."},
    )
    satimp_beta2: float = field(
        default=1.0,
        metadata={"help": "rejected_objective='satimp': beta2 >= 0 (arXiv 2505.11953)."},
    )
    dpop_lambda: float = field(
        default=50.0,
        metadata={"help": "loss_type='dpop' (DPO-Positive, arXiv 2402.13228): weight of the penalty on the chosen "
                  "log-prob falling below the reference's."},
    )
    ceu_exact_gradient: bool = field(
        default=False,
        metadata={"help": "Exact float32 CE-U gradient on rejected tokens (loss_type='ceu') from the last hidden "
                  "states and LM head (one extra chunked head forward+backward over those tokens); default: "
                  "w = p/(1-p) and grad log p from TRL's fused head, inexact where 1 - p < ~1e-4. Needs a plain "
                  "nn.Linear head."},
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("wga_beta", "satimp_beta1", "satimp_beta2"):
            value = getattr(self, name)
            try:
                valid = math.isfinite(float(value)) and float(value) >= 0.0
            except (TypeError, ValueError):
                valid = False
            if not valid:
                raise ValueError(f"{name}={value!r} is out of range: use a finite value >= 0 (the defaults: "
                                 "wga_beta=1.0, satimp_beta1=5.0, satimp_beta2=1.0).")
        own = [t for t in self.loss_type if t in OWN_LOSS_TYPES]
        if not own:
            return
        if len(self.loss_type) != 1:
            raise ValueError(
                f"loss_type={self.loss_type}: '{own[0]}' stands alone (it replaces DPO's loss body's inputs); "
                f"use loss_type=['{own[0]}'] or drop '{own[0]}'."
            )
        unsupported = {
            "label_smoothing": (self.label_smoothing, 0.0),
            "rpo_alpha": (getattr(self, "rpo_alpha", None), None),
            "loss_weights": (self.loss_weights, None),
        }
        if own[0] == "dpop":
            unsupported.update({"ld_alpha": (self.ld_alpha, None), "use_weighting": (self.use_weighting, False),
                                "f_divergence_type": (self.f_divergence_type, "reverse_kl")})
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"{name}={value!r} is not supported with loss_type='{own[0]}'; set {name}={default!r}."
                )
        if own[0] == "dpop":
            if not self.dpop_lambda >= 0:
                raise ValueError(f"dpop_lambda must be >= 0 (DPO-Positive's penalty weight), got {self.dpop_lambda}.")
            return
        if self.ceu_exact_gradient and self.use_liger_kernel:
            raise ValueError("ceu_exact_gradient=True does not support use_liger_kernel=True (Liger replaces the "
                             "model's forward); set use_liger_kernel=False or ceu_exact_gradient=False.")
        if not self.ceu_weight >= 0:
            raise ValueError(f"ceu_weight must be >= 0, got {self.ceu_weight}.")
        if self.rejected_objective not in REJECTED_OBJECTIVES:
            raise ValueError(f"rejected_objective={self.rejected_objective!r}: use one of {REJECTED_OBJECTIVES}.")
        if self.ceu_exact_gradient and self.rejected_objective not in CE_U_REJECTED_OBJECTIVES:
            raise ValueError(
                f"ceu_exact_gradient=True supports rejected_objective in {CE_U_REJECTED_OBJECTIVES}, not "
                f"{self.rejected_objective!r}: it computes CE-U's gradient exactly, and the bounded weight of "
                f"'{self.rejected_objective}' (<= 1) needs no exact path. Set ceu_exact_gradient=False."
            )
