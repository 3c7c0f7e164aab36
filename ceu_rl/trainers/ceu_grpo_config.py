"""Configuration of CE-U-GRPO: TRL's GRPOConfig plus `negative_objective`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


@dataclass
class CEUGRPOConfig(GRPOConfig):
    r"""
    [`~trl.GRPOConfig`] with `negative_objective`: what tokens of negative-advantage completions receive.

    GRPO's per-token surrogate -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) (Shao et al., "DeepSeekMath",
    https://huggingface.co/papers/2402.03300) has, for A < 0 and where not clipped, the gradient |A| r grad log pi:
    gradient ascent on the sampled tokens of bad completions, vanishing on confident tokens and never stopping.
    With `"ceu"` those tokens get |A| sg(r) 1[r >= 1 - eps_low] CE-U(token) instead (1[1 - eps_low <= r <= delta]
    with `delta`): bounded, fading once the token is unlikely (Bo Yang, "CE-U: Cross Entropy Unlearning",
    https://huggingface.co/papers/2503.01224, Sec. 5). Tokens with A >= 0, the KL term, masks, importance-sampling
    correction and aggregation stay TRL's.

    Parameters:
        negative_objective (`str`, *optional*, defaults to `"ceu"`):
            `"ceu"` (CE-U on negative-advantage tokens) or `"pg"` (TRL's policy gradient, exactly).
    """

    negative_objective: str = field(
        default="ceu",
        metadata={"help": "'ceu': CE-U on negative-advantage tokens; 'pg': TRL's GRPO unchanged."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.negative_objective not in ("ceu", "pg"):
            raise ValueError(f"negative_objective={self.negative_objective!r}: use 'ceu' or 'pg'.")
        if self.negative_objective == "pg":
            return
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} is not supported with negative_objective='ceu'; use one of "
                f"{SUPPORTED_LOSS_TYPES} or negative_objective='pg'."
            )
        unsupported = {
            "importance_sampling_level": (self.importance_sampling_level, "token"),
            "use_liger_kernel": (self.use_liger_kernel, False),
            "padding_free": (getattr(self, "padding_free", False), False),
            "entropy_coef": (self.entropy_coef, 0.0),
            "use_adaptive_entropy": (self.use_adaptive_entropy, False),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"{name}={value!r} is not supported with negative_objective='ceu' (CE-U-GRPO); set "
                    f"{name}={default!r} or negative_objective='pg'."
                )
