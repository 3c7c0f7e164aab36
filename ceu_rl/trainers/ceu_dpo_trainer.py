"""CE-U-DPO: TRL's DPOTrainer with the gradient ascent on rejected tokens replaced by CE-U.

The trainer changes only where the log-probs come from. With `loss_type="ceu"` TRL's own `_compute_loss` runs its
`"sigmoid"` loss, but the policy's per-token log-probs of rejected completion tokens are `reweighted_logprobs(l, w)`
with w = ceu_weight * p / (1 - p): same value, gradient w * grad l. DPO's gradient on a rejected token,
beta sigma(-u) grad log pi (gradient ascent), becomes beta sigma(-u) ceu_weight grad CE-U, which is CE-U-DPO
(`ceu_dpo_loss`) exactly, and every option of TRL's loss body (f-divergences, LD-DPO's `ld_alpha`, WPO's
`use_weighting`) applies to it. The loss value is TRL's DPO value; CE-U's value is logged (`loss/ceu_term`).
Every other `loss_type` is TRL's code path untouched. With `ceu_exact_gradient=True` the rejected tokens get their
gradient from `linear_ce_u_loss` on the policy's last hidden states (`exact_ce_u_logprobs`; same value), exact in
float32 where 1 - p is tiny.
"""

from __future__ import annotations

import contextlib

import torch
from trl import DPOTrainer

from ..objectives import ce_u_loss_from_logprobs, ce_u_weight, exact_ce_u_logprobs, reweighted_logprobs
from .ceu_dpo_config import CEUDPOConfig
from .exact_ce_u_head import check_exact_head, head_weight_and_bias, recorded_last_hidden_states, scored_hidden_states
from .input_checks import check_preference_inputs


class CEUDPOTrainer(DPOTrainer):
    """[`~trl.DPOTrainer`] that also accepts `loss_type="ceu"` (see [`CEUDPOConfig`]). Drop-in: same arguments."""

    _tag_names = ["trl", "dpo", "ceu-rl", "ce-u"]

    def __init__(self, model, ref_model=None, args: CEUDPOConfig | None = None, *pargs, **kwargs):
        if args is not None and not isinstance(args, CEUDPOConfig) and "ceu" in getattr(args, "loss_type", []):
            raise ValueError("loss_type='ceu' needs a CEUDPOConfig (it carries ceu_weight), not a plain DPOConfig.")
        self._is_ceu = args is not None and getattr(args, "loss_type", None) == ["ceu"]
        check_preference_inputs(pargs, kwargs)  # empty dataset/strings, no chat template: clear errors
        with _runs_as_sigmoid(args if self._is_ceu else None):
            super().__init__(model, ref_model, args, *pargs, **kwargs)
        if self._is_ceu and self.args.ceu_exact_gradient:
            check_exact_head(self.model, self.args)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        _check_preference_dataset(dataset, dataset_name, check_empty_rejected=self._is_ceu)
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self._is_ceu:
            return super()._compute_loss(model, inputs, return_outputs)
        policy = _RejectedTokensReweighted(model, inputs["completion_mask"], self.args.ceu_weight,
                                           self.args.ceu_exact_gradient)
        result = super()._compute_loss(policy, inputs, return_outputs)
        self._log_ceu_metrics(result[0] if return_outputs else result, policy)
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
            ceu = ce_u_loss_from_logprobs(token_logps, policy.rejected_entropy.detach(), mask, reduction="none")
            ceu_term = self.args.ceu_weight * (adaptive * ceu).sum(-1)
            metrics["loss/ceu_term"].append(self.accelerator.gather(ceu_term).mean().item())
        count = gather(mask.sum()).sum()
        if count > 0:
            metrics["ceu/p_rejected_mean"].append((gather(token_logps.exp()[mask].sum()).sum() / count).item())
            metrics["logps/rejected_token_mean"].append((gather(token_logps[mask].sum()).sum() / count).item())
            local_min = token_logps[mask].min() if mask.any() else torch.zeros((), device=token_logps.device)
            metrics["logps/rejected_token_min"].append(gather(local_min.reshape(1)).min().item())


class _RejectedTokensReweighted:
    """The policy model as TRL's `_compute_loss` calls it, returning on the fused-head call log-probs whose rejected
    completion tokens carry CE-U's gradient: `reweighted_logprobs` with w = ceu_weight * p / (1 - p), or with
    `exact`, `exact_ce_u_logprobs` (ceu_weight * linear_ce_u_loss's gradient, from the recorded hidden states)."""

    def __init__(self, model, completion_mask, ceu_weight: float, exact: bool = False):
        self.model, self.ceu_weight, self.exact = model, ceu_weight, exact
        shift_mask = completion_mask[..., 1:]
        self.rejected_mask = shift_mask.chunk(2, dim=0)[1].bool()  # batch is [chosen, rejected]

    def __call__(self, **kwargs):
        exact = self.exact and kwargs.get("fused_lm_head")
        with recorded_last_hidden_states(self.model) if exact else contextlib.nullcontext() as hidden:
            outputs = self.model(**kwargs)
        if not kwargs.get("fused_lm_head"):  # TRL's extra forward for compute_metrics
            return outputs
        seq_len = self.rejected_mask.size(1)  # prompt-learning PEFT prepends virtual tokens: keep the real positions
        logps = outputs.log_probs
        chosen, rejected = logps[:, -seq_len:].chunk(2, dim=0)
        weight = torch.where(self.rejected_mask, self.ceu_weight * ce_u_weight(rejected), torch.ones_like(rejected))
        self.rejected_logps = rejected
        self.rejected_surrogate = reweighted_logprobs(rejected, weight)
        if exact:  # the rejected tokens' gradient from linear_ce_u_loss, exact where 1 - p is tiny
            rejected_hidden = scored_hidden_states(hidden, seq_len).chunk(2, dim=0)[1]
            rejected_ids = kwargs["input_ids"][:, 1:][:, -seq_len:].chunk(2, dim=0)[1]
            head_weight, head_bias = head_weight_and_bias(self.model)
            self.rejected_surrogate = exact_ce_u_logprobs(self.rejected_surrogate, self.rejected_mask, rejected_hidden,
                                                          head_weight, rejected_ids, head_bias, scale=self.ceu_weight)
        self.rejected_entropy = outputs.entropy[:, -seq_len:].chunk(2, dim=0)[1]
        outputs.log_probs = torch.cat([logps[:, :-seq_len], torch.cat([chosen, self.rejected_surrogate])], dim=1)
        return outputs


@contextlib.contextmanager
def _runs_as_sigmoid(args):
    """While TRL's __init__ reads `args.loss_type`, CE-U-DPO is its "sigmoid" loss (on reweighted log-probs): TRL
    then keeps `loss_types=["sigmoid"]` and validates the options against it. `args.loss_type` stays ["ceu"]."""
    if args is None:
        yield
        return
    args.loss_type = ["sigmoid"]
    try:
        yield
    finally:
        args.loss_type = ["ceu"]


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
