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

    Parameters:
        ceu_weight (`float`, *optional*, defaults to `1.0`):
            gamma above: the weight of the CE-U term on rejected tokens relative to DPO's own weight on the rejected
            side. `0.0` keeps only the chosen side of DPO's gradient. Only used with `loss_type="ceu"`.
    """

    ceu_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight gamma of the CE-U term on rejected tokens (CE-U-DPO, loss_type='ceu'); 0 keeps only "
            "DPO's chosen-side gradient."
        },
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
            "use_weighting": (self.use_weighting, False),
            "ld_alpha": (self.ld_alpha, None),
            "rpo_alpha": (getattr(self, "rpo_alpha", None), None),
            "use_liger_kernel": (self.use_liger_kernel, False),
            "padding_free": (self.padding_free, False),
            "f_divergence_type": (self.f_divergence_type, "reverse_kl"),
            "loss_weights": (self.loss_weights, None),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"{name}={value!r} is not supported with loss_type='ceu' (CE-U-DPO); set {name}={default!r}."
                )
        if not self.ceu_weight >= 0:
            raise ValueError(f"ceu_weight must be >= 0, got {self.ceu_weight}.")
