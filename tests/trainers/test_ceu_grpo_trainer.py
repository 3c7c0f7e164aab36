"""CEUGRPOTrainer: the gradient on a generated batch vs an independent full-logits computation, for every
`negative_objective` and loss type, sequence-level ratios, the entropy bonus and the KL term; negative_objective="pg"
is TRL exactly; clipped tokens get no gradient; None rewards; LoRA; bad configs."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
from ceu_rl.trainers.ceu_grpo_config import DEFAULT_NEGATIVE_OBJECTIVE

PROMPTS = ["Question: What is the capital of France?\nAnswer:", "Question: Name a colour.\nAnswer:",
           "Question: Which animal barks?\nAnswer:", "Question: What do bees make?\nAnswer:"]
GROUP = 4
SHARPEN = 20.0


def length_reward(completions, **kwargs):
    """Deterministic and varied: advantages of both signs within each group."""
    return [float(len(c) % 7) for c in completions]


def _args(tmp_path, config_cls=CEUGRPOConfig, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                num_generations=GROUP, max_completion_length=8, max_steps=2, learning_rate=1e-2, report_to=[],
                save_strategy="no", logging_steps=1, gradient_checkpointing=False, seed=0, temperature=0.7)
    base.update(kw)
    return config_cls(**base)


def _trainer(path, args, cls=CEUGRPOTrainer, reward=length_reward, prompts=PROMPTS * 2, **kw):
    torch.manual_seed(0)
    return cls(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward, args=args,
               train_dataset=Dataset.from_dict({"prompt": prompts}),
               processing_class=AutoTokenizer.from_pretrained(path), **kw)


def _generated_batch(trainer):
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.current_gradient_accumulation_steps = 1
    return trainer._prepare_inputs(batch)


def _token_logps(model, inputs, temperature):
    """Per-token completion log-probs and the full temperature-scaled logits, from a plain forward."""
    c_ids = inputs["completion_ids"]
    ids = torch.cat([inputs["prompt_ids"], c_ids], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, -c_ids.size(1) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, c_ids.unsqueeze(-1)).squeeze(-1), logits


def _naive_ce_u(logits, targets):
    masked = logits.detach().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(masked, -1)
    logp = torch.log_softmax(logits, -1)
    return -(torch.where(q > 0, q * logp, torch.zeros_like(logp))).sum(-1)


def _reference_divergence(inputs):
    """For each completion: longest common prefix with a positive completion of its group (plain Python)."""
    ids, mask, adv = inputs["completion_ids"].tolist(), inputs["completion_mask"].tolist(), inputs["advantages"]
    tokens = [[t for t, m in zip(row, ms) if m] for row, ms in zip(ids, mask)]
    out = []
    for i, toks in enumerate(tokens):
        group = range(i // GROUP * GROUP, i // GROUP * GROUP + GROUP)
        best = 0
        for j in (j for j in group if adv[j] > 0):
            n = 0
            while n < min(len(toks), len(tokens[j])) and toks[n] == tokens[j][n]:
                n += 1
            best = max(best, n)
        out.append(best)
    return torch.tensor(out)


def _pushed_logps(logp, logits, targets, advantages, objective, divergence, mix_lambda=0.5):
    """log pi with its value, and on negative-advantage tokens the gradient of the variant's objective written from
    full logits: CE-U (-> grad = p/(1-p) grad log p) where the variant uses CE-U, log p (the policy gradient) else;
    "ceu_mix": (1 - lambda) log p + lambda CE-U."""
    p = logp.detach().exp()
    ceu = _naive_ce_u(logits, targets)
    policy_gradient = logp - logp.detach()
    if objective == "ceu_mix":
        pushed = (1 - mix_lambda) * policy_gradient + mix_lambda * (ceu - ceu.detach())
    else:
        use_ceu = {"pg": torch.zeros_like(p, dtype=torch.bool), "ceu_full": torch.ones_like(p, dtype=torch.bool),
                   "ceu_min": p < 0.5, "ceu_prefix": torch.arange(p.size(1)) >= divergence.unsqueeze(1)}[objective]
        pushed = torch.where(use_ceu, ceu - ceu.detach(), policy_gradient)
    return torch.where(advantages < 0, logp.detach() + pushed, logp)


def _reference_loss(model, inputs, args, objective, divergence=None, extra_weight=None):
    """CE-U-GRPO's loss written out from full (temperature-scaled) logits, per TRL 1.16's formulas (value TRL's,
    gradient of the variant). `extra_weight(p, advantages, mask)`: a family weight, computed by the caller from the
    full-logits p, multiplying the gradient of each token's log pi."""
    logp, logits = _token_logps(model, inputs, args.temperature)
    mask = inputs["completion_mask"].float()
    a = inputs["advantages"].unsqueeze(1).expand_as(logp)
    old = inputs.get("old_per_token_logps")
    old = logp.detach() if old is None else old
    lam = _pushed_logps(logp, logits, inputs["completion_ids"], a, objective, divergence,
                        getattr(args, "ceu_mix_lambda", 0.5))
    if extra_weight is not None:
        lam = lam.detach() + extra_weight(torch.softmax(logits.double(), -1).gather(
            -1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1).float(), a, mask) * (lam - lam.detach())
    log_ratio = lam - old
    if args.importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1)).unsqueeze(1)
    r = torch.exp(log_ratio)
    eps_low, eps_high, loss_type = args.epsilon, args.epsilon_high or args.epsilon, args.loss_type
    if loss_type == "cispo":
        per_token = -torch.clamp(r, max=eps_high).detach() * a * lam
    elif loss_type == "sapo":
        tau = torch.where(a > 0, args.sapo_temperature_pos, args.sapo_temperature_neg)
        per_token = -torch.sigmoid(tau * (r - 1)) * 4 / tau * a
    elif loss_type == "vespo":
        log_w = ((lam - old).detach().clamp(-20, 20) * mask).sum(-1, keepdim=True).clamp(math.log(1e-8), 20)
        k = torch.where(a[:, :1] >= 0, args.vespo_k_pos, args.vespo_k_neg)
        lm = torch.where(a[:, :1] >= 0, args.vespo_lambda_pos, args.vespo_lambda_neg)
        per_token = -torch.exp(lm + k * log_w - lm * log_w.exp()) * a * lam
    else:
        per_token = -torch.min(r * a, torch.clamp(r, 1 - eps_low, 1 + eps_high) * a)
    if args.beta != 0.0:  # TRL's k3 KL on the true log-probs: its gradient is not reweighted
        ref = inputs["ref_per_token_logps"]
        per_token = per_token + args.beta * (torch.exp(ref - logp) - (ref - logp) - 1)
    if loss_type in ("grpo", "sapo"):
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * args.max_completion_length)
    elif loss_type == "luspo":
        loss = (per_token * mask).sum(-1).mean()
    else:  # dapo, cispo, vespo
        loss = (per_token * mask).sum() / inputs["num_items_in_batch"].clamp(min=1.0) * args.steps_per_generation
    if args.entropy_coef:
        probs = torch.softmax(logits, -1)
        entropy = -(probs * torch.log_softmax(logits, -1)).sum(-1)
        loss = loss - args.entropy_coef * (entropy * mask).sum() / mask.sum()
    return loss


