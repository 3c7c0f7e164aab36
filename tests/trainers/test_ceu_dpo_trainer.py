"""CEUDPOTrainer: gradients against an independent full-logits computation, exactness vs TRL, and the TRL features."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer


def _config(tmp_path, config_cls=CEUDPOConfig, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=3, max_steps=2,
                report_to=[], gradient_checkpointing=False, logging_steps=1, save_strategy="no", learning_rate=1e-2,
                beta=0.5, max_length=64)
    base.update(kw)
    return config_cls(**base)


def _trainer(path, dataset, args, cls=CEUDPOTrainer, seed=0, **kw):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(path)
    ref = None if kw.pop("no_ref", False) else AutoModelForCausalLM.from_pretrained(path)
    return cls(model=model, ref_model=ref, args=args, train_dataset=dataset,
               processing_class=AutoTokenizer.from_pretrained(path), **kw)


def _batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer._prepare_inputs(batch)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _trainer_gradients(trainer):
    """One batch through the trainer's own compute_loss on a perturbed policy: (batch, loss, parameter gradients)."""
    _perturb(trainer.model)
    trainer.model.train()
    batch = _batch(trainer)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    ours = _grads(trainer.model)
    trainer.model.zero_grad()
    return batch, loss, ours


def _perturb(model, seed=1):
    """Move the policy away from the reference so that sigma(-u) != 1/2 and every term is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _full_logits_logps(model, batch):
    """Per-token completion log-probs and full logits, from a plain forward (no fused head)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].bool()
    token_logps = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logits, targets, mask, token_logps * mask


def _naive_ce_u(logits, targets):
    """CE(q, p), q = softmax(sg(z) with z_y = -inf): written out, no ceu_rl code."""
    masked = logits.detach().float().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(masked, -1)
    logp = torch.log_softmax(logits.float(), -1)
    return -(torch.where(q > 0, q * logp, torch.zeros_like(logp))).sum(-1)


def _f_prime(d, f_divergence, alpha):
    """f'(pi/pi_ref) from the log-ratio d, per f-divergence (TRL's f-DPO scores)."""
    if f_divergence == "forward_kl":
        return 1 - torch.exp(-d)
    if f_divergence == "js_divergence":
        return math.log(2) + F.logsigmoid(d)
    if f_divergence == "alpha_divergence":
        return (torch.exp((alpha - 1) * d) - 1) / (alpha - 1)
    return d


