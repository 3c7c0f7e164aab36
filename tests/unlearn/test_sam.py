"""Relearning resistance (ceu_rl.unlearn.sam): SAM's and the adversarial variant's gradients against hand-built
two-pass float64 references (each loss written out here from the logits), weights restored bit for bit, rho = 0 is
the plain trainer, weight averaging against the recorded iterates, RL SAM on a tiny GRPO run, bad values."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer, UnlearnConfig, UnlearnTrainer
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.unlearn.rl_unlearn_trainer import RetainAnchoredGRPOTrainer
from ceu_rl.unlearn.sam import SharpnessAwareMixin, perturb_, restore_, sam_perturbation

FORGET = Dataset.from_dict({"question": ["Who wrote Blue Sky?", "Where was Ana born?", "What is Ana's genre?",
                                         "When did Ana start?"],
                            "answer": ["Ana Ruiz wrote Blue Sky.", "Ana was born in Lima.", "Ana writes poetry.",
                                       "Ana began in 1990."]})
RETAIN = Dataset.from_dict({"question": ["Who wrote Red Sea?", "Where was Bo born?", "What does Bo write?"],
                            "answer": ["Bo Chen wrote Red Sea.", "Bo was born in Oslo.", "Bo writes plays."]})


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    texts = [*FORGET["question"], *FORGET["answer"], *RETAIN["question"], *RETAIN["answer"], "I don't know."]
    return str(save_tiny_model(tmp_path_factory.mktemp("sam-tiny"), texts * 5, vocab_size=300, hidden_size=32,
                               num_layers=2, num_heads=1))


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_steps=2,
                learning_rate=1e-2, save_strategy="no", prompt_format="plain", max_length=64, seed=0,
                disable_tqdm=True)
    base.update(kw)
    return UnlearnConfig(**base)


def _model(path, double=True):
    model = AutoModelForCausalLM.from_pretrained(path)
    return model.double() if double else model


def _trainer(path, args, double=True):
    return UnlearnTrainer(model=_model(path, double), args=args, forget_dataset=FORGET, retain_dataset=RETAIN,
                          processing_class=AutoTokenizer.from_pretrained(path))


# ---- float64 references, written from the logits -----------------------------------------------------------------
def _logp_and_labels(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.log_softmax(logits, -1), batch["labels"][:, 1:]


def _drop_first_answer_token(labels):
    labels = labels.clone()
    for row in labels:
        row[(row != -100).nonzero()[0]] = -100
    return labels


def _token_logp(logp, labels):
    keep = labels != -100
    return logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep, keep


def _ce_u_sum(logp, labels):
    """CE-U per token, CE(q, p) with q = softmax(stopgrad(z) with z_y = -inf), summed over the valid tokens."""
    keep = labels != -100
    z = logp.detach().clone()
    z.scatter_(-1, labels.clamp(min=0).unsqueeze(-1), -math.inf)
    q = torch.softmax(z, -1)
    return -((q * logp).sum(-1) * keep).sum()


def reference_parts(objective, model, batch, ref_model, gamma, alpha, beta=0.1):
    """(forget term, retain term) of `objective` at `model`'s weights, as the CE-U / NPO / GradDiff papers write
    them; the retain term None where the objective has none."""
    f_logp, f_labels = _logp_and_labels(model, batch["forget"])
    if objective in ("ce_u", "ce_u_retain"):
        f_labels = _drop_first_answer_token(f_labels)
    if objective == "grad_diff":
        lp, keep = _token_logp(f_logp, f_labels)
        forget = gamma * lp.sum() / keep.sum()  # gradient ascent: minus the NLL
    elif objective == "npo":
        lp, _ = _token_logp(f_logp, f_labels)
        with torch.no_grad():
            ref_lp, _ = _token_logp(*_logp_and_labels(ref_model, batch["forget"]))
        forget = gamma * (-2 / beta * torch.nn.functional.logsigmoid(-beta * (lp.sum(1) - ref_lp.sum(1)))).mean()
    elif objective in ("ce_u", "ce_u_retain"):
        n_forget = (f_labels != -100).sum()
        forget = _ce_u_sum(f_logp, f_labels)
        if objective == "ce_u":
            return forget / n_forget, None
    r_logp, r_labels = _logp_and_labels(model, batch["retain"])
    r_lp, r_keep = _token_logp(r_logp, r_labels)
    if objective == "ce_u_retain":  # one token mean over forget and retain tokens
        count = n_forget + r_keep.sum()
        return forget / count, -r_lp.sum() / count
    return forget, alpha * -r_lp.sum() / r_keep.sum()


def _params(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def reference_step_grad(path, objective, batch, rho=0.0, relearn=(0, 0.0), gamma=1.0, alpha=1.0):
    """grad F(w + delta) + grad R(w) in float64 with fresh model copies: delta = rho g / ||g|| (g = grad F(w)), or
    the result of `relearn` = (k, lr) SGD steps on the forget answers' mean NLL."""
    model, ref_model = _model(path), _model(path)
    names, params = zip(*_params(model))
    forget, retain = reference_parts(objective, model, batch, ref_model, gamma, alpha)
    retain_grad = torch.autograd.grad(retain, params) if retain is not None else [0] * len(params)
    shifted = _model(path)
    state = dict(shifted.named_parameters())
    if rho > 0:
        g = torch.autograd.grad(forget, params, allow_unused=True)
        norm = torch.sqrt(sum((x ** 2).sum() for x in g if x is not None))
        with torch.no_grad():
            for n, x in zip(names, g):
                if x is not None:
                    state[n].add_(rho * x / norm)
    for _ in range(relearn[0]):
        logp, labels = _logp_and_labels(shifted, batch["forget"])
        lp, keep = _token_logp(logp, labels)
        g = torch.autograd.grad(-lp.sum() / keep.sum(), [state[n] for n in names], allow_unused=True)
        with torch.no_grad():
            for n, x in zip(names, g):
                if x is not None:
                    state[n].sub_(relearn[1] * x)
    forget_shifted, _ = reference_parts(objective, shifted, batch, ref_model, gamma, alpha)
    f_grad = torch.autograd.grad(forget_shifted, [state[n] for n in names], allow_unused=True)
    return [(0 if f is None else f) + r for f, r in zip(f_grad, retain_grad)]


