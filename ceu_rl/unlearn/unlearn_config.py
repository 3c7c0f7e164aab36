"""Configuration of UnlearnTrainer (TRL-style dataclass over transformers' TrainingArguments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

# objective -> (needs a retain set, needs a frozen reference model)
OBJECTIVES = {
    "ga": (False, False),
    "grad_diff": (True, False),
    "npo": (True, True),
    "simnpo": (True, False),
    "ce_u": (False, False),
    "ce_u_retain": (True, False),
    "kl": (True, True),
    "idk_dpo": (True, True),
    "ce_u_idk_dpo": (True, True),
}


@dataclass
class UnlearnConfig(TrainingArguments):
    r"""
    Arguments of [`UnlearnTrainer`]: transformers' `TrainingArguments` plus the unlearning objective.

    Parameters:
        objective (`str`, defaults to `"ce_u"`):
            - `"ga"`: gradient ascent on the forget set (Jang et al. 2023; TOFU's GA baseline, Maini et al. 2024).
            - `"grad_diff"`: GA on forget + CE on retain (TOFU's Grad. Diff.; Liu et al. 2022).
            - `"npo"`: NPO on forget + CE on retain, reference = the model before unlearning (Zhang et al. 2024,
              arXiv 2404.05868; open-unlearning's recipe).
            - `"simnpo"`: SimNPO on forget + CE on retain, no reference (Fan et al. 2024, arXiv 2410.07163).
            - `"ce_u"`: CE-U on the forget set only, no reference and no retain data, as in the CE-U paper (Bo Yang,
              arXiv 2503.01224).
            - `"ce_u_retain"`: the unified loss: CE-U on forget tokens and CE on retain tokens, one token mean
              (the CE-U paper's unified framework).
            - `"kl"`: GA on forget + KL(p_ref || p) on retain (TOFU's KL baseline).
            - `"idk_dpo"`: DPO with an "I don't know" answer as chosen and the forget answer as rejected, + CE on
              retain (Maini et al. 2024; Rafailov et al. 2023).
            - `"ce_u_idk_dpo"`: the same with CE-U-DPO (DPO's rejected-side gradient ascent replaced by CE-U).
        alpha (`float`, defaults to `1.0`): weight of the retain term.
        gamma (`float`, defaults to `1.0`): weight of the forget term.
        beta (`float`, defaults to `0.1`): NPO / DPO temperature (SimNPO: use 2.5, open-unlearning's value).
        delta (`float`, defaults to `0.0`): SimNPO's margin.
        ignore_first_n_answer_tokens (`int`, defaults to `1`): CE-U objectives skip the first n answer tokens of each
            forget answer (as the CE-U author's code does: the first token is often generic).
        ce_u_fused_linear (`bool`, defaults to `True`): ce_u and ce_u_retain compute CE-U with
            `ceu_rl.objectives.linear_ce_u_loss` on the backbone's hidden states and the LM head's weight: exact at
            p -> 1 and no B x T x V logits (chunked over tokens). Needs a plain `nn.Linear` head without logit
            scaling or soft-capping; otherwise (e.g. a LoRA-wrapped head) the trainer warns with the reason and uses
            TRL's fused log-prob head (log-prob and entropy only; float32 error bound in `ce_u_loss_from_logprobs`).
        ce_u_from_logits (`bool`, defaults to `False`): compute CE-U from full logits with `ce_u_loss` (exact at
            p -> 1, B x T x V memory); takes precedence over `ce_u_fused_linear`.
        max_length (`int`, defaults to `256`): prompt + answer tokens per item.
        prompt_format (`str`, defaults to `"auto"`): "llama2", "chat", "plain" or "auto" (see `ceu_rl.tofu.formatting`).
    """

    objective: str = field(default="ce_u", metadata={"help": f"one of {sorted(OBJECTIVES)}"})
    alpha: float = field(default=1.0, metadata={"help": "weight of the retain term"})
    gamma: float = field(default=1.0, metadata={"help": "weight of the forget term"})
    beta: float = field(default=0.1, metadata={"help": "NPO / SimNPO / DPO temperature"})
    delta: float = field(default=0.0, metadata={"help": "SimNPO margin"})
    ignore_first_n_answer_tokens: int = field(default=1, metadata={"help": "CE-U: skip the first n answer tokens"})
    ce_u_fused_linear: bool = field(default=True, metadata={"help": "CE-U with the exact fused linear + CE-U op"})
    ce_u_from_logits: bool = field(default=False, metadata={"help": "CE-U from full logits instead of the fused head"})
    max_length: int = field(default=256, metadata={"help": "max prompt + answer tokens"})
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain"})
    # Overrides of TrainingArguments defaults for unlearning
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep the forget/retain columns"})
    report_to: str | list[str] = field(default="none", metadata={"help": "logging integrations"})
    logging_steps: float = field(default=1, metadata={"help": "log every n steps"})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is not one of {sorted(OBJECTIVES)}.")
        for name in ("alpha", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if self.ignore_first_n_answer_tokens < 0:
            raise ValueError("ignore_first_n_answer_tokens must be >= 0.")

    @property
    def needs_retain(self) -> bool:
        return OBJECTIVES[self.objective][0]

    @property
    def needs_reference(self) -> bool:
        return OBJECTIVES[self.objective][1]
