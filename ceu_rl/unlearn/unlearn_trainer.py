"""UnlearnTrainer: a transformers Trainer whose loss is one unlearning objective of `ceu_rl.objectives`.

Per step it reads a forget batch (and a retain batch, and an "I don't know" batch for IdkDPO), gets per-token
log-probs and entropies from TRL's fused LM head (no B x T x V logits), and calls the objective. The CE-U objectives
(ce_u, ce_u_retain) instead take the backbone's hidden states and the LM head's weight into `linear_ce_u_loss`
(exact at p_y -> 1 and no B x T x V logits either). CE-U's siblings: WGA, SatImp and WTNPO weight the fused
head's log-probs (`sibling_losses`), UNDIAL takes full logits of the forget batch and the frozen model's, RMU
captures one decoder layer's output with a forward hook (`_rmu_terms`). Logged every step: each term of the
loss, the mean p_y on forget tokens, and transformers' gradient norm.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import types
import warnings
from collections import defaultdict

import torch
from torch.distributed.tensor import DTensor
from transformers import Trainer
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import add_fused_lm_head

from .. import objectives as obj
from ..objectives.linear_ce_u import linear_unified_loss_and_logprobs
from ..tofu.formatting import IGNORE_INDEX, record_prompt_format, resolve_prompt_format
from .data import ForgetRetainCollator, ForgetRetainDataset
from .sam import SharpnessAwareMixin, WeightAveragingCallback
from .unlearn_config import UnlearnConfig

TOKEN_WEIGHTED = ("wga", "satimp", "wtnpo")  # gradient ascent with a per-token weight on the fused head's log p


def _shifted(batch):
    labels = batch["labels"][:, 1:]
    return labels, labels != IGNORE_INDEX


def _mask_first_answer_tokens(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Set the first n answer (non-ignored) positions of each row to IGNORE_INDEX."""
    if n == 0:
        return labels
    answer_pos = (labels != IGNORE_INDEX).cumsum(dim=1)
    return labels.masked_fill((labels != IGNORE_INDEX) & (answer_pos <= n), IGNORE_INDEX)