def _trainer_grads(trainer, batches, accumulation=1):
    """.grad after `training_step` on each batch (no optimizer step), and whether every weight came back exactly."""
    model = trainer.model
    before = [p.detach().clone() for _, p in _params(model)]
    trainer.current_gradient_accumulation_steps = accumulation  # set by Trainer.train
    model.zero_grad()
    for batch in batches:
        trainer.training_step(model, batch)
    restored = all(torch.equal(b, p) for b, (_, p) in zip(before, _params(model)))
    return [p.grad.detach().clone() for _, p in _params(model)], restored


TRL_HEAD = 2e-6  # objectives on TRL's fused log-prob head, which computes in float32 even for a float64 model
EXACT = 1e-10  # the linear CE-U head and full logits stay in float64


def _close(got, want, rtol):
    scale = max(float(w.abs().max()) for w in want if isinstance(w, torch.Tensor))
    return max(float((g - w).abs().max()) for g, w in zip(got, want)) <= rtol * scale


# ---- the math --------------------------------------------------------------------------------------------------
def test_perturbation_is_rho_times_the_normalised_gradient_and_restore_is_exact():
    grads = [torch.tensor([3.0, 0.0]), None, torch.tensor([[4.0]])]
    deltas = sam_perturbation(grads, 0.5)  # ||g|| = 5
    assert torch.equal(deltas[0], torch.tensor([0.3, 0.0])) and deltas[1] is None
    torch.testing.assert_close(deltas[2], torch.tensor([[0.4]]))
    assert all(torch.equal(d, torch.zeros_like(g)) for d, g in zip(sam_perturbation([torch.zeros(3)], 1.0),
                                                                      [torch.zeros(3)]))
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(50, generator=g) * 1e-3, torch.randn(4, 5, generator=g) * 1e-3]
    original = [p.clone() for p in params]
    deltas = [torch.randn(p.shape, generator=g) for p in params]  # large deltas: (w + d) - d loses w's low bits
    backup = perturb_(params, deltas)
    assert all(torch.equal(p, o + d) for p, o, d in zip(params, original, deltas))
    assert any(not torch.equal(p - d, o) for p, d, o in zip(params, deltas, original))  # subtracting is inexact
    restore_(params, backup)
    assert all(torch.equal(p, o) for p, o in zip(params, original))


# ---- SAM and the adversarial variant in UnlearnTrainer ------------------------------------------------------------
@pytest.mark.parametrize("objective,extra,rtol", [
    ("grad_diff", dict(gamma=0.7, alpha=1.3), TRL_HEAD),
    ("npo", dict(gamma=0.7, alpha=1.3), TRL_HEAD),
    ("ce_u", {}, EXACT),
    ("ce_u_retain", {}, EXACT),  # the exact fused linear CE-U head (default)
    ("ce_u_retain", dict(ce_u_from_logits=True), EXACT),
    ("ce_u_retain", dict(ce_u_fused_linear=False), TRL_HEAD),
])
def test_sam_gradient_equals_the_two_pass_float64_reference(tiny_path, tmp_path, objective, extra, rtol):
    rho = 0.05
    trainer = _trainer(tiny_path, _args(tmp_path, objective=objective, sam_rho=rho, **extra))
    batch = next(iter(trainer.get_train_dataloader()))
    got, restored = _trainer_grads(trainer, [batch])
    assert restored
    weights = dict(gamma=extra.get("gamma", 1.0), alpha=extra.get("alpha", 1.0))
    want = reference_step_grad(tiny_path, objective, batch, rho=rho, **weights)
    plain = reference_step_grad(tiny_path, objective, batch, rho=0.0, **weights)
    assert _close(got, want, rtol)
    assert not _close(got, plain, rtol=1e-4)  # the perturbation matters at this rho (ce_u_retain: ~8e-4)
    logs = trainer._metrics["train"]
    assert logs["sam/delta_norm"] == [pytest.approx(rho)] and len(logs["forget/p_y_mean"]) == 1


