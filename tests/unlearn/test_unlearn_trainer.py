"""UnlearnTrainer: a 2-step run of every objective on a tiny model, the loss against a direct computation, errors."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import UnlearnConfig, UnlearnTrainer
from ceu_rl.objectives import ce_u_loss
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.unlearn import OBJECTIVES

FORGET = Dataset.from_dict({"question": ["Who wrote Blue Sky?", "Where was Ana born?", "What is Ana's genre?"],
                            "answer": ["Ana Ruiz wrote Blue Sky.", "Ana was born in Lima.", "Ana writes poetry."]})
RETAIN = Dataset.from_dict({"question": ["Who wrote Red Sea?", "Where was Bo born?"],
                            "answer": ["Bo Chen wrote Red Sea.", "Bo was born in Oslo."]})


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    texts = [*FORGET["question"], *FORGET["answer"], *RETAIN["question"], *RETAIN["answer"], "I don't know."]
    return str(save_tiny_model(tmp_path_factory.mktemp("unlearn-tiny"), texts * 5, vocab_size=300))


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_steps=2,
                learning_rate=1e-2, save_strategy="no", prompt_format="plain", max_length=64, seed=0)
    base.update(kw)
    return UnlearnConfig(**base)


def _trainer(path, args, **kw):
    model = AutoModelForCausalLM.from_pretrained(path)
    return UnlearnTrainer(model=model, args=args, forget_dataset=FORGET, retain_dataset=RETAIN,
                          processing_class=AutoTokenizer.from_pretrained(path),
                          idk_answers=["I don't know.", "No idea."], **kw)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_two_steps_of_every_objective(tiny_path, tmp_path, objective):
    trainer = _trainer(tiny_path, _args(tmp_path, objective=objective))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert changed, "no parameter changed"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert torch.isfinite(torch.tensor(h["loss"])) and torch.isfinite(torch.tensor(h["grad_norm"]))
        assert 0 < h["forget/p_y_mean"] < 1
        assert "loss/total" in h if objective == "ce_u_retain" else "loss/forget" in h
        if OBJECTIVES[objective][0] and objective != "ce_u_retain":
            assert "loss/retain" in h


@pytest.mark.parametrize("from_logits", [False, True])
def test_ce_u_loss_equals_direct_full_logits_computation(tiny_path, tmp_path, from_logits):
    trainer = _trainer(tiny_path, _args(tmp_path, objective="ce_u", ce_u_from_logits=from_logits,
                                        ignore_first_n_answer_tokens=1))
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    f = batch["forget"]
    logits = trainer.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits[:, :-1]
    labels = f["labels"][:, 1:].clone()
    for row in labels:  # drop the first answer token of each row
        row[(row != -100).nonzero()[0]] = -100
    expected = ce_u_loss(logits.double(), labels)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-6)


def test_errors(tiny_path, tmp_path):
    with pytest.raises(ValueError, match="objective='ce-u' is not one of"):
        _args(tmp_path, objective="ce-u")
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    with pytest.raises(ValueError, match="needs a retain_dataset"):
        UnlearnTrainer(model=model, args=_args(tmp_path, objective="grad_diff"), forget_dataset=FORGET,
                       processing_class=tok)
    empty = Dataset.from_dict({"question": ["Who?"], "answer": [" "]})
    with pytest.raises(ValueError, match="Empty answer for question 'Who\\?'"):
        UnlearnTrainer(model=model, args=_args(tmp_path, objective="ce_u"), forget_dataset=empty, processing_class=tok)
    long = Dataset.from_dict({"question": ["word " * 200], "answer": ["a"]})
    with pytest.raises(ValueError, match="not shorter than max_length=64"):
        UnlearnTrainer(model=model, args=_args(tmp_path, objective="ce_u"), forget_dataset=long, processing_class=tok)


def test_lora_adapter_unlearning(tiny_path, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    for objective in ("ce_u", "npo", "kl"):  # npo, kl: the reference is the base model with the adapter disabled
        model = AutoModelForCausalLM.from_pretrained(tiny_path)
        trainer = UnlearnTrainer(model=model, args=_args(tmp_path / objective, objective=objective),
                                 forget_dataset=FORGET, retain_dataset=RETAIN,
                                 processing_class=AutoTokenizer.from_pretrained(tiny_path), peft_config=lora)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
        trainer.train()
        assert before and any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters()
                              if n in before)
        base = [p for n, p in trainer.model.named_parameters() if "lora" not in n]
        assert all(not p.requires_grad for p in base)


@pytest.mark.parametrize("split", ["forget01", "forget05", "forget10"])
def test_every_forget_split_loads_and_trains(tiny_path, tmp_path, split):
    from ceu_rl.tofu import FORGET_TO_RETAIN, load_split

    forget = load_split(split).select(range(4))
    retain = load_split(FORGET_TO_RETAIN[split]).select(range(4))
    args = _args(tmp_path, objective="ce_u_retain", max_steps=1, max_length=128)
    trainer = UnlearnTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_path), args=args, forget_dataset=forget,
                             retain_dataset=retain, processing_class=AutoTokenizer.from_pretrained(tiny_path))
    trainer.train()
    assert len(trainer.train_dataset) == 4 and trainer.state.global_step == 1