def _label_logps(logits, labels):
    """log p(label) per position from full logits, without gradient (for the p_y log)."""
    with torch.no_grad():
        return torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """(dotted name, ModuleList) of the model's decoder layers: the first ModuleList named layers, h or blocks."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks"):
            return name, module
    raise ValueError("objective='rmu' needs the model's decoder layers (a torch.nn.ModuleList named layers, h or "
                     "blocks, as in Llama/GPT-2-style models); this model has none.")


def rmu_layer_index(rmu_layer: int | None, n_layers: int) -> int:
    """The steered layer: `rmu_layer`, or min(7, n_layers // 2 - 1) (>= 0) by default (see UnlearnConfig)."""
    layer = max(0, min(7, n_layers // 2 - 1)) if rmu_layer is None else rmu_layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"rmu_layer={layer} is out of range: the model has {n_layers} decoder layers; use 0 .. "
                         f"{n_layers - 1} (or None for the default).")
    return layer


def _train_only_rmu_paper_params(model, layers_name: str, layer: int) -> None:
    """The WMDP paper's choice: only the MLP down-projection weights of layers max(0, l - 2) .. l train."""
    keep = {f"{layers_name}.{i}.mlp.down_proj.weight" for i in range(max(0, layer - 2), layer + 1)}
    names = {n for n, _ in model.named_parameters()}
    if not keep <= names:
        raise ValueError(f"rmu_params='paper' trains {sorted(keep)}, which this model lacks; use rmu_params='all'.")
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)


@contextlib.contextmanager
def _captured_output(module):
    """Record `module`'s forward output (its first element when a tuple) in the yielded list."""
    cache = []

    def hook(_module, _args, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield cache
    finally:
        handle.remove()


def linear_head_unsupported_reason(model) -> str | None:
    """Why `linear_ce_u_loss` cannot stand in for this model's LM head (None if it can): it computes
    hidden @ weight.T + bias, nothing else."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return (f"the LM head is a {type(head).__module__}.{type(head).__name__}, not a plain torch.nn.Linear "
                "(e.g. a LoRA/PEFT-wrapped head)")
    config = model.config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            return f"the model scales or caps its logits (config.{name}={getattr(config, name)})"
    return None


def add_linear_ce_u_head(model) -> None:
    """Let `model(..., linear_ce_u=dict(labels=..., unlearn=..., reduction=...))` return (loss, log p_y, valid) of
    `linear_ce_u_loss` on the backbone's last hidden states, shifted (position t predicts labels[:, t + 1]).

    The loss is computed inside the model's forward, as TRL's fused head does, so that FSDP/DeepSpeed hooks gather
    the head's parameters around it; without the keyword the forward is unchanged."""
    inner_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, linear_ce_u=None, labels=None, **kwargs):
        if linear_ce_u is None:
            return inner_forward(*args, labels=labels, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        weight, bias = head.weight, head.bias
        if isinstance(weight, DTensor):  # FSDP2 shards that the root's forward hook did not gather
            weight = weight.full_tensor()
            bias = None if bias is None else bias.full_tensor()
        target = linear_ce_u["labels"][:, 1:].to(weight.device)
        unlearn = torch.full_like(target, bool(linear_ce_u["unlearn"]), dtype=torch.bool)
        return linear_unified_loss_and_logprobs(hidden.to(weight.device), weight, target, unlearn, bias,
                                                reduction=linear_ce_u.get("reduction", "mean"))

    model.forward = types.MethodType(forward, model)


class UnlearnTrainer(SharpnessAwareMixin, Trainer):
    """Unlearn `forget_dataset` (question/answer rows) with `args.objective`; `retain_dataset` for objectives that
    use one; `ref_model` (default: a frozen copy of the model before unlearning) for NPO, KL and IdkDPO."""

    def __init__(self, model, args: UnlearnConfig, forget_dataset, retain_dataset=None, processing_class=None,
                 ref_model=None, idk_answers=None, peft_config=None, **kwargs):
        if not isinstance(args, UnlearnConfig):
            raise ValueError("args must be an UnlearnConfig (it carries the objective).")
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required to encode the TOFU questions and answers.")
        if args.needs_retain and retain_dataset is None:
            raise ValueError(f"objective={args.objective!r} needs a retain_dataset (it regularises on retain data).")
        if args.objective.endswith("idk_dpo") and not idk_answers:
            raise ValueError(f"objective={args.objective!r} needs idk_answers (e.g. ceu_rl.tofu.load_idk()).")
        tokenizer = processing_class
        fmt = resolve_prompt_format(args.prompt_format, tokenizer, model=model)
        record_prompt_format(model, fmt)  # config.json's ceu_rl_prompt_format in every save: what "auto" reads
        train_dataset = ForgetRetainDataset(
            tokenizer, forget_dataset, retain_dataset if args.needs_retain else None, fmt, args.max_length,
            idk_answers if args.objective.endswith("idk_dpo") else None, seed=args.seed,
        )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if args.needs_reference and ref_model is None:
            ref_model = None if peft_config is not None else copy.deepcopy(model)
        if args.objective == "rmu":
            layers_name, layers = decoder_layers(model)
            self._rmu_layer = rmu_layer_index(args.rmu_layer, len(layers))
            if args.rmu_params == "paper":
                if peft_config is not None:
                    raise ValueError("rmu_params='paper' with a peft_config: the adapter decides which parameters "
                                     "train; use rmu_params='all'.")
                _train_only_rmu_paper_params(model, layers_name, self._rmu_layer)
            self._rmu_target = obj.rmu_control_vector(model.config.get_text_config().hidden_size,
                                                      args.rmu_steering_coeff, seed=args.seed)
        add_fused_lm_head(model, outputs=("log_probs", "entropy"))
        self._linear_ce_u = (args.objective in ("ce_u", "ce_u_retain") and args.ce_u_fused_linear
                             and not args.ce_u_from_logits)
        if self._linear_ce_u:
            add_linear_ce_u_head(model)  # before PEFT wraps the model, as TRL's head
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        reason = linear_head_unsupported_reason(model) if self._linear_ce_u else None
        if reason is not None:
            self._linear_ce_u = False
            warnings.warn(f"ce_u_fused_linear: {reason}; CE-U falls back to TRL's fused log-prob head (no logits, "
                          "but inexact in float32 as p_y -> 1: see ce_u_loss_from_logprobs). Set "
                          "ce_u_from_logits=True for the exact path on full logits.", stacklevel=2)
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                         data_collator=ForgetRetainCollator(pad), **kwargs)
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            add_fused_lm_head(ref_model)
            if self.is_deepspeed_enabled:
                self.ref_model = prepare_deepspeed(ref_model, self.accelerator)
            elif self.is_fsdp_enabled:
                self.ref_model = prepare_fsdp(ref_model, self.accelerator)
            else:
                self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        if args.objective == "rmu":  # the steered layer of the trained model and of the frozen one
            self._rmu_module = decoder_layers(self.model)[1][self._rmu_layer]
            ref = self.model if self.ref_model is None else self.accelerator.unwrap_model(self.ref_model)
            self._rmu_ref_module = decoder_layers(ref)[1][self._rmu_layer]
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        # relearning resistance (sam.py): SAM / adversarial perturbation of the forget term, weight averaging
        self._init_sharpness_aware(args.sam_rho, args.adv_relearn_steps, args.adv_relearn_lr)
        if args.weight_averaging:
            self.add_callback(WeightAveragingCallback(args.weight_averaging_start, args.weight_averaging_interval))

    # ---- forward helpers -------------------------------------------------------------------------------------
    def _token_logps(self, model, batch, labels=None):
        """Per-token log p(label) and entropy from the fused head; `labels` default to the batch's."""
        labels = batch["labels"] if labels is None else labels
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                    fused_lm_head=True, use_cache=False)
        return out.log_probs, out.entropy, labels[:, 1:] != IGNORE_INDEX

    @torch.no_grad()
    def _ref_logps(self, batch):
        if self.ref_model is not None:
            return self._token_logps(self.ref_model, batch)[0]
        with self.accelerator.unwrap_model(self.model).disable_adapter():  # PEFT: the base model is the reference
            return self._token_logps(self.model, batch)[0]

    @torch.no_grad()
    def _ref_logits(self, batch):
        if self.ref_model is not None:
            return self._logits(self.ref_model, batch)
        with self.accelerator.unwrap_model(self.model).disable_adapter():  # PEFT: the base model is the reference
            return self._logits(self.model, batch)

    def _logits(self, model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1]

    def _retain_ce(self, model, inputs):
        logp, ent, mask = self._token_logps(model, inputs["retain"])
        return obj.unified_cross_entropy_from_logprobs(logp, ent.detach(), torch.zeros_like(mask), mask)

    # ---- relearning resistance (sam.py) ------------------------------------------------------------------------
    def _record_loss_parts(self, forget, retain):
        if self._sam_active:
            self._loss_parts = (forget, retain)

    def sam_loss_parts(self, model, inputs, num_items_in_batch=None, forget_only=False):
        """(forget part, retain part or None) of `compute_loss`, which add up to it: gamma x forget and alpha x retain
        terms; ce_u_retain's forget-token and retain-token parts. `forget_only` is ignored: the retain forward runs
        (and is discarded) at the perturbed weights too."""
        self._loss_parts = None
        self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        parts, self._loss_parts = self._loss_parts, None
        return parts

    def sam_relearn_loss(self, model, inputs):
        """The relearning adversary's loss: mean NLL of the forget batch's answer tokens (all of them)."""
        logp, _, mask = self._token_logps(model, inputs["forget"])
        return -(logp * mask).sum() / mask.sum().clamp(min=1)

    # ---- the loss --------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._sam_armed:  # sam_rho / adv_relearn_steps: the forget term at perturbed weights (sam.py)
            return self._sam_compute_loss(model, inputs, num_items_in_batch)
        a = self.args
        forget = inputs["forget"]
        if a.objective.startswith("ce_u") and not a.objective.endswith("idk_dpo"):
            forget = {**forget, "labels": _mask_first_answer_tokens(forget["labels"], a.ignore_first_n_answer_tokens)}
        terms = {}
        if a.objective == "rmu":
            terms, logp, mask = self._rmu_terms(model, inputs)
            loss = a.gamma * terms["forget"] + a.alpha * terms["retain"]
            self._record_loss_parts(a.gamma * terms["forget"], a.alpha * terms["retain"])
            self._log_step(terms, logp, mask)
            return (loss, None) if return_outputs else loss
        if self._linear_ce_u:
            loss, logp, mask = self._linear_ce_u_step(model, forget, inputs.get("retain"))
            if a.objective == "ce_u":
                self._record_loss_parts(loss, None)
            terms["total" if a.objective == "ce_u_retain" else "forget"] = loss
            self._log_step(terms, logp, mask)
            return (loss, None) if return_outputs else loss
        if a.ce_u_from_logits and a.objective in ("ce_u", "ce_u_retain"):
            logits = self._logits(model, forget)
            labels, mask = _shifted(forget)
            logp = _label_logps(logits, labels)
            terms["forget"] = obj.ce_u_loss(logits, labels)
        elif a.objective == "undial":
            logits = self._logits(model, forget)
            labels, mask = _shifted(forget)
            logp = _label_logps(logits, labels)
            terms["forget"] = obj.undial_loss(logits, self._ref_logits(forget), labels, beta=a.undial_beta)
        else:
            logp, ent, mask = self._token_logps(model, forget)
            no_unlearn = torch.zeros_like(mask)
            if a.objective in ("ga", "grad_diff", "kl"):
                terms["forget"] = -obj.unified_cross_entropy_from_logprobs(logp, ent.detach(), no_unlearn, mask)
            elif a.objective == "npo":
                terms["forget"] = obj.npo_loss(logp.sum(1), self._ref_logps(forget).sum(1), beta=a.beta)
            elif a.objective == "simnpo":
                terms["forget"] = obj.simnpo_loss(logp.sum(1), mask.sum(1).clamp(min=1), beta=a.beta, delta=a.delta)
            elif a.objective == "ce_u":
                terms["forget"] = obj.ce_u_loss_from_logprobs(logp, ent, mask)
            elif a.objective in TOKEN_WEIGHTED:
                terms["forget"] = self._token_weighted_loss(logp, mask, forget)
            elif a.objective.endswith("idk_dpo"):
                idk_logp, idk_ent, idk_mask = self._token_logps(model, inputs["idk"])
                ref_idk, ref_forget = self._ref_logps(inputs["idk"]).sum(1), self._ref_logps(forget).sum(1)
                if a.objective == "idk_dpo":
                    terms["forget"] = obj.dpo_loss(idk_logp.sum(1), logp.sum(1), ref_idk, ref_forget, a.beta).mean()
                else:
                    terms["forget"] = obj.ceu_dpo_loss(idk_logp.sum(1), logp.sum(1), ref_idk, ref_forget, logp, ent,
                                                       mask, beta=a.beta)[0].mean()
        if a.objective == "ce_u_retain":
            # the unified loss: one token mean over CE-U (forget) and CE (retain) tokens
            if a.ce_u_from_logits:
                r_logits = self._logits(model, inputs["retain"])
                r_labels, _ = _shifted(inputs["retain"])
                vocab = logits.shape[-1]
                all_logits = torch.cat([logits.reshape(-1, vocab), r_logits.reshape(-1, vocab)])
                all_labels = torch.cat([labels.reshape(-1), r_labels.reshape(-1)])
                unlearn = torch.cat([torch.ones_like(labels.reshape(-1), dtype=torch.bool),
                                     torch.zeros_like(r_labels.reshape(-1), dtype=torch.bool)])
                loss = obj.unified_cross_entropy(all_logits, all_labels, unlearn)
                if self._sam_active:  # its forget-token and retain-token parts (see _linear_ce_u_step)
                    count = ((labels != IGNORE_INDEX).sum() + (r_labels != IGNORE_INDEX).sum()).clamp(min=1)
                    retain_ce = torch.nn.functional.cross_entropy(
                        r_logits.reshape(-1, vocab).to(torch.promote_types(r_logits.dtype, torch.float32)),
                        r_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
                    self._record_loss_parts(obj.ce_u_loss(logits, labels, reduction="sum") / count, retain_ce / count)
            else:
                r_logp, r_ent, r_mask = self._token_logps(model, inputs["retain"])
                unlearn = torch.cat([torch.ones_like(mask.reshape(-1)), torch.zeros_like(r_mask.reshape(-1))])
                loss = obj.unified_cross_entropy_from_logprobs(
                    torch.cat([logp.reshape(-1), r_logp.reshape(-1)]), torch.cat([ent.reshape(-1), r_ent.reshape(-1)]),
                    unlearn, torch.cat([mask.reshape(-1), r_mask.reshape(-1)]))
                if self._sam_active:  # its forget-token and retain-token parts (see _linear_ce_u_step)
                    count = (mask.sum() + r_mask.sum()).clamp(min=1)
                    self._record_loss_parts(obj.ce_u_loss_from_logprobs(logp, ent, mask, reduction="sum") / count,
                                            -(r_logp.to(torch.promote_types(r_logp.dtype, torch.float32))
                                              * r_mask).sum() / count)
            terms["total"] = loss
        else:
            loss = a.gamma * terms["forget"]
            if a.objective == "kl":
                r_logits = self._logits(model, inputs["retain"])
                ref_logits = self._ref_logits(inputs["retain"])
                r_labels, _ = _shifted(inputs["retain"])
                terms["retain"] = obj.reference_kl_loss(r_logits, ref_logits, r_labels)
            elif a.needs_retain:
                terms["retain"] = self._retain_ce(model, inputs)
            if "retain" in terms:
                loss = loss + a.alpha * terms["retain"]
            self._record_loss_parts(a.gamma * terms["forget"],
                                    a.alpha * terms["retain"] if "retain" in terms else None)
        self._log_step(terms, logp, mask)
        return (loss, None) if return_outputs else loss

    def _token_weighted_loss(self, logp, mask, forget):
        """WGA, SatImp or WTNPO on the forget tokens: gradient ascent with the objective's per-token weight."""
        a = self.args
        if a.objective == "wga":
            return obj.wga_loss(logp, mask, beta=a.wga_beta)
        if a.objective == "satimp":
            return obj.satimp_loss(logp, mask, beta1=a.satimp_beta1, beta2=a.satimp_beta2)
        return obj.wtnpo_loss(logp, self._ref_logps(forget), mask, beta=a.wtnpo_beta, alpha=a.wtnpo_alpha)

    def _rmu_terms(self, model, inputs):
        """RMU (arXiv 2403.03218): the steered layer's output on forget answer tokens vs c u, and on retain answer
        tokens vs the frozen model's (with PEFT: the base model, adapter disabled). The fused head's forward runs
        to the end (its log p_y is logged); the loss reads only the hooked activations. Activations at the answer
        tokens' own positions (labels != -100, unshifted), as open-unlearning."""
        forget, retain = inputs["forget"], inputs["retain"]
        with _captured_output(self._rmu_module) as acts:
            logp, _, mask = self._token_logps(model, forget)
        target = self._rmu_target.to(acts[0].device)
        terms = {"forget": obj.rmu_activation_loss(acts[0], target, forget["labels"] != IGNORE_INDEX)}
        with _captured_output(self._rmu_module) as acts:
            self._token_logps(model, retain)
        with _captured_output(self._rmu_ref_module) as ref_acts:
            self._ref_logps(retain)
        terms["retain"] = obj.rmu_activation_loss(acts[0], ref_acts[0], retain["labels"] != IGNORE_INDEX)
        return terms, logp.detach(), mask

    def _linear_ce_u_step(self, model, forget, retain):
        """CE-U on the forget tokens (ce_u), or the unified loss, one token mean over CE-U on forget tokens and CE on
        retain tokens (ce_u_retain), with `linear_ce_u_loss`. Returns (loss, forget log p_y, forget mask)."""
        def run(batch, unlearn, reduction):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         linear_ce_u=dict(labels=batch["labels"], unlearn=unlearn, reduction=reduction))

        if retain is None:
            return run(forget, True, "mean")
        forget_sum, logp, mask = run(forget, True, "sum")
        retain_sum, _, retain_mask = run(retain, False, "sum")
        count = (mask.sum() + retain_mask.sum()).clamp(min=1)
        # SAM's split of the unified loss (sam.py): the forget-token part, CE-U summed over forget tokens / all tokens,
        # is the forget term; the retain-token part the retain term. They add up to the loss, and the token count
        # does not depend on the weights, so the split is exact.
        self._record_loss_parts(forget_sum / count, retain_sum / count)
        return (forget_sum + retain_sum) / count, logp, mask

    def _log_step(self, terms, forget_logp, forget_mask):
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        for name, value in terms.items():
            self._metrics[mode][f"loss/{name}"].append(gather(value.detach().reshape(1)).mean().item())
        count = gather(forget_mask.sum().reshape(1)).sum()
        p_sum = gather((forget_logp.detach().float().exp() * forget_mask).sum().reshape(1)).sum()
        self._metrics[mode]["forget/p_y_mean"].append((p_sum / count.clamp(min=1)).item())

    def log(self, logs, start_time=None):
        mode = "train" if self.model.training else "eval"
        logs.update({k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v})
        super().log(logs, start_time)
        self._metrics[mode].clear()