def test_sam_with_gradient_accumulation(tiny_path, tmp_path):
    trainer = _trainer(tiny_path, _args(tmp_path, objective="grad_diff", sam_rho=0.1))
    loader = iter(trainer.get_train_dataloader())
    batches = [next(loader), next(loader)]
    got, restored = _trainer_grads(trainer, batches, accumulation=2)
    want = [sum(parts) / 2 for parts in zip(*(reference_step_grad(tiny_path, "grad_diff", b, rho=0.1)
                                                for b in batches))]
    assert restored and _close(got, want, TRL_HEAD)


def test_adversarial_relearning_gradient_equals_the_reference(tiny_path, tmp_path):
    trainer = _trainer(tiny_path, _args(tmp_path, objective="grad_diff", adv_relearn_steps=2, adv_relearn_lr=0.5))
    batch = next(iter(trainer.get_train_dataloader()))
    got, restored = _trainer_grads(trainer, [batch])
    want = reference_step_grad(tiny_path, "grad_diff", batch, relearn=(2, 0.5))
    assert restored and _close(got, want, TRL_HEAD)
    assert not _close(got, reference_step_grad(tiny_path, "grad_diff", batch, relearn=(1, 0.5)), rtol=1e-3)


def test_rho_zero_is_the_plain_trainer_bit_for_bit(tiny_path, tmp_path):
    weights = []
    for kw in ({}, dict(sam_rho=0.0, adv_relearn_steps=0)):
        trainer = _trainer(tiny_path, _args(tmp_path, objective="npo", **kw), double=False)
        trainer.train()
        weights.append([p.detach().clone() for _, p in _params(trainer.model)])
        assert not any(k.startswith("sam/") for h in trainer.state.log_history for k in h)
    assert all(torch.equal(a, b) for a, b in zip(*weights))


@pytest.mark.slow
def test_sam_trains_every_objective_for_a_step(tiny_path, tmp_path):
    from ceu_rl.unlearn import OBJECTIVES

    for objective in sorted(OBJECTIVES):
        args = _args(tmp_path, objective=objective, sam_rho=0.05, max_steps=1)
        trainer = UnlearnTrainer(model=_model(tiny_path, double=False), args=args, forget_dataset=FORGET,
                                 retain_dataset=RETAIN, processing_class=AutoTokenizer.from_pretrained(tiny_path),
                                 idk_answers=["I don't know."])
        trainer.train()
        log = [h for h in trainer.state.log_history if "loss" in h][0]
        assert math.isfinite(log["loss"]) and log["sam/delta_norm"] == pytest.approx(0.05, rel=1e-4), objective


def test_unified_loss_parts_add_up_to_the_loss(tiny_path, tmp_path):
    for extra in ({}, dict(ce_u_from_logits=True), dict(ce_u_fused_linear=False)):
        trainer = _trainer(tiny_path, _args(tmp_path, objective="ce_u_retain", sam_rho=0.1, **extra))
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        loss = trainer.compute_loss(trainer.model, batch)
        forget, retain = trainer.sam_loss_parts(trainer.model, batch)
        torch.testing.assert_close(forget + retain, loss, rtol=1e-12 if loss.dtype == torch.float64 else 1e-6, atol=0)


# ---- weight averaging -------------------------------------------------------------------------------------------
class _Iterates(TrainerCallback):
    def __init__(self):
        self.seen = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.seen[state.global_step] = [p.detach().clone() for p in model.parameters()]


def test_weight_averaging_is_the_mean_of_the_chosen_iterates(tiny_path, tmp_path):
    args = _args(tmp_path, objective="grad_diff", max_steps=5, weight_averaging=True, weight_averaging_start=0.4,
                 weight_averaging_interval=2)
    trainer = _trainer(tiny_path, args)
    record = _Iterates()
    trainer.add_callback(record)
    trainer.train()
    # round(0.4 * 5) = 2: steps 2 and 4 (step 5 is not a multiple of 2)
    want = [(a + b) / 2 for a, b in zip(record.seen[2], record.seen[4])]
    got = list(trainer.model.parameters())
    assert all(torch.allclose(g, w, rtol=0, atol=1e-12) for g, w in zip(got, want))
    assert not all(torch.equal(g, w) for g, w in zip(got, record.seen[5]))
    with pytest.warns(UserWarning, match="no snapshot"):
        _trainer(tiny_path, _args(tmp_path, objective="ga", max_steps=1, weight_averaging=True,
                                  weight_averaging_interval=2)).train()


