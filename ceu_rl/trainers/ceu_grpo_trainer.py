"""CE-U-GRPO: TRL's GRPOTrainer with the push-down on negative-advantage tokens reweighted (CE-U and variants).

The trainer changes only where the log-probs come from. In `_compute_loss` the per-token log-probs of tokens with
A < 0 are replaced by `reweighted_logprobs(l, w)` (same value, gradient w * grad l, w from `negative_objective`) and
TRL's own `_compute_loss` runs on them: clipping, masks, importance sampling, every `loss_type`, the entropy bonus and
the aggregation are TRL's code. Two consequences: the loss value is TRL's (CE-U's value on the negative tokens is
logged as `loss/ceu_term`), and TRL's KL term, which reads the same log-probs, gets its reference shifted by
(surrogate - log-probs), a tensor of value 0, so that its gradient stays TRL's (tested against a full-logits formula).
`negative_objective="wga"` / `"satimp"` use CE-U's unlearning siblings' weights p^beta / p^beta1 (1 - p)^beta2 on
the same tokens instead (`sibling_negative_weight`). The family's other weights (`positive_weight`,
`token_weighting`, `shared_negative_weight`, a `token_weight_fn` hook) multiply w on the same seam. `negative_objective="pg"` with every family option off does not touch the log-probs:
TRL's GRPO bit for bit. With `ceu_exact_gradient=True` the
CE-U-weighted tokens get their gradient from `linear_ce_u_loss` on the policy's last hidden states instead
(`exact_ce_u_logprobs`; the same value), exact in float32 where 1 - p is tiny.
"""

from __future__ import annotations

import contextlib

import torch
from trl import GRPOTrainer

from ..objectives import (
    ce_u_loss_from_logprobs,
    divergence_from_positives,
    exact_ce_u_logprobs,
    negative_token_weight,
    reweighted_logprobs,
)
from ..objectives.reweighted_logprobs import ce_u_token_mask
from ..objectives.token_weights import (
    SIBLING_NEGATIVE_OBJECTIVES,
    advantage_reweighting_weight,
    clip_cov_weight,
    positive_token_weight,
    shared_negative_token_weight,
    sibling_negative_weight,
)
from .ceu_grpo_config import CEUGRPOConfig
from .exact_ce_u_head import check_exact_head, head_weight_and_bias, recorded_last_hidden_states, scored_hidden_states
from .input_checks import check_grpo_inputs
from .vllm_cpu import cpu_vllm_weight_sync


