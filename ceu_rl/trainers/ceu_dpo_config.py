"""Configuration of CE-U-DPO: TRL's DPOConfig plus `loss_type="ceu"` and `ceu_weight`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig


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

    Parameters:
        ceu_weight (`float`, *optional*, defaults to `1.0`):
            gamma above: the weight of the CE-U term on rejected tokens relative to DPO's own weight on the rejected
            side. `0.0` keeps only the chosen side of DPO's gradient. Only used with `loss_type="ceu"`.
        ceu_exact_gradient (`bool`, *optional*, defaults to `False`):
            Compute CE-U's gradient on rejected tokens exactly in float32, from the policy's last hidden states and LM
            head (`exact_ce_u_logprobs`: `linear_ce_u_loss` on those tokens, masked log-sum-exp), instead of w * grad
            log pi with w = p / (1 - p) and grad log pi both from TRL's float32 fused head, whose relative error grows
            as err(log pi) / (1 - p): ~1e-2 at 1 - p = 1e-4, ~100% at 1 - p = 1e-6 (V = 32k), i.e. on confident
            tokens, where CE-U's weight is largest. An exact w alone would not help: TRL's backward forms the label's
            logit gradient as 1 - exp(log pi), with the same error. Cost: one extra chunked LM-head forward and
            backward over those tokens only (`benchmarks/results/exact_weight.json`). Needs a plain `nn.Linear` LM
            head (no PEFT adapter on it), no Liger kernel, no logit scaling or soft-capping. Only used with
            `loss_type="ceu"`.
    """

    ceu_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight gamma of the CE-U term on rejected tokens (CE-U-DPO, loss_type='ceu'); 0 keeps only "
            "DPO's chosen-side gradient."
        },
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
        if "ceu" not in self.loss_type:
            return
        if self.loss_type != ["ceu"]:
            raise ValueError(
                f"loss_type={self.loss_type}: 'ceu' stands alone (it replaces DPO's rejected-side term); "
                "use loss_type=['ceu'] or drop 'ceu'."
            )
        unsupported = {
            "label_smoothing": (self.label_smoothing, 0.0),
            "rpo_alpha": (getattr(self, "rpo_alpha", None), None),
            "loss_weights": (self.loss_weights, None),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"{name}={value!r} is not supported with loss_type='ceu' (CE-U-DPO); set {name}={default!r}."
                )
        if self.ceu_exact_gradient and self.use_liger_kernel:
            raise ValueError("ceu_exact_gradient=True does not support use_liger_kernel=True (Liger replaces the "
                             "model's forward); set use_liger_kernel=False or ceu_exact_gradient=False.")
        if not self.ceu_weight >= 0:
            raise ValueError(f"ceu_weight must be >= 0, got {self.ceu_weight}.")
