"""Configuration of UndoTrainer (TRL-style dataclass over transformers' TrainingArguments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

NOISE_INITS = ("model", "xavier")


def check_noise_options(noise_alpha: float, noise_init: str = "model", noise_beta: float = 0.1) -> None:
    """ValueError naming the field and the fix for an unusable noise setting (UndoConfig and `shrink_and_perturb`)."""
    if not isinstance(noise_alpha, (int, float)) or not 0.0 <= noise_alpha <= 1.0:
        raise ValueError(f"noise_alpha={noise_alpha!r} is out of range: use 0 <= noise_alpha <= 1 (0 keeps the "
                         "unlearned teacher's weights, 1 is a fresh initialisation; the paper's grids span 0.1-0.8).")
    if noise_init not in NOISE_INITS:
        raise ValueError(f"noise_init={noise_init!r} is not one of {NOISE_INITS}: 'model' draws the noise as the "
                         "model's own initialisation, 'xavier' is the authors' code (noise_beta x Xavier-uniform "
                         "matrices, zero vectors).")
    if not isinstance(noise_beta, (int, float)) or not noise_beta >= 0:
        raise ValueError(f"noise_beta={noise_beta!r} is out of range: use a value >= 0 (the authors' 0.1; 0 = shrink "
                         "only, as their WMDP runs). It scales the noise of noise_init='xavier' only.")


@dataclass
class UndoConfig(TrainingArguments):
    r"""
    Arguments of [`UndoTrainer`]: transformers' `TrainingArguments` plus UNDO's noise and distillation settings.

    UNDO (Unlearn, Noise, Distill on Outputs; Lee, Foote, Infanger, Shor, Kamath, Goldman-Wetzler, Woodworth, Cloud,
    Turner, "Distillation Robustifies Unlearning", NeurIPS 2025, arXiv 2506.06278; code:
    github.com/AddieFoote/distillation-robustify-unlearning, `src/tools/partial_distill_*.py`): after any unlearning
    run, copy the unlearned model (the teacher), shrink and perturb the copy's weights once,

        theta_student = (1 - noise_alpha) * theta_teacher + noise_alpha * noise,

    then train the copy to match the teacher's full next-token distribution, forward KL(teacher || student) on every
    non-padding position of the distillation data (retain data, optionally general text; no labels).

    Parameters:
        noise_alpha (`float`, defaults to `0.5`): alpha in [0, 1], the weight of the noise: 0 leaves the teacher's
            weights (plain self-distillation, the KL starts at 0), 1 is a fresh initialisation (full distillation into
            a random student). More noise costs more distillation and removes more of what the teacher only
            suppresses. The authors' code has no single default: its sweeps are 0.1-0.8 (arithmetic), 0.1-0.7
            (language) and 0.25 (WMDP); 0.5 here, the middle of those grids.
        noise_init (`str`, defaults to `"model"`): how the noise is drawn.
            - `"model"`: the model's own initialisation: a fresh model of the same class built from `model.config`
              (transformers' `_init_weights`, seeded by `noise_seed`), so noise_alpha = 1 gives exactly that fresh
              model. Norm weights are mixed with their initial value (1), biases with 0. This is the paper's
              description ("noise ... as the model's initialisation"); it needs the memory of a second model on the
              CPU for a moment.
            - `"xavier"`: the authors' code (`do_corruption`): each trainable matrix is mixed with `noise_beta` x a
              Xavier-uniform draw, each trainable vector (norm weights, biases) with 0, i.e. only shrunk; other shapes
              are refused. noise_alpha = 1 then gives a model whose norm weights are 0, not a trainable initialisation.
        noise_beta (`float`, defaults to `0.1`): the Xavier noise's scale for `noise_init="xavier"` (the authors'
            default; their WMDP runs use 0, shrink only). Ignored by `"model"`.
        noise_seed (`int`, *optional*): seed of the noise draw; default the run's `seed`. The draw does not touch the
            global random state.
        max_length (`int`, defaults to `256`): tokens per distillation sequence (truncated). The authors pack text
            into sequences of 256 (arithmetic) / 2048 (language) tokens; here each row is one sequence, padded per
            batch.
        prompt_format (`str`, defaults to `"auto"`): how question/answer rows become text (`ceu_rl.tofu.formatting`):
            the prompt and the answer are both distilled on. Rows with a `text` column are used as they are.

    The authors' optimiser settings (not defaults here; `recipes/configs/tofu/undo.yaml` sets them): AdamW, learning
    rate 7e-4 (arithmetic) / 9e-4 (language), cosine schedule to a floor (7e-5 / 7e-4) after 50 warm-up steps, no
    weight decay, gradient clipping at 1.0, one noise application (`shrink_perturb_repeat=False`), and early stopping
    once the student's retain loss is within 5% of the teacher's (not implemented here: a fixed number of steps).
    """

    noise_alpha: float = field(default=0.5, metadata={"help": "weight of the noise in [0, 1] (0: the teacher's "
                                                              "weights, 1: a fresh initialisation)"})
    noise_init: str = field(default="model", metadata={"help": f"one of {NOISE_INITS}: the model's own "
                                                               "initialisation, or the authors' Xavier form"})
    noise_beta: float = field(default=0.1, metadata={"help": "scale of the Xavier noise (noise_init='xavier' only)"})
    noise_seed: int | None = field(default=None, metadata={"help": "seed of the noise draw (default: seed)"})
    max_length: int = field(default=256, metadata={"help": "max tokens per distillation sequence"})
    prompt_format: str = field(default="auto", metadata={"help": "auto, llama2, chat or plain (question/answer rows)"})
    # Overrides of TrainingArguments defaults
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep the tokenized columns"})
    report_to: str | list[str] = field(default="none", metadata={"help": "logging integrations"})
    logging_steps: float = field(default=1, metadata={"help": "log every n steps"})

    def __post_init__(self):
        super().__post_init__()
        check_noise_options(self.noise_alpha, self.noise_init, self.noise_beta)
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} is too short: a distillation sequence needs at least 2 "
                             "tokens (one next-token prediction); use e.g. 256.")