def _reference_ceu_dpo_loss(model, ref_model, batch, beta, gamma, f_divergence="reverse_kl", alpha=0.5,
                            ld_alpha=None, use_weighting=False):
    """CE-U-DPO written out from full logits: DPO's sigmoid loss body (with TRL's f-divergence, LD-DPO and WPO
    formulas) whose rejected-token log-probs keep their value but carry gamma * grad CE-U (naive, full logits).
    Returns (loss, u, ceu_term): loss value DPO's; ceu_term = gamma sg(adaptive weight) sum_t CE-U, per pair."""
    logits, targets, mask, token_logps = _full_logits_logps(model, batch)
    with torch.no_grad():
        _, _, _, ref_token_logps = _full_logits_logps(ref_model, batch)
    n = batch["input_ids"].shape[0] // 2
    ceu = _naive_ce_u(logits[n:], targets[n:]) * mask[n:]
    pushed = token_logps.clone()
    pushed[n:] = token_logps[n:].detach() + gamma * (ceu - ceu.detach())
    if ld_alpha is None:
        seq_weight = mask.float()
    else:  # LD-DPO: tokens past the shorter completion of the pair count alpha
        position = mask.long().cumsum(1)
        lengths = mask.sum(1)
        shared = torch.minimum(lengths[:n], lengths[n:]).repeat(2).unsqueeze(1)
        seq_weight = ((position > 0) & (position <= shared)).float() + ld_alpha * (position > shared).float()
    d = (pushed * seq_weight).sum(1) - (ref_token_logps * seq_weight).sum(1)
    scores = _f_prime(d, f_divergence, alpha)
    per_pair = -F.logsigmoid(beta * (scores[:n] - scores[n:]))
    if use_weighting:  # WPO: exp(mean_t log p_t - log sum_v p_v^2) per completion, chosen x rejected, detached
        with torch.no_grad():
            log_sum_sq = torch.logsumexp(2 * torch.log_softmax(logits.float(), -1), -1)
            w = torch.exp(((token_logps - log_sum_sq) * mask).sum(1) / mask.sum(1).clamp(min=1))
        per_pair = per_pair * w[:n] * w[n:]
    loss = per_pair.mean()
    (adaptive,) = torch.autograd.grad(loss, pushed, retain_graph=True)
    ceu_term = gamma * (adaptive[n:] * n * ceu.detach()).sum(1)
    return loss, (beta * (d[:n] - d[n:])).detach(), ceu_term


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_gradient_equals_full_logits_formula(tiny_model_path, preference_dataset, tmp_path, gamma):
    trainer = _trainer(tiny_model_path, preference_dataset, _config(tmp_path, loss_type="ceu", ceu_weight=gamma))
    batch, loss, ours = _trainer_gradients(trainer)
    ref_loss, u, ceu_term = _reference_ceu_dpo_loss(trainer.model, trainer.ref_model, batch, 0.5, gamma)
    ref_loss.backward()
    expected = _grads(trainer.model)
    assert not torch.allclose(u, torch.zeros_like(u), atol=1e-3)  # the adaptive weight is not trivially 1/2
    # the CE-U-DPO objective as first written (ceu_dpo_loss): its gradient is the same
    trainer.model.zero_grad()
    logits, targets, mask, token_logps = _full_logits_logps(trainer.model, batch)
    with torch.no_grad():
        _, _, _, ref_token_logps = _full_logits_logps(trainer.ref_model, batch)
    n = batch["input_ids"].shape[0] // 2
    dw = token_logps[:n].sum(1) - ref_token_logps[:n].sum(1)
    dl = token_logps[n:].sum(1) - ref_token_logps[n:].sum(1)
    ceu = (_naive_ce_u(logits[n:], targets[n:]) * mask[n:]).sum(1)
    written = -F.logsigmoid(0.5 * (dw - dl.detach())) + gamma * (0.5 * torch.sigmoid(-0.5 * (dw - dl))).detach() * ceu
    written.mean().backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=2e-4, atol=1e-5)
    assert ours.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=2e-3, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(trainer.model.get_parameter(name).grad, expected[name], rtol=2e-3, atol=1e-6)
    metrics = trainer._metrics["train"]
    for key in ("loss/dpo_term", "loss/ceu_term", "ceu/p_rejected_mean", "logps/rejected_token_min",
                "logps/rejected_token_mean", "rewards/margins", "rewards/accuracies"):
        assert len(metrics[key]) == 1, key
    assert 0 < metrics["ceu/p_rejected_mean"][0] < 1
    # the logged CE-U term is the written objective's second term: gamma sg(beta sigma(-u)) sum_t CE-U
    assert metrics["loss/ceu_term"][0] == pytest.approx(ceu_term.mean().item(), rel=1e-3)
    assert metrics["loss/ceu_term"][0] == pytest.approx((written.mean() - ref_loss).item(), rel=1e-3)


