"""CE-U-DPO: TRL's DPOTrainer with the gradient ascent on rejected tokens replaced by CE-U.

Only `_compute_loss` changes, and only for `loss_type="ceu"`; every other loss type is TRL's code path untouched.
CE-U is computed from the fused LM head's per-token log-prob and entropy (`ce_u_loss_from_logprobs`), so no
B x T x V logits are built.
"""

from __future__ import annotations

import torch
from trl import DPOTrainer

from ..objectives import ceu_dpo_loss
from .ceu_dpo_config import CEUDPOConfig

# Batch keys that are not model inputs (as in TRL's DPOTrainer._compute_loss).
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


class CEUDPOTrainer(DPOTrainer):
    """[`~trl.DPOTrainer`] that also accepts `loss_type="ceu"` (see [`CEUDPOConfig`]). Drop-in: same arguments."""

    _tag_names = ["trl", "dpo", "ceu-rl", "ce-u"]

    def __init__(self, model, ref_model=None, args: CEUDPOConfig | None = None, *pargs, **kwargs):
        if args is not None and not isinstance(args, CEUDPOConfig) and "ceu" in getattr(args, "loss_type", []):
            raise ValueError("loss_type='ceu' needs a CEUDPOConfig (it carries ceu_weight), not a plain DPOConfig.")
        self._is_ceu = args is not None and getattr(args, "loss_type", None) == ["ceu"]
        super().__init__(model, ref_model, args, *pargs, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        _check_preference_dataset(dataset, dataset_name, check_empty_rejected=self._is_ceu)
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self._is_ceu:
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"

        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        shift_mask = completion_mask[..., 1:]
        seq_len = shift_mask.size(1)  # prompt-learning PEFT prepends virtual tokens: keep the real positions
        per_token_logps = outputs.log_probs[:, -seq_len:]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)  # batch is [chosen, rejected]

        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_model = self.model if self.ref_model is None else self.ref_model  # PEFT: adapter disabled inside
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref_model, inputs)
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps

        rejected_mask = shift_mask.chunk(2, dim=0)[1].bool()
        rejected_token_logps = per_token_logps.chunk(2, dim=0)[1]
        rejected_entropy = outputs.entropy[:, -seq_len:].chunk(2, dim=0)[1]
        per_pair, dpo_term, ceu_term = ceu_dpo_loss(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, rejected_token_logps,
            rejected_entropy, rejected_mask, beta=self.beta, ceu_weight=self.args.ceu_weight,
        )
        loss = per_pair.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        self._log_metrics(mode, inputs, outputs, seq_len, chosen_logps, rejected_logps, chosen_logratios,
                          rejected_logratios)
        self._log_ceu_metrics(mode, dpo_term, ceu_term, rejected_token_logps, rejected_mask)
        if return_outputs:  # as TRL: the fused head builds no logits, so compute_metrics gets a second forward
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def _log_metrics(self, mode, inputs, outputs, seq_len, chosen_logps, rejected_logps, chosen_logratios,
                     rejected_logratios):
        """TRL's DPO metrics with TRL's meaning (rewards, margins, accuracies, log-probs, entropy, tokens)."""
        gather = self.accelerator.gather_for_metrics
        shift_mask = inputs["completion_mask"][..., 1:]
        chosen_mask, rejected_mask = shift_mask.chunk(2, dim=0)
        metrics = self._metrics[mode]

        total_tokens = gather(shift_mask.sum()).sum()
        entropy_sum = gather((outputs.entropy[:, -seq_len:].detach() * shift_mask).sum()).sum()
        metrics["entropy"].append((entropy_sum / total_tokens).item() if total_tokens > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
        for name, logits, mask in (("chosen", chosen_logits, chosen_mask), ("rejected", rejected_logits, rejected_mask)):
            total = gather(logits[mask.bool()].sum()).sum().item()
            count = gather(mask.sum()).sum().item()
            metrics[f"logits/{name}"].append(total / count if count > 0 else 0.0)
        chosen_is_top1 = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)[0]
        correct = gather((chosen_is_top1 & chosen_mask.bool()).sum()).sum()
        count = gather(chosen_mask.sum()).sum()
        metrics["mean_token_accuracy"].append((correct / count).item() if count > 0 else 0.0)

        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        metrics["rewards/chosen"].append(self.accelerator.gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(self.accelerator.gather(rejected_rewards).mean().item())
        accuracies = (chosen_rewards > rejected_rewards).float()
        metrics["rewards/accuracies"].append(self.accelerator.gather(accuracies).mean().item())
        metrics["rewards/margins"].append(self.accelerator.gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(self.accelerator.gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(self.accelerator.gather(rejected_logps.detach()).mean().item())

    def _log_ceu_metrics(self, mode, dpo_term, ceu_term, rejected_token_logps, rejected_mask):
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        metrics["loss/dpo_term"].append(self.accelerator.gather(dpo_term.detach()).mean().item())
        metrics["loss/ceu_term"].append(self.accelerator.gather(ceu_term.detach()).mean().item())
        token_logps = rejected_token_logps.detach()[rejected_mask]
        count = gather(rejected_mask.sum()).sum()
        if count > 0:
            metrics["ceu/p_rejected_mean"].append((gather(token_logps.exp().sum()).sum() / count).item())
            metrics["logps/rejected_token_mean"].append((gather(token_logps.sum()).sum() / count).item())
            local_min = token_logps.min() if token_logps.numel() else torch.zeros((), device=token_logps.device)
            metrics["logps/rejected_token_min"].append(gather(local_min.reshape(1)).min().item())


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
