"""What `ceu_exact_gradient=True` needs from the policy: its last hidden states and a plain linear LM head.

TRL's fused head (`trl.trainer.utils.add_fused_lm_head`) returns per-token log-probs only; it computes them from the
backbone's `last_hidden_state` and `lm_head.weight` / `.bias` directly. The hook below records that hidden state
(still in the autograd graph) during the same forward pass, so the exact CE-U gradient costs no second backbone pass.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import is_peft_model
from torch.distributed.tensor import DTensor

FIELD = "ceu_exact_gradient"
# config fields by which TRL's fused head scales or soft-caps the logits (not applied by the exact path)
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def causal_lm(model):
    """The patched causal LM under DDP / PEFT wrappers (the module whose forward TRL replaced)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if is_peft_model(model) else model


def check_exact_head(model, args) -> None:
    """Clear errors where the exact path cannot reproduce TRL's log-probs: a head that is not a plain nn.Linear
    (a PEFT adapter on lm_head), Liger kernels, or logits that TRL scales / soft-caps."""
    if getattr(args, "use_liger_kernel", False):
        raise ValueError(f"{FIELD}=True does not support use_liger_kernel=True (Liger replaces the model's forward); "
                         f"set use_liger_kernel=False or {FIELD}=False.")
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise ValueError(f"{FIELD}=True needs the LM head to be a plain torch.nn.Linear (it reads its weight and "
                         f"bias), got {type(head).__name__}: remove 'lm_head' from PEFT's target_modules or set "
                         f"{FIELD}=False.")
    text_config = lm.config.get_text_config()
    for name in _LOGIT_TRANSFORMS:
        value = getattr(text_config, name, None)
        if value is not None and value != 1.0:
            raise ValueError(f"{FIELD}=True does not support models whose logits are scaled or soft-capped "
                             f"(config.{name}={value!r}); set {FIELD}=False.")


@contextlib.contextmanager
def recorded_last_hidden_states(model):
    """Inside: every backbone forward of `model` appends its `last_hidden_state` to the yielded list."""
    recorded = []

    def hook(_module, _args, output):
        recorded.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = causal_lm(model).base_model.register_forward_hook(hook)
    try:
        yield recorded
    finally:
        handle.remove()


def head_weight_and_bias(model):
    head = causal_lm(model).get_output_embeddings()
    weight, bias = head.weight, head.bias
    if isinstance(weight, DTensor):  # FSDP2 shards the head: gather it, as TRL's fused head does (not tested here)
        weight = weight.full_tensor()
        bias = None if bias is None else bias.full_tensor()
    return weight, bias


def scored_hidden_states(recorded, length: int) -> torch.Tensor:
    """The hidden states that predict the last `length` tokens: position t predicts token t + 1 (TRL's shift)."""
    if not recorded:
        raise ValueError(f"{FIELD}=True: the fused head ran without a backbone forward to record hidden states from.")
    hidden = torch.cat(recorded, dim=0)[:, :-1]
    return hidden[:, -length:]
