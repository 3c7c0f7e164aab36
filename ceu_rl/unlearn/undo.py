"""UNDO (Unlearn, Noise, Distill on Outputs; Lee et al., "Distillation Robustifies Unlearning", arXiv 2506.06278):
a step after any unlearning run. `shrink_and_perturb` mixes a model's weights with fresh initialisation noise (the
noise step); `UndoTrainer` distils the unlearned teacher's full next-token distribution into the noised copy with
forward KL (`ceu_rl.objectives.forward_kl_loss`) on retain (and general) text, no labels (the distillation step).

    trainer = UndoTrainer(model=unlearned_model, args=UndoConfig(output_dir="undo", noise_alpha=0.5),
                          train_dataset=retain_rows, processing_class=tokenizer)
    trainer.train()  # trainer.model: the student; trainer.teacher_model: the frozen unlearned model

Settings, the authors' defaults and what differs from their code: `UndoConfig`'s docstring and docs/undo/README.md.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from .. import objectives as obj
from ..tofu.formatting import encode_qa, resolve_prompt_format
from .undo_config import UndoConfig, check_noise_options


def _fresh_parameters(model, seed: int) -> dict[str, torch.Tensor]:
    """The parameters of a fresh model of `model`'s class built from its config (its own `_init_weights`), float32,
    on the CPU, drawn with `torch.manual_seed(seed)` inside a forked random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)._from_config(copy.deepcopy(model.config), dtype=torch.float32)
    return {name: p.detach() for name, p in fresh.named_parameters()}


def _xavier_noise(param: torch.Tensor, name: str, beta: float, generator: torch.Generator) -> torch.Tensor:
    """The authors' `do_corruption` noise for one parameter: beta x Xavier-uniform for a matrix, 0 for a vector."""
    if param.dim() == 2:
        fan_out, fan_in = param.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5  # torch.nn.init.xavier_uniform_ with gain 1
        noise = torch.empty(param.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
        return beta * noise
    if param.dim() == 1:
        return torch.zeros(param.shape, dtype=torch.float32)
    raise ValueError(f"noise_init='xavier' (the authors' form) handles matrices and vectors only; parameter {name!r} "
                     f"has shape {tuple(param.shape)}: use noise_init='model'.")


@torch.no_grad()
def shrink_and_perturb(model, noise_alpha: float, noise_init: str = "model", noise_beta: float = 0.1,
                       seed: int = 0) -> float:
    """UNDO's noise step, in place: every trainable parameter theta becomes (1 - alpha) theta + alpha noise.

    `noise_init="model"`: the noise is the parameter of a fresh model of the same class and config (its own
    initialisation, seeded by `seed`): alpha = 1 gives exactly `torch.manual_seed(seed); type(model)(config)`'s
    weights. `noise_init="xavier"`: the authors' code, noise_beta x Xavier-uniform for matrices, 0 for vectors.
    The mix is computed in float32 and stored in each parameter's dtype; alpha = 0 leaves every weight unchanged.
    The global random state is left as it was. Returns the fraction of the parameters that were mixed (the
    trainable ones, as the authors' code)."""
    check_noise_options(noise_alpha, noise_init, noise_beta)
    params = list(model.named_parameters())
    total = sum(p.numel() for _, p in params)
    trainable = [(n, p) for n, p in params if p.requires_grad]
    if noise_alpha == 0 or not trainable:
        return sum(p.numel() for _, p in trainable) / max(total, 1)
    if noise_init == "model":
        fresh = _fresh_parameters(model, seed)
        missing = sorted(n for n, p in trainable if n not in fresh or fresh[n].shape != p.shape)
        if missing:
            raise ValueError(f"noise_init='model': a fresh {type(model).__name__} from the config lacks (or shapes "
                             f"differently) {missing[:5]}; use noise_init='xavier'.")
    else:
        generator = torch.Generator().manual_seed(seed)
    for name, param in trainable:
        noise = fresh[name] if noise_init == "model" else _xavier_noise(param, name, noise_beta, generator)
        mixed = (1.0 - noise_alpha) * param.detach().float() + noise_alpha * noise.to(param.device)
        param.copy_(mixed.to(param.dtype))
    return sum(p.numel() for _, p in trainable) / max(total, 1)


class DistillDataset(Dataset):
    """Token ids of each row: a `text` column as it is (the tokenizer's special tokens added), or question/answer
    rows formatted as `ceu_rl.tofu.formatting.encode_qa` does (prompt and answer both kept), truncated to
    `max_length`."""

    def __init__(self, tokenizer, dataset, prompt_format: str = "plain", max_length: int = 256):
        if dataset is None or len(dataset) == 0:
            raise ValueError("The distillation dataset is empty: pass retain (and general) text, at least one row.")
        columns = list(dataset.column_names)
        if "text" in columns:
            self.items = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in dataset["text"]]
        elif "question" in columns and "answer" in columns:
            self.items = [encode_qa(tokenizer, q, a, prompt_format, max_length)["input_ids"]
                          for q, a in zip(dataset["question"], dataset["answer"])]
        else:
            raise ValueError(f"The distillation dataset has neither a 'text' column nor 'question' and 'answer' "
                             f"columns (columns: {columns}): rename yours, e.g. dataset.rename_column('content', "
                             "'text').")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {"input_ids": self.items[i]}


