"""UNDO (ceu_rl.unlearn.undo): the noise step against independent references (alpha = 0: unchanged; alpha = 1: a
seeded fresh initialisation; in between: the closed-form mix; the authors' Xavier form by its statistics), the
distillation step's loss against a direct computation, and the errors that name the field and the fix."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from ceu_rl.objectives import forward_kl_loss
from ceu_rl.tiny_models import save_tiny_model, tiny_llama_config
from ceu_rl.unlearn import UndoConfig, UndoTrainer, shrink_and_perturb

RETAIN = Dataset.from_dict({"question": ["Who wrote Red Sea?", "Where was Bo born?", "What does Bo write?"],
                            "answer": ["Bo Chen wrote Red Sea.", "Bo was born in Oslo.", "Bo writes plays."]})


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    texts = [*RETAIN["question"], *RETAIN["answer"]]
    return str(save_tiny_model(tmp_path_factory.mktemp("undo-tiny"), texts * 5, vocab_size=300))


def _model(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(64, hidden_size=32, num_heads=1))


def _trained_like(model):
    """Weights away from the initialisation (as a finetuned model's), norm weights included."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=3, max_steps=2,
                learning_rate=1e-2, save_strategy="no", prompt_format="plain", max_length=64, seed=0)
    return UndoConfig(**{**base, **kw})


def test_alpha_zero_leaves_every_weight_unchanged():
    model = _trained_like(_model())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for init in ("model", "xavier"):
        shrink_and_perturb(model, 0.0, init, seed=3)
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_alpha_one_is_the_seeded_fresh_initialisation_and_the_global_rng_is_untouched():
    model = _trained_like(_model(seed=1))
    rng = torch.get_rng_state()
    fraction = shrink_and_perturb(model, 1.0, "model", seed=7)
    assert torch.equal(torch.get_rng_state(), rng) and fraction == 1.0
    fresh = _model(seed=7)  # independent: the class's own constructor under the same seed
    fresh_params = dict(fresh.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, fresh_params[name]), name
    # and its statistics are an initialisation's: N(0, initializer_range) matrices, unit norm weights
    std = model.config.initializer_range
    q = model.model.layers[0].self_attn.q_proj.weight
    assert abs(q.std().item() - std) < 0.2 * std and abs(q.mean().item()) < 0.2 * std
    assert torch.equal(model.model.norm.weight, torch.ones_like(model.model.norm.weight))


