"""RL unlearning with a retain anchor: CE-U-GRPO / GRPO on the forget prompts plus GradDiff's retain term.

The RL objectives only push the forget answers down; nothing holds the rest of the model in place. GradDiff (Liu et
al., "Continual Learning and Private Unlearning", arXiv:2203.12817; the TOFU baseline, arXiv:2401.06121) adds the
negative log-likelihood of retain question/answer pairs. `RetainAnchoredGRPOTrainer` adds that term to TRL's GRPO
loss: per micro-batch

    loss = GRPO/CE-U-GRPO loss (TRL's, unchanged) + retain_coef * mean NLL of the answer tokens of `retain_batch_size`
           retain pairs

(divided by the gradient-accumulation steps, as TRL divides its own loss). Retain pairs are drawn in a seeded order
(`seed`), so a run is reproducible. Unlike a KL anchor (`beta > 0`: a reference-model forward per step, and a pull
toward the full model on the forget prompts themselves), this anchor is on other data: it keeps what should be kept
and leaves the forget answers free to move.

`sam_rho > 0` makes the step sharpness-aware (Fan et al., ICML 2025, arXiv 2502.05374; `ceu_rl.unlearn.sam`): the
whole RL loss (TRL's GRPO / CE-U-GRPO loss: positive and negative advantages, and the KL term when beta > 0) is
evaluated at w + rho g / ||g||_2, g its gradient at w, and the retain NLL at w. Why the whole RL loss and not only its
negative-advantage part: (1) the paper's min-max is over the loss computed on the forget data, and on the forget
prompts that is the whole RL loss, as the whole DPO loss is the forget term of idk_dpo / ce_u_idk_dpo offline (where
SAM covers both sides too); (2) the adversary relearns by raising the probability of the forget answers, which are
the negative-advantage completions and which the positive ones compete with through the softmax, so both parts move
with it; (3) with group-normalised advantages the two parts are one objective (advantages sum to zero per group),
and splitting them would reach inside TRL's and CEUGRPOTrainer's loss (owned elsewhere) for a per-token mask of the
advantage sign. The retain NLL is the paper's retain term, at the unperturbed weights. Cost: the policy-loss
forward/backward twice per micro-batch (generation, the dominant cost, once). Not with DeepSpeed/FSDP, nor with
TRL's adaptive entropy controller (its state would count the extra forward).
"""

from __future__ import annotations

import torch

from ..tofu.formatting import IGNORE_INDEX, record_prompt_format, resolve_prompt_format
from ..trainers import CEUGRPOTrainer
from .data import _encode_all, pad_batch
from .sam import SharpnessAwareMixin


def answer_nll(model, batch: dict) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens (labels != -100) of a padded QA batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                             ignore_index=IGNORE_INDEX)


class RetainAnchoredGRPOTrainer(SharpnessAwareMixin, CEUGRPOTrainer):
    """[`CEUGRPOTrainer`] plus `retain_coef` x the retain NLL (GradDiff's retain term) on `retain_dataset`
    (question/answer rows), `retain_batch_size` pairs per micro-batch. `retain_coef=0` is CEUGRPOTrainer exactly.
    `sam_rho` (default 0 = off): SAM on the RL loss with the retain NLL at w (see the module docstring).
    `prompt_format` formats the retain pairs ("auto": the model's recorded format, else a guess) and, with a
    retain set, is recorded in the model's config (`ceu_rl_prompt_format`); the RL prompts are formatted by the
    caller, who should format them the same way."""

    def __init__(self, *args, retain_dataset=None, retain_coef: float = 1.0, retain_batch_size: int = 16,
                 prompt_format: str = "plain", max_length: int = 256, sam_rho: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sharpness_aware(sam_rho=sam_rho)
        if self._sam_active and getattr(self, "use_adaptive_entropy", False):
            raise ValueError("sam_rho > 0 with the adaptive entropy controller: its window statistics would count the "
                             "forward at the perturbed weights; set sam_rho=0 or a fixed entropy_coef.")
        if retain_coef < 0:
            raise ValueError(f"retain_coef must be >= 0 (the weight of the retain NLL), got {retain_coef}.")
        if retain_batch_size < 1:
            raise ValueError(f"retain_batch_size must be >= 1, got {retain_batch_size}.")
        if retain_coef > 0 and retain_dataset is None:
            raise ValueError("retain_coef > 0 needs a retain_dataset (question/answer rows); or set retain_coef=0.")
        self.retain_coef, self.retain_batch_size = float(retain_coef), int(retain_batch_size)
        self._retain = None
        if retain_dataset is not None:
            prompt_format = resolve_prompt_format(prompt_format, self.processing_class, model=self.model)
            record_prompt_format(self.model, prompt_format)
            self._retain = _encode_all(self.processing_class, retain_dataset, prompt_format, max_length, "retain")
        self._retain_order: list[int] = []
        self._retain_epoch = 0

    def next_retain_batch(self) -> dict:
        """The next `retain_batch_size` retain pairs, padded: a seeded permutation per pass over the retain set."""
        picked = []
        while len(picked) < self.retain_batch_size:
            if not self._retain_order:
                g = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self._retain_epoch)
                self._retain_order = torch.randperm(len(self._retain), generator=g).tolist()
                self._retain_epoch += 1
            picked.append(self._retain[self._retain_order.pop()])
        pad = self.processing_class.pad_token_id
        pad = self.processing_class.eos_token_id if pad is None else pad
        return {k: v.to(self.accelerator.device) for k, v in pad_batch(picked, pad).items()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._sam_armed:  # sam_rho > 0: the RL loss at w + delta, the retain NLL at w (sam.py)
            return self._sam_compute_loss(model, inputs, num_items_in_batch)
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.retain_coef == 0 or not model.training:
            return loss
        return loss + self._retain_term(model)

    def _retain_term(self, model):
        nll = answer_nll(model, self.next_retain_batch())
        self._metrics["train"]["retain/nll"].append(nll.item())
        # as TRL divides its loss (set by Trainer.train; a direct call outside training: the configured value)
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return self.retain_coef * nll / accumulation

    def sam_loss_parts(self, model, inputs, num_items_in_batch=None, forget_only=False):
        """(the RL loss, the retain term or None): SAM's forget and retain parts (`forget_only`: no retain forward,
        and no retain batch drawn)."""
        loss = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        return loss, (None if forget_only or self.retain_coef == 0 else self._retain_term(model))