@pytest.fixture(scope="module")
def sharp_model_path(tiny_model_path, tmp_path_factory):
    """The tiny model with its output layer scaled 20x: sampled tokens then span p ~ 0.01 to 0.999 (a random tiny
    model gives p ~ 1/V everywhere, where every CE-U variant coincides). Beyond 1 - p ~ 1e-4 the log-prob form's
    documented float32 limit (`ce_u_loss_from_logprobs`) would dominate the comparison."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    with torch.no_grad():
        model.lm_head.weight.mul_(SHARPEN)
    path = tmp_path_factory.mktemp("sharp")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def shared_prefix_batch(sharp_model_path, tmp_path_factory):
    """Two groups of four completions, off-policy old log-probs (ratios away from 1, some clipped), and negative
    completions that share a prefix with a positive one (so ceu_prefix has both regions)."""
    trainer = _trainer(sharp_model_path, _args(tmp_path_factory.mktemp("gen"), per_device_train_batch_size=8),
                       prompts=PROMPTS)
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    ids, mask, adv = inputs["completion_ids"], inputs["completion_mask"], inputs["advantages"]
    for g in range(0, ids.size(0), GROUP):
        rows = range(g, g + GROUP)
        pos = [i for i in rows if adv[i] > 0]
        neg = [i for i in rows if adv[i] < 0]
        assert pos and neg, "each group needs both signs"
        for k, i in enumerate(neg):  # prefixes of 1, 2, 3 tokens copied from a positive completion
            n = min(1 + k, int(mask[i].sum()) - 1, int(mask[pos[0]].sum()))
            ids[i, :n] = ids[pos[0], :n]
    inputs["ceu_divergence_index"] = trainer._divergence_index(inputs)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logp, _ = _token_logps(trainer.model, inputs, 0.7)
        inputs["ref_per_token_logps"] = logp + 0.3 * torch.randn(logp.shape, generator=gen)
        inputs["old_per_token_logps"] = logp + 0.15 * torch.randn(logp.shape, generator=gen)
    p = logp.exp()[(inputs["advantages"] < 0).unsqueeze(1).expand_as(logp) & inputs["completion_mask"].bool()]
    assert (p > 0.6).any() and (p < 0.4).any(), "both sides of p = 1/2, where ceu_min and ceu_full differ"
    assert p.max() < 0.9995, "within the log-prob form's float32 range"
    return inputs


def _check_gradient(tiny_model_path, tmp_path, inputs, objective, extra_weight=None, trainer_kwargs=None, **config):
    trainer = _trainer(tiny_model_path, _args(tmp_path, negative_objective=objective, per_device_train_batch_size=8,
                                              **config), **(trainer_kwargs or {}))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    if trainer.use_adaptive_entropy:
        trainer._last_world_entropy = 0.0  # as after a step whose entropy was below target: the bonus applies
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()
    divergence = _reference_divergence(inputs)
    ref = _reference_loss(trainer.model, inputs, trainer.args, objective, divergence, extra_weight)
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-4, atol=1e-6)
    for n, p in trainer.model.named_parameters():
        # float32, two routes (fused head vs full logits), weights up to p/(1-p) ~ 1e3: tolerance scaled to the tensor
        torch.testing.assert_close(ours[n], p.grad, rtol=2e-3, atol=1e-4 * p.grad.abs().max().item(),
                                   msg=lambda m, n=n: f"{n}: {m}")
    # the variant changed the gradient: it differs from TRL's policy gradient on the same batch
    trainer.model.zero_grad()
    _reference_loss(trainer.model, inputs, trainer.args, "ceu_prefix", torch.full_like(divergence, 99)).backward()
    assert any(not torch.allclose(ours[n], p.grad, rtol=1e-2, atol=1e-5) for n, p in trainer.model.named_parameters())
    return trainer


@pytest.mark.parametrize("objective", ["ceu_full", "ceu_min", "ceu_prefix"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gradient_equals_full_logits_formula(sharp_model_path, tmp_path, shared_prefix_batch, loss_type, objective):
    divergence = _reference_divergence(shared_prefix_batch)
    torch.testing.assert_close(shared_prefix_batch["ceu_divergence_index"], divergence)
    negative = shared_prefix_batch["advantages"] < 0
    assert (divergence[negative] > 0).any() and (divergence[negative] < shared_prefix_batch["completion_mask"][
        negative].sum(-1)).all(), "ceu_prefix needs shared and own tokens"
    trainer = _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, objective, loss_type=loss_type,
                              beta=0.0)
    metrics = trainer._metrics["train"]
    assert 0 < metrics["ceu/negative_fraction"][-1] < 1 and 0 < metrics["ceu/p_negative_mean"][-1] < 1
    assert 0 < metrics["ceu/shared_fraction"][-1] < 1 and metrics["loss/ceu_term"][-1] > 0


@pytest.mark.parametrize("objective, config", [
    ("ceu_full", dict(loss_type="cispo", epsilon_high=5.0)),
    ("ceu_min", dict(loss_type="luspo", importance_sampling_level="sequence")),
    ("ceu_full", dict(loss_type="sapo")),
    ("ceu_prefix", dict(loss_type="vespo")),
    ("ceu_full", dict(loss_type="dapo", importance_sampling_level="sequence")),
    ("ceu_min", dict(loss_type="grpo", entropy_coef=0.05)),
    ("ceu_full", dict(loss_type="dapo", use_adaptive_entropy=True, entropy_coef=0.05, entropy_target=10.0)),
    ("ceu_prefix", dict(loss_type="bnpo", beta=0.1, use_bias_correction_kl=False)),
])
def test_trl_options_gradient_equals_full_logits_formula(sharp_model_path, tmp_path, shared_prefix_batch, objective,
                                                         config):
    _check_gradient(sharp_model_path, tmp_path, shared_prefix_batch, objective, **{"beta": 0.0, **config})


def test_default_and_alias(tmp_path):
    default = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert default.negative_objective == DEFAULT_NEGATIVE_OBJECTIVE == "pg"  # docs/grpo_compare: no CE-U variant qualified
    assert _args(tmp_path, negative_objective="ceu").negative_objective_name == "ceu_full"


def test_pg_is_exactly_trl(tiny_model_path, tmp_path):
    # each trainer seeds at init; build and train one after the other so that sampling sees the same RNG state
    ours = _trainer(tiny_model_path, _args(tmp_path / "a", negative_objective="pg"))
    ours.train()
    trl = _trainer(tiny_model_path, _args(tmp_path / "b", GRPOConfig), cls=GRPOTrainer)
    trl.train()

    def strip(h):  # timings differ; our extra metrics (p and fraction of negative tokens) are not TRL's
        return {k: v for k, v in h.items() if not any(s in k for s in ("runtime", "per_second", "time", "ceu/"))}

    assert [strip(h) for h in ours.state.log_history] == [strip(h) for h in trl.state.log_history]
    assert all("ceu/p_negative_mean" in h and "ceu/p_shared_mean" in h for h in ours.state.log_history if "loss" in h)
    for (n, p1), (_, p2) in zip(ours.model.named_parameters(), trl.model.named_parameters()):
        assert torch.equal(p1, p2), n


@pytest.mark.parametrize("objective", ["ceu_full", "ceu_min"])
def test_clipped_negative_tokens_get_no_gradient(tiny_model_path, tmp_path, objective):
    trainer = _trainer(tiny_model_path, _args(tmp_path, negative_objective=objective))
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


def test_prefix_variant_trains_with_shuffled_batches(tiny_model_path, tmp_path):
    """Two groups per generation batch, split over two accumulation steps after TRL's shuffle."""
    trainer = _trainer(tiny_model_path, _args(tmp_path, negative_objective="ceu_prefix", gradient_accumulation_steps=2,
                                              max_steps=1), prompts=PROMPTS)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all(math.isfinite(h["loss"]) and 0 <= h["ceu/shared_fraction"] <= 1 for h in logs)


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
    (dict(negative_objective="ga"), r"negative_objective='ga' is not known; use one of \('pg', 'ceu_full'"),
    (dict(beta=0.1, negative_objective="ceu_min"), "use_bias_correction_kl=True with beta=0.1 is not supported"),
    (dict(loss_type="ppo_new", negative_objective="ceu_min"),
     r"loss_type='ppo_new' is not supported with negative_objective='ceu_min'; use one of \('grpo'"),
])
def test_unsupported_combinations(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kw)
