"""Configuration of CE-U-GRPO: TRL's GRPOConfig plus the per-token gradient weights of the GRPO family (CE-U's
`negative_objective` and the field's fixes: NSR / W-REINFORCE, Advantage Reweighting, Clip-Cov, NTHR-style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from ..objectives.reweighted_logprobs import NEGATIVE_OBJECTIVES
from ..objectives.token_weights import SIBLING_NEGATIVE_OBJECTIVES, TOKEN_WEIGHTINGS

# The default `negative_objective`: one constant. "pg" (TRL's GRPO) because no CE-U variant reached >= 0.8x GRPO's
# reward gain with entropy <= 1.1x in any task/lr cell of docs/grpo_compare (5 seeds each); "ceu_full" collapsed RL in
# 30/30 runs. The best CE-U variant there is "ceu_min" (stable at lr 1e-4 only, 0.43-0.50x GRPO's gain).
# Issue 17 (docs/grpo_compare, binary reward, pass@k): no CE-U variant reached >= 0.8x GRPO's pass@1 gain with
# entropy >= GRPO's in every task at one rate either (best "ceu_min": 0.34-0.49x, more entropy kept).
DEFAULT_NEGATIVE_OBJECTIVE = "pg"
# Older names still accepted (the value is kept as given; the trainer resolves it).
NEGATIVE_OBJECTIVE_ALIASES = {"ceu": "ceu_full"}
# TRL 1.16's loss types; every one has a push-down term on negative-advantage tokens (see the docstring).
SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "luspo", "sapo", "vespo")
# The objectives whose CE-U tokens `ceu_exact_gradient` can compute exactly (pure CE-U weight on a token set).
EXACT_GRADIENT_OBJECTIVES = ("ceu_full", "ceu_min", "ceu_prefix")


@dataclass
class CEUGRPOConfig(GRPOConfig):
    r"""
    [`~trl.GRPOConfig`] with `negative_objective`: what the tokens of negative-advantage completions receive.

    GRPO's per-token surrogate -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) (Shao et al., "DeepSeekMath",
    https://huggingface.co/papers/2402.03300) has, for A < 0 and where not clipped, the gradient |A| r grad log pi:
    gradient ascent on the sampled tokens of bad completions, whose push on the token's own logit is |A| r (1 - p):
    vanishing on confident tokens, never stopping on unlikely ones. CE-U (Bo Yang, "CE-U: Cross Entropy Unlearning",
    https://huggingface.co/papers/2503.01224, Sec. 5) has the gradient w grad log p with w = p / (1 - p), a logit push
    p: bounded, fading once the token is unlikely. Every variant below multiplies the gradient of log pi on tokens with
    A < 0 by a weight w (value unchanged; `reweighted_logprobs`), then runs TRL's own loss body; tokens with A >= 0,
    masks, importance-sampling corrections, the entropy bonus and the aggregation of `loss_type` are TRL's.

    Per-token weight on a token of a completion with A < 0 (p = pi(token); logit push = |A| r (1 - p) w):

    - `"pg"`: w = 1. TRL's GRPO exactly (its code path, bit for bit).
    - `"ceu_full"` (the CE-U-GRPO of the first release; `"ceu"` is an alias): w = p / (1 - p), logit push p. On a
      token shared by the positive and negative completions of a group the pull (1 - p) and push p balance at
      p* = P / (P + M) (P, M: the positive and negative advantage weight on it), p* = 1/2 for a balanced group: it
      drags confident shared tokens (format, common prefixes) to 1/2 (`analysis/DERIVATIONS.md`, Sec. 8).
    - `"ceu_min"`: w = min(1, p / (1 - p)), logit push min(p, 1 - p): CE-U's below p = 1/2 (fades to 0 as p -> 0),
      the policy gradient's above (no pull of confident shared tokens toward 1/2).
    - `"ceu_prefix"`: w = 1 on tokens t < d, p / (1 - p) on t >= d, d = the first position where the completion
      differs from every positive-advantage completion of its group (prefix credit): tokens a bad completion shares,
      context and token, with a good one keep the policy gradient (which cancels there); CE-U acts on its own tokens.
    - `"ceu_mix"`: w = (1 - lambda) + lambda p / (1 - p), lambda = `ceu_mix_lambda` in [0, 1]: the policy gradient
      at 0, `"ceu_full"` at 1; logit push (1 - lambda)(1 - p) + lambda p.
    - `"wga"`: w = p^`wga_beta`, logit push (1 - p) p^beta: WGA's weight (Wang et al., "Rethinking LLM Unlearning
      Objectives", https://huggingface.co/papers/2502.19301). Grows with p like CE-U's but bounded by 1: the push
      still vanishes on confident tokens, as the policy gradient's.
    - `"satimp"`: w = p^`satimp_beta1` (1 - p)^`satimp_beta2`, logit push p^beta1 (1 - p)^(1 + beta2): SatImp's
      weight (Yang et al., "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning",
      https://huggingface.co/papers/2505.11953). With these two, CE-U-GRPO's comparison asks whether what helps is
      CE-U's weight or any weight that grows with p (`analysis/DERIVATIONS.md`, Sec. 10).

    The field's fixes act on the same lever and multiply the weight above (all default to "off"; every factor is a
    constant per token, so the loss value stays TRL's):

    - `positive_weight` (lambda of W-REINFORCE, Zhu et al., "The Surprising Effectiveness of Negative Reinforcement
      in LLM Reasoning", https://huggingface.co/papers/2506.01347): w *= positive_weight on tokens of A > 0
      completions; 0 is NSR (negative samples only), 0.1 W-REINFORCE's setting. The paper's objectives use raw
      rewards +1 / -1 (REINFORCE, no baseline); here the advantages stay group-normalised (TRL's `scale_rewards`), so
      a negative sample's weight depends on its group's success rate (|A| = r / sd for a group with success share r
      on a failure) and a group with no success or no failure contributes nothing, as in GRPO.
    - `token_weighting="advantage_reweighting"` (Yang et al., "Do Not Let Low-Probability Tokens Over-Dominate in RL
      for LLMs", https://huggingface.co/papers/2505.12929): A <- (alpha p + 1 - alpha) A on every token, alpha =
      `ar_alpha` (default 0.3, the paper's); p is the current policy's (detached; the paper's pi_old, equal on the
      first pass over a generation). CE-U's p / (1 - p) is the extreme of the same tilt toward confident tokens.
    - `token_weighting="clip_cov"` (Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning
      Language Models", https://huggingface.co/papers/2505.22617): w = 0 on the `clip_cov_ratio` share of valid
      tokens of the loss batch with the highest centred covariance (log p - mean)(A - mean) (deterministic top of
      the ranking instead of the paper's random draw within a covariance band; `clip_cov_weight`).
    - `shared_negative_weight` (NTHR-style; Deng et al., "On the Effect of Negative Gradient in Group Relative Deep
      Reinforcement Optimization", https://huggingface.co/papers/2505.18830): w *= shared_negative_weight on tokens
      of A < 0 completions that a positive completion of the group shares (identical prefix: t < d as above). NTHR
      scores a negative token's influence on the positives with hidden-state similarities; the identical-prefix
      tokens are its exact-match case, the part that is a per-token weight without another forward pass.
    - a Python hook, `CEUGRPOTrainer(..., token_weight_fn=f)` (not a config field: a callable does not go through
      YAML): f(logprobs=, advantages=, completion_mask=, completion_ids=, divergence_index=) returns a finite,
      non-negative weight of logprobs' shape (B, T), multiplied in last.

    With the other loss types the weight multiplies the same push-down term (its sign checked: for A < 0 each loss
    has a gradient c |A| grad log pi with c >= 0): `"cispo"` c = sg(min(r, eps_high)); `"sapo"`
    c = 4 s (1 - s) r, s = sigmoid(tau_neg (r - 1)); `"vespo"` c = phi(sequence ratio) (detached); `"luspo"` as
    grpo with a sequence sum. `importance_sampling_level="sequence"` (GSPO): the ratio s = exp(mean_t log(pi/pi_old))
    gives a negative completion's sequence term the gradient |A| s (1/|o|) sum_t grad log pi(t) (TRL's aggregation
    then counts it once per token), which becomes |A| s (1/|o|) sum_t w_t grad log pi(t). The entropy bonus
    (`entropy_coef`, static or adaptive) is an additive term and stays TRL's. With `beta != 0` the KL term keeps
    TRL's gradient (not reweighted) and needs `use_bias_correction_kl=False`: its importance weight is the ratio that
    carries the reweighting.

    Parameters:
        negative_objective (`str`, *optional*, defaults to `DEFAULT_NEGATIVE_OBJECTIVE`, this module's constant):
            one of `"pg"`, `"ceu_full"`, `"ceu_min"`, `"ceu_prefix"`, `"ceu_mix"`, `"wga"`, `"satimp"` (`"ceu"` =
            `"ceu_full"`).
        ceu_exact_gradient (`bool`, *optional*, defaults to `False`):
            Compute CE-U's gradient on the tokens with CE-U's weight (A < 0; for `"ceu_min"` only p < 1/2, for
            `"ceu_prefix"` only t >= d) exactly in float32, from the policy's last hidden states and LM head
            (`exact_ce_u_logprobs`: `linear_ce_u_loss` on those tokens, masked log-sum-exp), instead of w * grad log
            pi with w = p / (1 - p) and grad log pi both from TRL's float32 fused head, whose relative error grows as
            err(log pi) / (1 - p): ~1e-2 at 1 - p = 1e-4, ~100% at 1 - p = 1e-6 (V = 32k), i.e. on confident tokens,
            where CE-U's weight is largest. An exact w alone would not help: TRL's backward forms the label's logit
            gradient as 1 - exp(log pi), with the same error. Cost: one extra chunked LM-head forward and backward
            over those tokens only (`benchmarks/results/exact_weight.json`). Needs a plain `nn.Linear` LM head (no
            PEFT adapter on it), no Liger kernel, no logit scaling or soft-capping. Ignored with `"pg"`. Only with
            `"ceu_full"`, `"ceu_min"`, `"ceu_prefix"`, `token_weighting="none"` and `shared_negative_weight=1`.
        ceu_mix_lambda (`float`, *optional*, defaults to `0.5`):
            `"ceu_mix"`'s lambda in [0, 1]: w = (1 - lambda) + lambda p / (1 - p) on A < 0 tokens.
        wga_beta (`float`, *optional*, defaults to `1.0`):
            `"wga"`'s exponent (>= 0): w = p^beta on A < 0 tokens (1.0: open-unlearning's WGA default).
        satimp_beta1 (`float`, *optional*, defaults to `5.0`), satimp_beta2 (`float`, *optional*, defaults to `1.0`):
            `"satimp"`'s exponents (>= 0): w = p^beta1 (1 - p)^beta2 on A < 0 tokens (open-unlearning's defaults).
        positive_weight (`float`, *optional*, defaults to `1.0`):
            Weight (>= 0) on tokens of positive-advantage completions: 0 = NSR, 0.1 = W-REINFORCE (arXiv 2506.01347).
        token_weighting (`str`, *optional*, defaults to `"none"`):
            `"none"`, `"advantage_reweighting"` (arXiv 2505.12929) or `"clip_cov"` (arXiv 2505.22617).
        ar_alpha (`float`, *optional*, defaults to `0.3`):
            Advantage Reweighting's alpha in [0, 1]: w = alpha p + 1 - alpha on every token.
        clip_cov_ratio (`float`, *optional*, defaults to `2e-4`):
            Clip-Cov's share in [0, 1] of valid tokens (highest covariance of log p and A) that get no gradient;
            floor(ratio * tokens) of them, so a small batch needs a larger ratio than the paper's 2e-4.
        shared_negative_weight (`float`, *optional*, defaults to `1.0`):
            NTHR-style weight in [0, 1] on negative-advantage tokens shared (identical prefix) with a positive
            completion of the group (arXiv 2505.18830).
    """

    negative_objective: str = field(
        default=DEFAULT_NEGATIVE_OBJECTIVE,
        metadata={"help": "What negative-advantage tokens get: 'pg' (TRL's GRPO unchanged), 'ceu_full' (CE-U), "
                  "'ceu_min' (CE-U below p=1/2, PG above), 'ceu_prefix' (CE-U after divergence from every "
                  "positive completion of the group). 'ceu' = 'ceu_full'."},
    )
    ceu_exact_gradient: bool = field(
        default=False,
        metadata={"help": "Exact float32 CE-U gradient on CE-U-weighted negative tokens from the last hidden "
                  "states and LM head (one extra chunked head forward+backward over those tokens); default: "
                  "w = p/(1-p) and grad log p from TRL's fused head, inexact where 1 - p < ~1e-4. Needs a plain "
                  "nn.Linear head."},
    )

    ceu_mix_lambda: float = field(
        default=0.5,
        metadata={"help": "negative_objective='ceu_mix': w = (1 - lambda) + lambda p/(1-p) on A < 0 tokens; "
                  "lambda in [0, 1] (0: PG, 1: CE-U)."},
    )
    wga_beta: float = field(
        default=1.0,
        metadata={"help": "negative_objective='wga': w = p^beta on A < 0 tokens, beta >= 0 (arXiv 2502.19301)."},
    )
    satimp_beta1: float = field(
        default=5.0,
        metadata={"help": "negative_objective='satimp': w = p^beta1 (1-p)^beta2 on A < 0 tokens, beta1 >= 0."},
    )
    satimp_beta2: float = field(
        default=1.0,
        metadata={"help": "negative_objective='satimp': beta2 >= 0 (arXiv 2505.11953)."},
    )
    positive_weight: float = field(
        default=1.0,
        metadata={"help": "Gradient weight (>= 0) on tokens of A > 0 completions: 1 GRPO, 0 NSR, 0.1 W-REINFORCE "
                  "(Zhu et al. 2025, arXiv 2506.01347; here with group-normalised advantages)."},
    )
    token_weighting: str = field(
        default="none",
        metadata={"help": "Extra per-token weight: 'none', 'advantage_reweighting' (w = alpha p + 1 - alpha, "
                  "Yang et al. 2025, arXiv 2505.12929) or 'clip_cov' (no gradient on the highest-covariance "
                  "tokens, Cui et al. 2025, arXiv 2505.22617)."},
    )
    ar_alpha: float = field(
        default=0.3,
        metadata={"help": "token_weighting='advantage_reweighting': alpha in [0, 1] (paper: 0.3)."},
    )
    clip_cov_ratio: float = field(
        default=2e-4,
        metadata={"help": "token_weighting='clip_cov': share in [0, 1] of valid tokens detached (paper: 2e-4)."},
    )
    shared_negative_weight: float = field(
        default=1.0,
        metadata={"help": "NTHR-style (arXiv 2505.18830): weight in [0, 1] on A < 0 tokens sharing their prefix "
                  "with an A > 0 completion of the group; 1 = off."},
    )

    @property
    def reweights_gradient(self) -> bool:
        """False when every family option is off ("pg", weights 1, no token weighting): TRL's GRPO code path."""
        return (self.negative_objective_name != "pg" or self.positive_weight != 1.0
                or self.token_weighting != "none" or self.shared_negative_weight != 1.0)

    @property
    def negative_objective_name(self) -> str:
        """`negative_objective` with aliases resolved ("ceu" -> "ceu_full")."""
        return NEGATIVE_OBJECTIVE_ALIASES.get(self.negative_objective, self.negative_objective)

    def __post_init__(self):
        super().__post_init__()
        choices = (*NEGATIVE_OBJECTIVES, *SIBLING_NEGATIVE_OBJECTIVES, *NEGATIVE_OBJECTIVE_ALIASES)
        if self.negative_objective not in choices:
            raise ValueError(f"negative_objective={self.negative_objective!r} is not known; use one of {choices}.")
        if self.token_weighting not in TOKEN_WEIGHTINGS:
            raise ValueError(f"token_weighting={self.token_weighting!r} is not known; use one of {TOKEN_WEIGHTINGS}.")
        for unit in ("ceu_mix_lambda", "ar_alpha", "clip_cov_ratio", "shared_negative_weight"):
            if not 0.0 <= getattr(self, unit) <= 1.0:
                raise ValueError(f"{unit}={getattr(self, unit)} is out of range: use a value in [0, 1].")
        for name in ("wga_beta", "satimp_beta1", "satimp_beta2"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name}={getattr(self, name)} is out of range: use a value >= 0.")
        if not self.positive_weight >= 0.0:
            raise ValueError(f"positive_weight={self.positive_weight} is out of range: use a value >= 0 (0: NSR, "
                             "0.1: W-REINFORCE, 1: GRPO).")
        name = self.negative_objective_name
        if not self.reweights_gradient:
            return
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            what = f"negative_objective={name!r}" if name != "pg" else "the family's token weights"
            raise ValueError(
                f"loss_type={self.loss_type!r} is not supported with {what}; use one of {SUPPORTED_LOSS_TYPES} or "
                "negative_objective='pg' with positive_weight=1, token_weighting='none', shared_negative_weight=1."
            )
        if self.ceu_exact_gradient and name != "pg" and (
                name not in EXACT_GRADIENT_OBJECTIVES or self.token_weighting != "none"
                or self.shared_negative_weight != 1.0):
            raise ValueError(
                f"ceu_exact_gradient=True supports negative_objective in {EXACT_GRADIENT_OBJECTIVES} with "
                f"token_weighting='none' and shared_negative_weight=1 (got {name!r}, {self.token_weighting!r}, "
                f"{self.shared_negative_weight}): it replaces the gradient of CE-U's tokens outright. Set "
                "ceu_exact_gradient=False."
            )
        if self.ceu_exact_gradient and self.use_liger_kernel:
            raise ValueError("ceu_exact_gradient=True does not support use_liger_kernel=True (Liger replaces the "
                             "model's forward); set use_liger_kernel=False or ceu_exact_gradient=False.")
        if self.beta != 0.0 and self.use_bias_correction_kl:
            raise ValueError(
                f"use_bias_correction_kl=True with beta={self.beta} is not supported with negative_objective="
                f"{name!r} or the family's token weights: the KL term's importance weight is the ratio that carries "
                "the reweighting, so the KL gradient would be reweighted too. Set use_bias_correction_kl=False "
                "(the KL term then keeps TRL's gradient exactly), beta=0, or negative_objective='pg'."
            )