class CEUGRPOTrainer(GRPOTrainer):
    """[`~trl.GRPOTrainer`] with `negative_objective` and the family's token weights (see [`CEUGRPOConfig`]).
    Drop-in: same arguments, plus `token_weight_fn`: an optional callable f(logprobs=, advantages=, completion_mask=,
    completion_ids=, divergence_index=) -> (B, T) finite weights >= 0 (no gradient), multiplied onto the gradient of
    log pi per token after the config's weights (a researcher's own weighting without subclassing)."""

    _tag_names = ["trl", "grpo", "ceu-rl", "ce-u"]

    def __init__(self, model, reward_funcs, args: CEUGRPOConfig | None = None, *pargs, token_weight_fn=None,
                 **kwargs):
        if args is not None and not isinstance(args, CEUGRPOConfig):
            raise ValueError("CEUGRPOTrainer needs a CEUGRPOConfig (it carries negative_objective).")
        if token_weight_fn is not None and not callable(token_weight_fn):
            raise ValueError(f"token_weight_fn must be a callable returning per-token weights; got "
                             f"{type(token_weight_fn).__name__}.")
        if token_weight_fn is not None and args is not None and args.ceu_exact_gradient:
            raise ValueError("token_weight_fn does not combine with ceu_exact_gradient=True (the exact path replaces "
                             "the gradient of CE-U's tokens outright); set ceu_exact_gradient=False.")
        self.token_weight_fn = token_weight_fn
        reward_funcs = check_grpo_inputs(reward_funcs, pargs, kwargs)  # clear errors for bad data and rewards
        with cpu_vllm_weight_sync(args, model):  # vLLM on CPU: weight sync through vLLM's reload (see vllm_cpu.py)
            super().__init__(model, reward_funcs, args, *pargs, **kwargs)
        if self.args.ceu_exact_gradient and self.args.negative_objective_name != "pg":
            check_exact_head(self.model, self.args)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        # Groups are contiguous only here (TRL shuffles the batch afterwards): record where each completion leaves
        # every positive completion of its group, for ceu_prefix and the shared-token metrics.
        output["ceu_divergence_index"] = self._divergence_index(output)
        return output

    def _divergence_index(self, output):
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        ids = self.accelerator.pad_across_processes(output["completion_ids"], dim=1, pad_index=0)
        mask = self.accelerator.pad_across_processes(output["completion_mask"], dim=1, pad_index=0)
        advantages = output["advantages"].reshape(ids.size(0), -1)[:, :1]
        ids, mask, advantages = self.accelerator.gather((ids, mask, advantages))  # groups may span processes
        index = divergence_from_positives(ids, mask, advantages, group_size)
        local = output["completion_ids"].size(0)
        return index[self.accelerator.process_index * local:(self.accelerator.process_index + 1) * local]

    def _compute_loss(self, model, inputs):
        if not self.args.reweights_gradient and self.token_weight_fn is None:
            loss = super()._compute_loss(model, inputs)  # TRL's loss, unchanged
            self._log_negative_token_metrics(inputs, self._last_per_token_logps)
            return loss
        # a copy: the KL shift below must not leak into the buffered batch (reused when num_iterations > 1)
        self._reweight_inputs = dict(inputs)
        try:
            return super()._compute_loss(model, self._reweight_inputs)
        finally:
            self._reweight_inputs = None

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        inputs = getattr(self, "_reweight_inputs", None)
        if inputs is None:  # pg, or TRL's own calls (old / reference log-probs at generation time)
            logps, entropies, *rest = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
            self._last_per_token_logps = logps  # pg's metrics read it
            return (logps, entropies, *rest)
        exact = self.args.ceu_exact_gradient and self.args.negative_objective_name != "pg"
        with recorded_last_hidden_states(model) if exact else contextlib.nullcontext() as hidden:
            logps, entropies, *rest = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        advantages = inputs["advantages"]
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        objective, divergence = self.args.negative_objective_name, inputs.get("ceu_divergence_index")
        if objective in SIBLING_NEGATIVE_OBJECTIVES:  # WGA's / SatImp's weight instead of CE-U's
            weight = sibling_negative_weight(objective, logps.detach(), advantages, self.args.wga_beta,
                                             self.args.satimp_beta1, self.args.satimp_beta2)
        else:
            weight = negative_token_weight(objective, logps.detach(), advantages, divergence,
                                           self.args.ceu_mix_lambda)
        weight = weight * self._family_weight(logps.detach(), advantages, inputs, divergence)
        surrogate = reweighted_logprobs(logps, weight)
        if exact:  # CE-U's tokens get linear_ce_u_loss's exact gradient instead of w * TRL's grad log pi
            ceu_tokens = ce_u_token_mask(objective, logps, advantages, divergence) & inputs["completion_mask"].bool()
            head_weight, head_bias = head_weight_and_bias(model)
            surrogate = exact_ce_u_logprobs(surrogate, ceu_tokens, scored_hidden_states(hidden, logps.size(1)),
                                            head_weight, inputs["completion_ids"], head_bias, self.temperature)
        if inputs.get("ref_per_token_logps") is not None:
            # TRL's KL reads the log-probs too: ref + (surrogate - logps) has ref's value and makes
            # ref - surrogate = ref - logps for autograd, so the KL gradient is not reweighted
            inputs["ref_per_token_logps"] = inputs["ref_per_token_logps"] + (surrogate - logps)
        self._log_negative_token_metrics(inputs, logps, entropies, weight)
        return (surrogate, entropies, *rest)

    def _family_weight(self, logps, advantages, inputs, divergence):
        """The product of the config's non-CE-U weights and the user's hook (1 where all are off)."""
        args, weight = self.args, torch.ones_like(logps)
        mask = inputs["completion_mask"]
        mask = mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]
        if args.positive_weight != 1.0:
            weight = weight * positive_token_weight(logps, advantages, args.positive_weight)
        if args.token_weighting == "advantage_reweighting":
            weight = weight * advantage_reweighting_weight(logps, args.ar_alpha)
        elif args.token_weighting == "clip_cov":
            weight = weight * clip_cov_weight(logps, advantages, mask, args.clip_cov_ratio)
        if args.shared_negative_weight != 1.0:
            if divergence is None:
                raise ValueError("shared_negative_weight needs the batch's ceu_divergence_index (set by "
                                 "CEUGRPOTrainer._generate_and_score_completions).")
            weight = weight * shared_negative_token_weight(logps, advantages, divergence, args.shared_negative_weight)
        if self.token_weight_fn is not None:
            with torch.no_grad():
                extra = self.token_weight_fn(logprobs=logps, advantages=advantages.expand_as(logps),
                                             completion_mask=mask, completion_ids=inputs["completion_ids"],
                                             divergence_index=divergence)
            extra = torch.as_tensor(extra, dtype=logps.dtype, device=logps.device)
            if extra.shape != logps.shape or not bool(torch.isfinite(extra).all()) or bool((extra < 0).any()):
                raise ValueError(f"token_weight_fn must return finite weights >= 0 of shape {tuple(logps.shape)} "
                                 f"(logprobs'); got shape {tuple(extra.shape)}.")
            weight = weight * extra.detach()
        return weight

    def _log_negative_token_metrics(self, inputs, logps, entropies=None, weight=None):
        """Fraction of completion tokens with A < 0 and their mean p; the share of them a positive completion of
        the group also has (t < divergence index) and their mean p; for CE-U variants the mean weight and CE-U's
        value |A| CE-U(token) on them (logged for pg too, except the last two, for comparisons)."""
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        mask = mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]
        advantages = inputs["advantages"]
        advantages = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages).expand_as(mask)
        negative = (advantages < 0).float() * mask
        position = torch.arange(mask.size(1), device=mask.device)
        divergence = inputs.get("ceu_divergence_index")  # absent from batches not built by this trainer
        shared = negative * (position < (0 if divergence is None else divergence.reshape(-1, 1))).float()
        p = logps.detach().exp()
        sums = [negative.sum(), (p * negative).sum(), shared.sum(), (p * shared).sum(), mask.sum().float()]
        if weight is not None:
            ceu = ce_u_loss_from_logprobs(logps.detach(), entropies.detach(), mask.bool(), reduction="none")
            sums += [(weight * negative).sum(), (advantages.abs() * ceu * negative).sum()]
        totals = self.accelerator.reduce(torch.stack(sums).float(), reduction="sum").tolist()
        count = max(totals[0], 1.0)
        metrics = self._metrics[mode]
        metrics["ceu/negative_fraction"].append(totals[0] / max(totals[4], 1.0))
        metrics["ceu/p_negative_mean"].append(totals[1] / count)
        metrics["ceu/shared_fraction"].append(totals[2] / count)
        metrics["ceu/p_shared_mean"].append(totals[3] / max(totals[2], 1.0))
        if weight is not None:
            metrics["ceu/weight_mean"].append(totals[5] / count)
            metrics["loss/ceu_term"].append(totals[6] / count)
