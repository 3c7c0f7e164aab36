"""CE-U-DPO: TRL's DPOTrainer with the gradient ascent on rejected tokens replaced by CE-U.

The trainer changes only where the log-probs come from. With `loss_type="ceu"` TRL's own `_compute_loss` runs its
`"sigmoid"` loss, but the policy's per-token log-probs of rejected completion tokens are `reweighted_logprobs(l, w)`
with w = ceu_weight * p / (1 - p): same value, gradient w * grad l. DPO's gradient on a rejected token,
beta sigma(-u) grad log pi (gradient ascent), becomes beta sigma(-u) ceu_weight grad CE-U, which is CE-U-DPO
(`ceu_dpo_loss`) exactly, and every option of TRL's loss body (f-divergences, LD-DPO's `ld_alpha`, WPO's
`use_weighting`) applies to it. The loss value is TRL's DPO value; CE-U's value is logged (`loss/ceu_term`).
With `rejected_objective="ceu_prefix"` the rejected tokens of the prefix the pair's completions share keep DPO's
gradient (w = 1); with `"wga"` / `"satimp"` w is CE-U's siblings' weight instead (ceu_weight * p^wga_beta, or
ceu_weight * p^satimp_beta1 (1 - p)^satimp_beta2), and `loss/wga_term` / `loss/satimp_term` is logged in place of
`loss/ceu_term`. Every other `loss_type` is TRL's code path untouched, except the DPO-Positive baseline
`loss_type="dpop"`: TRL's "sigmoid" loss body on chosen log-probs that carry DPOP's penalty (`dpo_positive_penalty`).
With `ceu_exact_gradient=True` the CE-U tokens get their gradient from `linear_ce_u_loss` on the policy's last hidden
states (`exact_ce_u_logprobs`; same value), exact in float32 where 1 - p is tiny.
"""

from __future__ import annotations

import contextlib

import torch
from trl import DPOTrainer

from ..objectives import ce_u_loss_from_logprobs, exact_ce_u_logprobs, reweighted_logprobs
from ..objectives.dpo_weights import (
    CE_U_REJECTED_OBJECTIVES,
    dpo_positive_penalty,
    rejected_ce_u_mask,
    rejected_token_weight,
    shared_prefix_mask,
)
from .ceu_dpo_config import OWN_LOSS_TYPES, CEUDPOConfig
from .exact_ce_u_head import check_exact_head, head_weight_and_bias, recorded_last_hidden_states, scored_hidden_states
from .input_checks import check_preference_inputs