@pytest.mark.parametrize("options", [
    dict(f_divergence_type="forward_kl"),
    dict(f_divergence_type="js_divergence"),
    dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5),
    dict(ld_alpha=0.5),
    dict(use_weighting=True),
])
def test_trl_options_gradient_equals_full_logits_formula(tiny_model_path, preference_dataset, tmp_path, options):
    trainer = _trainer(tiny_model_path, preference_dataset, _config(tmp_path, loss_type="ceu", **options))
    batch, loss, ours = _trainer_gradients(trainer)
    ref_loss, _, ceu_term = _reference_ceu_dpo_loss(
        trainer.model, trainer.ref_model, batch, 0.5, 1.0, options.get("f_divergence_type", "reverse_kl"),
        options.get("f_alpha_divergence_coef", 0.5), options.get("ld_alpha"), options.get("use_weighting", False))
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=2e-4, atol=1e-5)
    for name, grad in _grads(trainer.model).items():
        torch.testing.assert_close(ours[name], grad, rtol=2e-3, atol=1e-4 * grad.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert trainer._metrics["train"]["loss/ceu_term"][0] == pytest.approx(ceu_term.mean().item(), rel=1e-3)


def test_gamma_zero_leaves_trls_chosen_part(tiny_model_path, preference_dataset, tmp_path):
    ceu = _trainer(tiny_model_path, preference_dataset, _config(tmp_path, loss_type="ceu", ceu_weight=0.0))
    trl = _trainer(tiny_model_path, preference_dataset, _config(tmp_path, DPOConfig), cls=DPOTrainer)
    for t in (ceu, trl):
        _perturb(t.model)
        t.model.train()
    batch = _batch(ceu)
    ceu.compute_loss(ceu.model, batch).backward()
    trl.compute_loss(trl.model, batch).backward()
    g_ceu, g_trl = _grads(ceu.model), _grads(trl.model)
    # TRL's gradient minus its rejected part (beta sigma(-u) grad D_l, computed independently) is the chosen part
    trl.model.zero_grad()
    _, _, mask, token_logps = _full_logits_logps(trl.model, batch)
    with torch.no_grad():
        _, _, _, ref_token_logps = _full_logits_logps(trl.ref_model, batch)
    n = batch["input_ids"].shape[0] // 2
    d = token_logps.sum(1) - ref_token_logps.sum(1)
    u = 0.5 * (d[:n] - d[n:])
    ((0.5 * torch.sigmoid(-u)).detach() * d[n:]).mean().backward()
    g_rejected = _grads(trl.model)
    for name in g_trl:
        # the subtraction cancels in float32: tolerance relative to the gradient's scale
        scale = g_trl[name].abs().max().item()
        torch.testing.assert_close(g_ceu[name], g_trl[name] - g_rejected[name], rtol=2e-3, atol=1e-4 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_sigmoid_through_our_trainer_is_exactly_trl(tiny_model_path, preference_dataset, tmp_path):
    ours = _trainer(tiny_model_path, preference_dataset, _config(tmp_path / "a", loss_type="sigmoid"))
    trl = _trainer(tiny_model_path, preference_dataset,
                   _config(tmp_path / "b", DPOConfig, loss_type="sigmoid"), cls=DPOTrainer)
    ours.train()
    trl.train()
    logs_ours = [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
                 for h in ours.state.log_history]
    logs_trl = [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
                for h in trl.state.log_history]
    assert logs_ours == logs_trl
    for (n1, p1), (n2, p2) in zip(ours.model.named_parameters(), trl.model.named_parameters()):
        assert torch.equal(p1, p2), n1


def test_train_logs_and_updates(tiny_model_path, conversational_preference_dataset, tmp_path):
    trainer = _trainer(tiny_model_path, conversational_preference_dataset,
                       _config(tmp_path, loss_type="ceu", gradient_accumulation_steps=2))
    before = copy.deepcopy(trainer.model.state_dict())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert torch.isfinite(torch.tensor(h["loss"]))
        for key in ("loss/dpo_term", "loss/ceu_term", "ceu/p_rejected_mean", "rewards/margins", "logps/rejected"):
            assert key in h, key
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_precompute_ref_log_probs(tiny_model_path, preference_dataset, tmp_path):
    trainer = _trainer(tiny_model_path, preference_dataset,
                       _config(tmp_path, loss_type="ceu", precompute_ref_log_probs=True), no_ref=True)
    assert "ref_rejected_logps" in trainer.train_dataset.column_names
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_lora_adapter_as_reference(tiny_model_path, preference_dataset, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = _trainer(tiny_model_path, preference_dataset, _config(tmp_path, loss_type="ceu"), no_ref=True,
                       peft_config=lora)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert any(not torch.equal(lora_before[n], p) for n, p in trainer.model.named_parameters() if n in lora_before)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_bad_datasets(tiny_model_path, preference_dataset, tmp_path):
    no_rejected = preference_dataset.remove_columns("rejected")
    with pytest.raises(ValueError, match=r"no \['rejected'\] column"):
        _trainer(tiny_model_path, no_rejected, _config(tmp_path, loss_type="ceu"))
    empty = Dataset.from_dict({"prompt": ["q1", "q2"], "chosen": [" a", " b"], "rejected": [" c", "  "]})
    with pytest.raises(ValueError, match="empty 'rejected' completion at row 1"):
        _trainer(tiny_model_path, empty, _config(tmp_path, loss_type="ceu"))


@pytest.mark.parametrize("kw, match", [
    (dict(loss_type=["ceu", "sft"]), "'ceu' stands alone"),
    (dict(loss_type="ceu", label_smoothing=0.1), "label_smoothing=0.1 is not supported"),
    (dict(loss_type="ceu", loss_weights=[2.0]), "loss_weights"),
    (dict(loss_type="ceu", ceu_weight=-1.0), "ceu_weight must be >= 0"),
])
def test_unsupported_combinations(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, **kw)