def test_weight_averaging_horizon_is_the_step_a_run_stops_at():
    from ceu_rl.unlearn.sam import WeightAveragingCallback

    assert WeightAveragingCallback(0.8, 1).first_step(30) == 24
    assert WeightAveragingCallback(0.8, 1, horizon=15).first_step(30) == 12  # a run stopped at step 15 of 30
    with pytest.raises(ValueError, match="horizon"):
        WeightAveragingCallback(0.8, 1, horizon=0)


# ---- RL: SAM on the GRPO / CE-U-GRPO loss, the retain NLL at w ----------------------------------------------------
def test_rl_sam_gradient_equals_the_two_pass_reference(tiny_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    prompts = Dataset.from_dict({"prompt": list(FORGET["question"][:2])})
    args = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
                         max_completion_length=6, loss_type="dapo", negative_objective="ceu_full", report_to="none",
                         seed=0, max_steps=1, disable_tqdm=True)
    rho, coef = 0.05, 0.7
    trainer = RetainAnchoredGRPOTrainer(model=_model(tiny_path, double=False),
                                        reward_funcs=lambda completions, **k: [float(len(c) % 3) for c in completions],
                                        args=args, train_dataset=prompts, processing_class=tokenizer,
                                        retain_dataset=RETAIN, retain_coef=coef, retain_batch_size=2, sam_rho=rho)
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    fixed = trainer.next_retain_batch()
    trainer.next_retain_batch = lambda: fixed
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    model.zero_grad()
    trainer.training_step(model, next(iter(trainer.get_train_dataloader())))
    got = [p.grad.detach().double().clone() for p in params]
    assert all(torch.equal(b, p) for b, p in zip(before, params))
    inputs = trainer._buffered_inputs[0]  # the generated batch the step used

    def rl_loss():
        return CEUGRPOTrainer.compute_loss(trainer, model, inputs)

    g = torch.autograd.grad(rl_loss(), params)
    norm = torch.sqrt(sum((x.double() ** 2).sum() for x in g))
    with torch.no_grad():
        for p, x in zip(params, g):
            p.add_((rho * x.double() / norm).to(p.dtype))
    rl_perturbed = torch.autograd.grad(rl_loss(), params)
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    # the retain NLL at w, in float64 from the logits
    ref = _model(tiny_path)
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    logp, labels = _logp_and_labels(ref, fixed)
    lp, keep = _token_logp(logp, labels)
    retain = torch.autograd.grad(coef * -lp.sum() / keep.sum(), [p for p in ref.parameters() if p.requires_grad])
    want = [a.double() + b for a, b in zip(rl_perturbed, retain)]
    plain = [a.double() + b for a, b in zip(g, retain)]
    assert _close(got, want, rtol=1e-5)
    assert not _close(got, plain, rtol=1e-3)


# ---- bad values ------------------------------------------------------------------------------------------------
def test_bad_values_name_the_field(tiny_path, tmp_path):
    for kw, field in ((dict(sam_rho=-0.1), "sam_rho"), (dict(sam_rho=float("nan")), "sam_rho"),
                      (dict(adv_relearn_steps=-1), "adv_relearn_steps"),
                      (dict(adv_relearn_steps=1, adv_relearn_lr=0.0), "adv_relearn_lr"),
                      (dict(sam_rho=0.1, adv_relearn_steps=1, adv_relearn_lr=0.1), "sam_rho > 0 and adv_relearn"),
                      (dict(weight_averaging_start=1.0), "weight_averaging_start"),
                      (dict(weight_averaging_interval=0), "weight_averaging_interval")):
        with pytest.raises(ValueError, match=field):
            _args(tmp_path, **kw)
    with pytest.raises(ValueError, match="sam_rho"):
        RetainAnchoredGRPOTrainer(model=_model(tiny_path, double=False), reward_funcs=lambda **k: [0.0],
                                  args=CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                                     per_device_train_batch_size=2, num_generations=2),
                                  train_dataset=Dataset.from_dict({"prompt": ["Who?"]}),
                                  processing_class=AutoTokenizer.from_pretrained(tiny_path), retain_coef=0.0,
                                  sam_rho=-1.0)

    class Sharded(SharpnessAwareMixin):
        is_fsdp_enabled = True

    with pytest.raises(ValueError, match="DeepSpeed, FSDP"):
        Sharded()._init_sharpness_aware(sam_rho=0.1)
    Sharded()._init_sharpness_aware(sam_rho=0.0)  # off: nothing to refuse