class DistillCollator:
    """Right-padded input_ids and attention_mask."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items):
        width = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(items), width), dtype=torch.long)
        for row, x in enumerate(items):
            ids[row, :len(x["input_ids"])] = torch.tensor(x["input_ids"])
            attn[row, :len(x["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": attn}


class UndoTrainer(Trainer):
    """UNDO after an unlearning run: `model` (the unlearned model) is copied as the frozen teacher (or
    `teacher_model` is used), then noised in place by `shrink_and_perturb` with `args.noise_*`, and trained as the
    student on forward KL(teacher || student) over every next-token position of `train_dataset` whose token is not
    padding.

    `self.distilled_tokens`: the positions distilled so far (this process); each costs one teacher forward and one
    student forward and backward (the study's compute count, docs/undo/README.md)."""

    def __init__(self, model, args: UndoConfig, train_dataset, processing_class=None, teacher_model=None, **kwargs):
        if not isinstance(args, UndoConfig):
            raise ValueError("args must be an UndoConfig (it carries noise_alpha and the noise settings).")
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required to tokenize the distillation data.")
        if isinstance(model, str) or (teacher_model is not None and isinstance(teacher_model, str)):
            raise ValueError("model and teacher_model must be loaded models (AutoModelForCausalLM.from_pretrained), "
                             "not ids: UNDO noises the student's weights in place.")
        tokenizer = processing_class
        teacher = copy.deepcopy(model) if teacher_model is None else teacher_model
        t_vocab, s_vocab = teacher.get_output_embeddings().weight.shape[0], model.get_output_embeddings().weight.shape[0]
        if t_vocab != s_vocab:
            raise ValueError(f"teacher_model has a vocabulary of {t_vocab} and model of {s_vocab}: distillation on the "
                             "full next-token distribution needs the same tokenizer and vocabulary.")
        seed = args.seed if args.noise_seed is None else args.noise_seed
        self.noised_fraction = shrink_and_perturb(model, args.noise_alpha, args.noise_init, args.noise_beta, seed)
        fmt = resolve_prompt_format(args.prompt_format, tokenizer, getattr(model.config, "_name_or_path", ""))
        data = DistillDataset(tokenizer, train_dataset, fmt, args.max_length)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        super().__init__(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         data_collator=DistillCollator(pad), **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is a per-micro-batch mean: divided by the accumulation steps
        teacher.eval().requires_grad_(False)
        self.teacher_model = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        self.distilled_tokens = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        with torch.no_grad():
            teacher_logits = self.teacher_model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]
        student_logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]
        mask = attn[:, 1:].bool()  # the next token is a real token (right padding), as the authors' pad mask
        loss = obj.forward_kl_loss(student_logits, teacher_logits, mask)
        if model.training:
            self.distilled_tokens += int(mask.sum())
        return (loss, None) if return_outputs else loss
