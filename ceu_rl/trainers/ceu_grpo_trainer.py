"""CE-U-GRPO: TRL's GRPOTrainer with the gradient ascent on negative-advantage tokens replaced by CE-U.

Only `_compute_loss` changes, and only for `negative_objective="ceu"` ("pg" is TRL's code path). The per-token loss
is `ceu_grpo_token_loss` (CE-U from the per-token log-prob and entropy TRL already computes, on the same
temperature-scaled distribution); masks, KL, vLLM importance-sampling correction and the loss-type aggregation with
GRPO's gradient-accumulation pre-scaling follow TRL 1.16's `_compute_loss`.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from ..objectives import ceu_grpo_token_loss
from .ceu_grpo_config import CEUGRPOConfig
from .vllm_cpu import cpu_vllm_weight_sync


class CEUGRPOTrainer(GRPOTrainer):
    """[`~trl.GRPOTrainer`] with `negative_objective` (see [`CEUGRPOConfig`]). Drop-in: same arguments."""

    _tag_names = ["trl", "grpo", "ceu-rl", "ce-u"]

    def __init__(self, model, reward_funcs, args: CEUGRPOConfig | None = None, *pargs, **kwargs):
        if args is not None and not isinstance(args, CEUGRPOConfig):
            raise ValueError("CEUGRPOTrainer needs a CEUGRPOConfig (it carries negative_objective).")
        with cpu_vllm_weight_sync(args):  # vLLM on CPU: weight sync through vLLM's reload (see vllm_cpu.py)
            super().__init__(model, reward_funcs, args, *pargs, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        self._last_per_token_logps = logps  # pg mode reads it for the p-on-negative-tokens metric
        return (logps, entropies, *rest)

    def _compute_loss(self, model, inputs):
        if self.args.negative_objective == "pg":
            loss = super()._compute_loss(model, inputs)  # TRL's loss, unchanged
            self._log_negative_token_metrics("train" if self.model.training else "eval", inputs)
            return loss
        mode = "train" if self.model.training else "eval"
        self._current_inputs = inputs
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, completion_ids], dim=1), torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1), compute_entropy=True, compute_aux_loss=self.aux_loss_enabled,
        )
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        old_per_token_logps = inputs.get("old_per_token_logps")
        old_per_token_logps = per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps

        per_token_loss = ceu_grpo_token_loss(per_token_logps, entropies, old_per_token_logps, advantages,
                                             self.epsilon_low, self.epsilon_high, self.args.delta)
        # the same masks and weights TRL applies to its per-token loss
        if self.off_policy_mask_threshold is not None:
            per_token_loss = per_token_loss * self.get_off_policy_mask(
                advantages=advantages, per_token_logps=per_token_logps,
                sampling_per_token_logps=inputs.get("sampling_per_token_logps", old_per_token_logps),
                mask=mask, off_policy_threshold=self.off_policy_mask_threshold)
        if self.top_entropy_quantile < 1.0:
            per_token_loss = per_token_loss * self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        coef_1 = torch.exp(per_token_logps - old_per_token_logps)
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
            if self.args.use_bias_correction_kl:
                per_token_kl = per_token_kl * coef_1
            per_token_loss = per_token_loss + self.beta * per_token_kl

        loss = self._aggregate(per_token_loss, mask, inputs, mode)
        if self.aux_loss_enabled:
            normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer

        self._log_metrics(mode, mask, entropies, coef_1, advantages, per_token_logps, per_token_loss,
                          per_token_kl if self.beta != 0.0 else None)
        return loss

    def _aggregate(self, per_token_loss, mask, inputs, mode):
        """TRL 1.16's aggregation per loss type, pre-scaled for gradient accumulation as TRL does."""
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type == "grpo":
            return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if self.loss_type == "bnpo":
            return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
        if self.loss_type == "dr_grpo":
            return (per_token_loss * mask).sum() / (per_token_loss.size(0) * self.max_completion_length) / accumulation
        # dapo: `num_items_in_batch` spans the generation batch; rescale it to one accumulation window
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return (per_token_loss * mask).sum() / normalizer

    def _log_metrics(self, mode, mask, entropies, coef_1, advantages, per_token_logps, per_token_loss, per_token_kl):
        def global_masked_mean(x, m=mask):
            totals = self.accelerator.reduce(torch.stack([(x * m).sum(), m.sum().float()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        metrics = self._metrics[mode]
        if per_token_kl is not None:
            metrics["kl"].append(global_masked_mean(per_token_kl.detach()))
        metrics["entropy"].append(global_masked_mean(entropies.detach()))
        low = ((coef_1 < 1 - self.epsilon_low) & (advantages < 0)).float()
        high = ((coef_1 > 1 + self.epsilon_high) & (advantages > 0)).float()
        metrics["clip_ratio/low_mean"].append(global_masked_mean(low))
        metrics["clip_ratio/high_mean"].append(global_masked_mean(high))
        metrics["clip_ratio/region_mean"].append(global_masked_mean(torch.maximum(low, high)))
        negative = self._log_negative_token_metrics(mode, {**self._current_inputs, "advantages": advantages},
                                                    per_token_logps)
        metrics["loss/ceu_term"].append(global_masked_mean(per_token_loss.detach(), negative))

    def _log_negative_token_metrics(self, mode, inputs, per_token_logps=None):
        """Fraction of completion tokens with A < 0 and their mean p (logged for pg too, for comparisons)."""
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        logps = (self._last_per_token_logps if per_token_logps is None else per_token_logps).detach()
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        negative = (advantages < 0).expand_as(mask).float() * mask
        totals = self.accelerator.reduce(torch.stack([negative.sum(), (logps.exp() * negative).sum(),
                                                      mask.sum().float()]), reduction="sum")
        self._metrics[mode]["ceu/negative_fraction"].append((totals[0] / totals[2].clamp(min=1.0)).item())
        self._metrics[mode]["ceu/p_negative_mean"].append((totals[1] / totals[0].clamp(min=1.0)).item())
        return negative
