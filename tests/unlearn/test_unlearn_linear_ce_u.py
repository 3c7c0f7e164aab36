"""UnlearnTrainer's CE-U objectives through linear_ce_u_loss: loss and every parameter gradient equal a float64
full-logits reference (naive CE-U formula differentiated by autograd), with separate and tied embeddings; heads that
are not a plain Linear fall back to the log-prob form with a warning."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import UnlearnConfig, UnlearnTrainer
from ceu_rl.tiny_models import save_tiny_model

from .test_unlearn_trainer import FORGET, RETAIN


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    texts = [*FORGET["question"], *FORGET["answer"], *RETAIN["question"], *RETAIN["answer"]]
    return str(save_tiny_model(tmp_path_factory.mktemp("linear-ce-u-tiny"), texts * 5, vocab_size=300))


def _trainer(path, tmp_path, objective, tied=False, peft_config=None, **kw):
    model = AutoModelForCausalLM.from_pretrained(path)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    args = UnlearnConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=3, max_steps=1,
                         learning_rate=1e-2, save_strategy="no", prompt_format="plain", max_length=64, seed=0,
                         objective=objective, **kw)
    return UnlearnTrainer(model=model, args=args, forget_dataset=FORGET, retain_dataset=RETAIN,
                          processing_class=AutoTokenizer.from_pretrained(path), peft_config=peft_config)


def _reference_loss(model64, batch, unlearn):
    """Sum of per-token CE-U (unlearn) or CE values on full float64 logits, and the token count."""
    z = model64(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    z, y = z[valid], labels[valid]
    logp = torch.log_softmax(z, -1)
    if not unlearn:
        return -logp.gather(1, y[:, None]).sum(), len(y)
    masked = z.detach().clone()
    masked[torch.arange(len(y)), y] = float("-inf")
    q = torch.softmax(masked, -1)
    return -torch.where(q > 0, q * logp, torch.zeros_like(logp)).sum(), len(y)


@pytest.mark.parametrize("objective,tied", [("ce_u", False), ("ce_u", True), ("ce_u_retain", False)])
def test_trainer_loss_and_gradients_equal_float64_full_logits(tiny_path, tmp_path, objective, tied):
    trainer = _trainer(tiny_path, tmp_path, objective, tied=tied)
    assert trainer._linear_ce_u
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model64 = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float64)  # same weights, unpatched
    if tied:
        model64.lm_head.weight = model64.model.embed_tokens.weight
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()

    forget = dict(batch["forget"])
    labels = forget["labels"].clone()
    for row in labels:  # the trainer skips the first answer token (ignore_first_n_answer_tokens=1)
        row[(row != -100).nonzero()[0]] = -100
    forget["labels"] = labels
    total, count = _reference_loss(model64, forget, unlearn=True)
    if objective == "ce_u_retain":
        r_total, r_count = _reference_loss(model64, batch["retain"], unlearn=False)
        total, count = total + r_total, count + r_count
    expected = total / count
    expected.backward()
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name, p64 in model64.named_parameters():
        assert grads[name] is not None, name
        scale = p64.grad.abs().max().item()
        torch.testing.assert_close(grads[name].double(), p64.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_lora_head_falls_back_to_logprob_form_with_reason(tiny_path, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM")
    with pytest.warns(UserWarning, match="not a plain torch.nn.Linear .* falls back to TRL's fused log-prob head"):
        trainer = _trainer(tiny_path, tmp_path, "ce_u", peft_config=lora)
    assert not trainer._linear_ce_u
    trainer.train()
    assert len([h for h in trainer.state.log_history if "loss/forget" in h]) == 1


def test_fused_linear_can_be_switched_off(tiny_path, tmp_path):
    assert not _trainer(tiny_path, tmp_path, "ce_u", ce_u_fused_linear=False)._linear_ce_u
    assert not _trainer(tiny_path, tmp_path, "ce_u", ce_u_from_logits=True)._linear_ce_u
    assert not _trainer(tiny_path, tmp_path, "ga")._linear_ce_u