class CEUDPOTrainer(DPOTrainer):
    """[`~trl.DPOTrainer`] that also accepts `loss_type="ceu"` (see [`CEUDPOConfig`]). Drop-in: same arguments."""

    _tag_names = ["trl", "dpo", "ceu-rl", "ce-u"]

    def __init__(self, model, ref_model=None, args: CEUDPOConfig | None = None, *pargs, **kwargs):
        own = [t for t in getattr(args, "loss_type", None) or [] if t in OWN_LOSS_TYPES]
        if own and not isinstance(args, CEUDPOConfig):
            raise ValueError(f"loss_type='{own[0]}' needs a CEUDPOConfig (it carries ceu_weight, rejected_objective, "
                             "dpop_lambda), not a plain DPOConfig.")
        self._is_ceu = args is not None and getattr(args, "loss_type", None) == ["ceu"]
        self._is_dpop = args is not None and getattr(args, "loss_type", None) == ["dpop"]
        check_preference_inputs(pargs, kwargs)  # empty dataset/strings, no chat template: clear errors
        with _runs_as_sigmoid(args if own else None):
            super().__init__(model, ref_model, args, *pargs, **kwargs)
        if self._is_ceu and self.args.ceu_exact_gradient:
            check_exact_head(self.model, self.args)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        _check_preference_dataset(dataset, dataset_name, check_empty_rejected=self._is_ceu)
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _compute_loss(self, model, inputs, return_outputs):
        if self._is_dpop:
            return self._compute_dpop_loss(model, inputs, return_outputs)
        if not self._is_ceu:
            return super()._compute_loss(model, inputs, return_outputs)
        shared = None
        if self.args.rejected_objective == "ceu_prefix":
            shared = shared_prefix_mask(inputs["input_ids"][:, 1:], inputs["completion_mask"][:, 1:])
        policy = _RejectedTokensReweighted(model, inputs["completion_mask"], self.args.ceu_weight,
                                           self.args.ceu_exact_gradient, self.args.rejected_objective, shared,
                                           wga_beta=self.args.wga_beta, satimp_beta1=self.args.satimp_beta1,
                                           satimp_beta2=self.args.satimp_beta2)
        result = super()._compute_loss(policy, inputs, return_outputs)
        self._log_ceu_metrics(result[0] if return_outputs else result, policy)
        return result

    def _compute_dpop_loss(self, model, inputs, return_outputs):
        """DPO-Positive: TRL's sigmoid loss body with the chosen log-prob lowered by dpop_lambda max(0, -D_w). The
        reference log-probs are computed once here (TRL's own method) and handed to TRL as if precomputed."""
        if "ref_chosen_logps" not in inputs:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
            inputs = {**inputs, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
        policy = _ChosenWithDPOPPenalty(model, inputs["completion_mask"], inputs["ref_chosen_logps"],
                                        self.args.dpop_lambda)
        precompute, self.precompute_ref_logps = self.precompute_ref_logps, True
        try:
            result = super()._compute_loss(policy, inputs, return_outputs)
        finally:
            self.precompute_ref_logps = precompute
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["loss/dpop_penalty"].append(
            self.accelerator.gather(policy.penalty.detach()).mean().item())
        return result

    def _log_ceu_metrics(self, loss, policy):
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        gather = self.accelerator.gather_for_metrics
        mask = policy.rejected_mask
        token_logps = policy.rejected_logps.detach()
        metrics["loss/dpo_term"].append(self.accelerator.gather(loss.detach()).mean().item())
        if loss.requires_grad:
            # the adaptive weight DPO's loss body puts on each rejected token (beta sigma(-u) for sigmoid; with
            # LD-DPO's alpha, f-divergence and WPO factors otherwise) is the loss's gradient w.r.t. the reweighted
            # log-prob, times the batch size: CE-U-DPO's CE-U term is ceu_weight * that weight * CE-U
            (grad,) = torch.autograd.grad(loss, policy.rejected_surrogate, retain_graph=True, allow_unused=True)
            grad = torch.zeros_like(token_logps) if grad is None else grad.detach()
            adaptive = grad * grad.size(0)  # the loss is a mean over pairs
            if policy.objective in CE_U_REJECTED_OBJECTIVES:
                ceu = ce_u_loss_from_logprobs(token_logps, policy.rejected_entropy.detach(), mask, reduction="none")
                key, term = "loss/ceu_term", self.args.ceu_weight * (adaptive * ceu).sum(-1)
            else:  # a sibling's term, gamma sg(adaptive) sum_t sg(w) log pi: its gradient is the rejected side's
                sibling = torch.where(mask, policy.rejected_weight * token_logps, torch.zeros_like(token_logps))
                key, term = f"loss/{policy.objective}_term", (adaptive * sibling).sum(-1)
            metrics[key].append(self.accelerator.gather(term).mean().item())
        count = gather(mask.sum()).sum()
        if count > 0:
            metrics["ceu/p_rejected_mean"].append((gather(token_logps.exp()[mask].sum()).sum() / count).item())
            metrics["logps/rejected_token_mean"].append((gather(token_logps[mask].sum()).sum() / count).item())
            local_min = token_logps[mask].min() if mask.any() else torch.zeros((), device=token_logps.device)
            metrics["logps/rejected_token_min"].append(gather(local_min.reshape(1)).min().item())


class _RejectedTokensReweighted:
    """The policy model as TRL's `_compute_loss` calls it, returning on the fused-head call log-probs whose rejected
    completion tokens carry CE-U's gradient: `reweighted_logprobs` with w = `rejected_token_weight` (ceu_weight *
    p / (1 - p), or 1 on the shared prefix for ceu_prefix; a sibling's weight for wga / satimp), or with `exact`,
    `exact_ce_u_logprobs` (ceu_weight * linear_ce_u_loss's gradient, from the recorded hidden states) on the CE-U
    tokens. `ce_u_mask`: the rejected tokens that carry the objective's weight (`rejected_ce_u_mask`)."""

    def __init__(self, model, completion_mask, ceu_weight: float, exact: bool = False, objective: str = "ceu_full",
                 shared: torch.Tensor | None = None, **sibling_betas: float):
        if exact and objective not in CE_U_REJECTED_OBJECTIVES:
            raise ValueError(f"ceu_exact_gradient=True supports rejected_objective in {CE_U_REJECTED_OBJECTIVES}, "
                             f"not {objective!r}. Set ceu_exact_gradient=False.")
        self.model, self.ceu_weight, self.exact = model, ceu_weight, exact
        self.objective, self.shared, self.sibling_betas = objective, shared, sibling_betas
        shift_mask = completion_mask[..., 1:]
        self.rejected_mask = shift_mask.chunk(2, dim=0)[1].bool()  # batch is [chosen, rejected]
        self.ce_u_mask = rejected_ce_u_mask(objective, self.rejected_mask, shared)

    def __call__(self, **kwargs):
        exact = self.exact and kwargs.get("fused_lm_head")
        with recorded_last_hidden_states(self.model) if exact else contextlib.nullcontext() as hidden:
            outputs = self.model(**kwargs)
        if not kwargs.get("fused_lm_head"):  # TRL's extra forward for compute_metrics
            return outputs
        seq_len = self.rejected_mask.size(1)  # prompt-learning PEFT prepends virtual tokens: keep the real positions
        logps = outputs.log_probs
        chosen, rejected = logps[:, -seq_len:].chunk(2, dim=0)
        weight = rejected_token_weight(self.objective, rejected, self.rejected_mask, self.ceu_weight, self.shared,
                                       **self.sibling_betas)
        self.rejected_logps, self.rejected_weight = rejected, weight
        self.rejected_surrogate = reweighted_logprobs(rejected, weight)
        if exact:  # the rejected tokens' gradient from linear_ce_u_loss, exact where 1 - p is tiny
            rejected_hidden = scored_hidden_states(hidden, seq_len).chunk(2, dim=0)[1]
            rejected_ids = kwargs["input_ids"][:, 1:][:, -seq_len:].chunk(2, dim=0)[1]
            head_weight, head_bias = head_weight_and_bias(self.model)
            self.rejected_surrogate = exact_ce_u_logprobs(self.rejected_surrogate, self.ce_u_mask, rejected_hidden,
                                                          head_weight, rejected_ids, head_bias, scale=self.ceu_weight)
        self.rejected_entropy = outputs.entropy[:, -seq_len:].chunk(2, dim=0)[1]
        outputs.log_probs = torch.cat([logps[:, :-seq_len], torch.cat([chosen, self.rejected_surrogate])], dim=1)
        return outputs


class _ChosenWithDPOPPenalty:
    """The policy model as TRL's `_compute_loss` calls it, returning on the fused-head call log-probs whose chosen
    rows sum to log pi(y_w) - dpop_lambda max(0, log pi_ref(y_w) - log pi(y_w)) (the penalty added on each chosen
    row's first completion token), so TRL's sigmoid loss is DPO-Positive's in value and gradient."""

    def __init__(self, model, completion_mask, ref_chosen_logps, dpop_lambda: float):
        self.model, self.ref_chosen_logps, self.dpop_lambda = model, ref_chosen_logps, dpop_lambda
        self.chosen_mask = completion_mask[..., 1:].chunk(2, dim=0)[0].bool()

    def __call__(self, **kwargs):
        outputs = self.model(**kwargs)
        if not kwargs.get("fused_lm_head"):
            return outputs
        seq_len = self.chosen_mask.size(1)
        logps = outputs.log_probs
        chosen, rejected = logps[:, -seq_len:].chunk(2, dim=0)
        self.penalty = dpo_positive_penalty((chosen * self.chosen_mask).sum(1), self.ref_chosen_logps,
                                            self.dpop_lambda)
        first = self.chosen_mask & (self.chosen_mask.long().cumsum(1) == 1)
        chosen = chosen - first.to(chosen.dtype) * self.penalty[:, None]
        outputs.log_probs = torch.cat([logps[:, :-seq_len], torch.cat([chosen, rejected])], dim=1)
        return outputs


@contextlib.contextmanager
def _runs_as_sigmoid(args):
    """While TRL's __init__ reads `args.loss_type`, CE-U-DPO and DPOP are its "sigmoid" loss (on reweighted or
    penalised log-probs): TRL then keeps `loss_types=["sigmoid"]` and validates the options against it.
    `args.loss_type` stays what it was (["ceu"] or ["dpop"])."""
    if args is None:
        yield
        return
    original = args.loss_type
    args.loss_type = ["sigmoid"]
    try:
        yield
    finally:
        args.loss_type = original


def _check_preference_dataset(dataset, name: str, check_empty_rejected: bool) -> None:
    """Clear errors for what TRL would otherwise fail on deep inside tokenization (or train on silently)."""
    columns = getattr(dataset, "column_names", None)
    if not columns or "input_ids" in columns:  # iterable without schema, or already tokenized
        return
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(
            f"The {name} dataset has no {missing} column(s) (columns: {columns}). A preference dataset needs "
            "'chosen' and 'rejected' (and usually 'prompt'), as TRL's DPOTrainer expects."
        )
    if not check_empty_rejected or not hasattr(dataset, "__getitem__"):
        return
    for i, rejected in enumerate(dataset["rejected"]):
        text = rejected if isinstance(rejected, str) else "".join(str(m.get("content", "")) for m in rejected or [])
        if not text.strip():
            raise ValueError(
                f"The {name} dataset has an empty 'rejected' completion at row {i}: CE-U-DPO unlearns the rejected "
                "tokens, so each pair needs a non-empty rejected answer. Drop or fix that row."
            )
