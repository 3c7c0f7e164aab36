"""CEUGRPOTrainer: gradient on a generated batch vs an independent full-logits computation for each supported loss
type; negative_objective="pg" is TRL exactly; clipped tokens get no gradient; None rewards; LoRA; bad configs."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer

PROMPTS = ["Question: What is the capital of France?\nAnswer:", "Question: Name a colour.\nAnswer:",
           "Question: Which animal barks?\nAnswer:", "Question: What do bees make?\nAnswer:"]


def length_reward(completions, **kwargs):
    """Deterministic and varied: advantages of both signs within each group."""
    return [float(len(c) % 7) for c in completions]


def _args(tmp_path, config_cls=CEUGRPOConfig, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                max_completion_length=8, max_steps=2, learning_rate=1e-2, report_to=[], save_strategy="no",
                logging_steps=1, gradient_checkpointing=False, seed=0, temperature=0.7)
    base.update(kw)
    return config_cls(**base)


def _trainer(path, args, cls=CEUGRPOTrainer, reward=length_reward, **kw):
    torch.manual_seed(0)
    return cls(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward, args=args,
               train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
               processing_class=AutoTokenizer.from_pretrained(path), **kw)


def _generated_batch(trainer):
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.current_gradient_accumulation_steps = 1
    return trainer._prepare_inputs(batch)


def _naive_ce_u(logits, targets):
    masked = logits.detach().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(masked, -1)
    logp = torch.log_softmax(logits, -1)
    return -(torch.where(q > 0, q * logp, torch.zeros_like(logp))).sum(-1)


def _reference_loss(model, inputs, args, loss_type):
    """The CE-U-GRPO objective written out from full (temperature-scaled) logits."""
    p_ids, c_ids = inputs["prompt_ids"], inputs["completion_ids"]
    ids = torch.cat([p_ids, c_ids], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    t = c_ids.size(1)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, -t - 1:-1].float() / args.temperature
    logp = torch.log_softmax(logits, -1).gather(-1, c_ids.unsqueeze(-1)).squeeze(-1)
    old = inputs.get("old_per_token_logps")
    old = logp.detach() if old is None else old
    a = inputs["advantages"].unsqueeze(1).expand_as(logp)
    r = torch.exp(logp - old)
    positive = -torch.min(r * a, torch.clamp(r, 1 - args.epsilon, 1 + args.epsilon) * a)
    negative = a.abs() * r.detach() * (r.detach() >= 1 - args.epsilon) * _naive_ce_u(logits, c_ids)
    per_token = torch.where(a < 0, negative, positive)
    mask = inputs["completion_mask"]
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.size(0) * args.max_completion_length)
    return (per_token * mask).sum() / inputs["num_items_in_batch"].clamp(min=1.0) * args.steps_per_generation


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gradient_equals_full_logits_formula(tiny_model_path, tmp_path, loss_type):
    trainer = _trainer(tiny_model_path, _args(tmp_path, loss_type=loss_type))
    inputs = _generated_batch(trainer)
    assert (inputs["advantages"] < 0).any() and (inputs["advantages"] > 0).any()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()
    ref = _reference_loss(trainer.model, inputs, trainer.args, loss_type)
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-4, atol=1e-6)
    for n, p in trainer.model.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=2e-3, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    metrics = trainer._metrics["train"]
    assert 0 < metrics["ceu/negative_fraction"][-1] < 1 and 0 < metrics["ceu/p_negative_mean"][-1] < 1


def test_pg_is_exactly_trl(tiny_model_path, tmp_path):
    # each trainer seeds at init; build and train one after the other so that sampling sees the same RNG state
    ours = _trainer(tiny_model_path, _args(tmp_path / "a", negative_objective="pg"))
    ours.train()
    trl = _trainer(tiny_model_path, _args(tmp_path / "b", GRPOConfig), cls=GRPOTrainer)
    trl.train()
    def strip(h):  # timings differ; our two extra metrics (p and fraction of negative tokens) are not TRL's
        return {k: v for k, v in h.items() if not any(s in k for s in ("runtime", "per_second", "time", "ceu/"))}

    assert [strip(h) for h in ours.state.log_history] == [strip(h) for h in trl.state.log_history]
    assert all("ceu/p_negative_mean" in h for h in ours.state.log_history if "loss" in h)
    for (n, p1), (_, p2) in zip(ours.model.named_parameters(), trl.model.named_parameters()):
        assert torch.equal(p1, p2), n


def test_clipped_negative_tokens_get_no_gradient(tiny_model_path, tmp_path):
    trainer = _trainer(tiny_model_path, _args(tmp_path))
    inputs = _generated_batch(trainer)
    inputs["advantages"] = -inputs["advantages"].abs().clamp(min=0.5)  # every completion negative
    # old log-probs far above the current ones: r = exp(logp - old) < 1 - eps everywhere
    with torch.no_grad():
        logp, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1), inputs["completion_ids"].size(1))
    inputs["old_per_token_logps"] = logp + 1.0
    trainer.compute_loss(trainer.model, inputs).backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in trainer.model.parameters())


def test_reward_returning_none_is_handled_as_trl(tiny_model_path, tmp_path):
    def sometimes_none(completions, **kwargs):
        return [None if i % 3 == 0 else float(len(c) % 5) for i, c in enumerate(completions)]

    trainer = _trainer(tiny_model_path, _args(tmp_path), reward=[sometimes_none, length_reward])
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_lora(tiny_model_path, tmp_path):
    from peft import LoraConfig

    trainer = _trainer(tiny_model_path, _args(tmp_path),
                       peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)


@pytest.mark.parametrize("kw, match", [
    (dict(loss_type="cispo"), "loss_type='cispo' is not supported"),
    (dict(importance_sampling_level="sequence"), "importance_sampling_level"),
    (dict(use_liger_kernel=True), "use_liger_kernel"),
    (dict(negative_objective="ga"), "negative_objective='ga'"),
])
def test_unsupported_combinations(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kw)