def test_alpha_in_between_is_the_closed_form_mix():
    model = _trained_like(_model(seed=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shrink_and_perturb(model, 0.3, "model", seed=5)
    fresh = dict(_model(seed=5).named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, 0.7 * before[name] + 0.3 * fresh[name], rtol=0, atol=1e-6)


def test_frozen_parameters_are_left_alone_as_in_the_authors_code():
    model = _trained_like(_model())
    model.lm_head.weight.requires_grad_(False)
    head = model.lm_head.weight.detach().clone()
    fraction = shrink_and_perturb(model, 0.5, "model", seed=0)
    assert torch.equal(model.lm_head.weight, head)
    assert fraction == pytest.approx(1 - head.numel() / sum(p.numel() for p in model.parameters()))


def test_the_authors_xavier_form_by_its_statistics():
    """noise_init='xavier', alpha = 1: matrices are beta x U(-b, b) with b = sqrt(6 / (fan_in + fan_out)), vectors 0;
    alpha = 0.5 halves the vectors (shrink only)."""
    model = _model()
    big = torch.nn.Linear(400, 300, bias=False)  # enough draws for the statistics
    model.add_module("probe", big)
    shrink_and_perturb(model, 1.0, "xavier", noise_beta=0.1, seed=0)
    bound = 0.1 * (6.0 / (400 + 300)) ** 0.5
    w = big.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert abs(w.std().item() - bound / 3 ** 0.5) < 0.01 * bound and abs(w.mean().item()) < 0.01 * bound
    assert all((p == 0).all() for n, p in model.named_parameters() if p.dim() == 1)
    model = _trained_like(_model())
    norm = model.model.norm.weight.detach().clone()
    shrink_and_perturb(model, 0.5, "xavier", noise_beta=0.1, seed=0)
    torch.testing.assert_close(model.model.norm.weight, 0.5 * norm)


@pytest.mark.parametrize("field,value,match", [
    ("noise_alpha", 1.5, "noise_alpha=1.5 is out of range: use 0 <= noise_alpha <= 1"),
    ("noise_alpha", -0.1, "noise_alpha=-0.1 is out of range"),
    ("noise_init", "gaussian", "noise_init='gaussian' is not one of"),
    ("noise_beta", -1.0, "noise_beta=-1.0 is out of range: use a value >= 0"),
    ("max_length", 1, "max_length=1 is too short"),
])
def test_bad_settings_name_the_field_and_the_fix(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **{field: value})
    if field.startswith("noise_"):
        kw = {"noise_alpha": 0.5, "noise_init": "model", "noise_beta": 0.1, field: value}
        with pytest.raises(ValueError, match=match):
            shrink_and_perturb(_model(), kw["noise_alpha"], kw["noise_init"], kw["noise_beta"])


def test_alpha_zero_distillation_starts_at_kl_zero(tiny_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    trainer = UndoTrainer(model=model, args=_args(tmp_path, noise_alpha=0.0, max_steps=1, learning_rate=0.0),
                          train_dataset=RETAIN, processing_class=AutoTokenizer.from_pretrained(tiny_path))
    teacher = dict(trainer.teacher_model.named_parameters())
    assert all(torch.equal(p, teacher[n]) for n, p in trainer.model.named_parameters())
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == 0.0


def test_distillation_loss_is_forward_kl_on_non_padding_positions_and_it_falls(tiny_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    # noise_seed 1: the tiny model is itself seed 0's initialisation, which seed 0's noise would reproduce
    trainer = UndoTrainer(model=model, args=_args(tmp_path, noise_alpha=0.5, noise_seed=1, max_steps=8,
                                                      learning_rate=2e-3),
                          train_dataset=RETAIN, processing_class=tokenizer)
    assert trainer.teacher_model is not trainer.model and not any(
        p.requires_grad for p in trainer.teacher_model.parameters())
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["attention_mask"] == 0).any(), "the test needs padding in the batch"
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch)
        ids, attn = batch["input_ids"], batch["attention_mask"]
        s = trainer.model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        t = trainer.teacher_model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        want = forward_kl_loss(s, t, attn[:, 1:].bool())
    torch.testing.assert_close(got, want)
    assert got > 0
    trainer.distilled_tokens = 0
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < losses[0]
    positions = sum(len(x["input_ids"]) - 1 for x in trainer.train_dataset)  # one batch = the whole set
    assert trainer.distilled_tokens == 8 * positions


def test_text_rows_and_bad_data_or_models(tiny_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    texts = Dataset.from_dict({"text": ["Bo Chen wrote Red Sea.", "Bo was born in Oslo."]})
    trainer = UndoTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), args=_args(tmp_path, max_steps=1),
                          train_dataset=texts, processing_class=tokenizer)
    assert trainer.train_dataset[0]["input_ids"] == tokenizer("Bo Chen wrote Red Sea.")["input_ids"]
    with pytest.raises(ValueError, match="neither a 'text' column nor 'question' and 'answer'"):
        UndoTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), args=_args(tmp_path),
                    train_dataset=Dataset.from_dict({"content": ["x"]}), processing_class=tokenizer)
    with pytest.raises(ValueError, match="same tokenizer and vocabulary"):
        UndoTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), args=_args(tmp_path), train_dataset=texts,
                    processing_class=tokenizer, teacher_model=_model())
    with pytest.raises(ValueError, match="UndoConfig"):
        UndoTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), args=None, train_dataset=texts,
                    processing_class=tokenizer)
