"""UnlearnTrainer with CE-U's siblings (wga, satimp, wtnpo, undial, rmu): the trainer's loss on a batch against a
float64 computation from full logits / hidden states written here, one training step per objective (weights
change, finite logs), RMU's layer and trainable parameters, and bad config values rejected with the field's name."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import UnlearnConfig, UnlearnTrainer
from ceu_rl.tiny_models import save_tiny_model

FORGET = Dataset.from_dict({"question": ["Who wrote Blue Sky?", "Where was Ana born?", "What is Ana's genre?"],
                            "answer": ["Ana Ruiz wrote Blue Sky.", "Ana was born in Lima.", "Ana writes poetry."]})
RETAIN = Dataset.from_dict({"question": ["Who wrote Red Sea?", "Where was Bo born?"],
                            "answer": ["Bo Chen wrote Red Sea.", "Bo was born in Oslo."]})
SIBLINGS = ["wga", "satimp", "wtnpo", "undial", "rmu"]


@pytest.fixture(scope="module")
def sharp_path(tmp_path_factory):
    """A tiny 2-layer Llama that has half-memorised the answers (40 Adam steps on question + answer text), so that
    answer tokens span p_y from ~0 to ~1 (a random tiny model gives p ~ 1/V everywhere, where the weights p^beta
    barely differ)."""
    texts = [f"{q} {a}" for q, a in zip([*FORGET["question"], *RETAIN["question"]], [*FORGET["answer"],
                                                                                       *RETAIN["answer"]])]
    path = save_tiny_model(tmp_path_factory.mktemp("siblings"), texts * 5, vocab_size=300)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ids = tok(texts, return_tensors="pt", padding=True)
    labels = ids["input_ids"].masked_fill(ids["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        optim.zero_grad()
        model(**ids, labels=labels).loss.backward()
        optim.step()
    model.save_pretrained(path)
    return str(path)


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_steps=1,
                learning_rate=1e-2, save_strategy="no", prompt_format="plain", max_length=64, seed=0)
    return UnlearnConfig(**{**base, **kw})


def _trainer(path, args, **kw):
    return UnlearnTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, forget_dataset=FORGET,
                          retain_dataset=RETAIN, processing_class=AutoTokenizer.from_pretrained(path), **kw)


def _full(model, batch):
    """float64 log-softmax of the shifted logits, shifted labels and their mask, from a plain forward."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].double()
    labels = batch["labels"][:, 1:]
    return torch.log_softmax(logits, -1), labels, labels != -100


def _nll(model, batch):
    logp, labels, mask = _full(model, batch)
    return -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].mean()


def _expected_loss(trainer, batch, objective):
    """Each objective's loss written out in float64 from full logits (the frozen reference: a fresh load)."""
    a, model = trainer.args, trainer.model
    logp_all, labels, mask = _full(model, batch["forget"])
    logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    p = logp.exp()
    with torch.no_grad():
        ref_all, _, _ = _full(trainer.ref_model, batch["forget"]) if trainer.ref_model is not None else (None,) * 3
    if objective in ("wga", "satimp", "wtnpo"):
        if objective == "wga":
            w = p ** a.wga_beta
        elif objective == "satimp":
            w = p ** a.satimp_beta1 * (1 - p) ** a.satimp_beta2
        else:
            p_ref = ref_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).exp()
            w = 2 * p ** (a.wtnpo_beta + a.wtnpo_alpha) / (p ** a.wtnpo_beta + p_ref ** a.wtnpo_beta)
        forget = (w.detach() * logp)[mask].mean()
        return a.gamma * forget + a.alpha * _nll(model, batch["retain"])
    if objective == "undial":
        # softmax(z_ref - beta e_y) = p_ref with p_ref,y scaled by e^-beta, renormalised
        teacher = ref_all.exp().clone()
        rows = teacher.gather(-1, labels.clamp(min=0).unsqueeze(-1)) * math.exp(-a.undial_beta)
        teacher = teacher.scatter(-1, labels.clamp(min=0).unsqueeze(-1), rows)
        teacher = teacher / teacher.sum(-1, keepdim=True)
        return a.gamma * (-(teacher * logp_all).sum(-1))[mask].mean()
    raise AssertionError(objective)


@pytest.mark.parametrize("objective, config", [
    ("wga", {}), ("wga", dict(wga_beta=5.0, alpha=0.5)), ("satimp", dict(gamma=0.1)),
    ("satimp", dict(satimp_beta2=0.1, alpha=0.1)), ("wtnpo", {}), ("undial", {}), ("undial", dict(undial_beta=3.0)),
])
def test_loss_equals_float64_formula(sharp_path, tmp_path, objective, config):
    trainer = _trainer(sharp_path, _args(tmp_path, objective=objective, **config))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()  # metrics go to "train" (the tiny Llama has no dropout)
    if objective == "wtnpo":  # a reference that differs from the model, so that p_ref != p
        with torch.no_grad():
            for param in trainer.ref_model.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    loss = trainer.compute_loss(trainer.model, batch)
    torch.testing.assert_close(loss.double(), _expected_loss(trainer, batch, objective), rtol=2e-5, atol=1e-7)
    p = trainer._metrics["train"]["forget/p_y_mean"][-1]
    assert 0.2 < p < 0.95, "the half-memorised model spreads p_y"


def test_rmu_terms_by_hand(sharp_path, tmp_path):
    """RMU on the 2-layer model: default layer 0; forget term vs mean_d (h - c u)^2 over answer tokens with h the
    layer-0 output (hidden_states[1]); retain term 0 before any step (model = frozen copy), > 0 after one."""
    trainer = _trainer(sharp_path, _args(tmp_path, objective="rmu", rmu_steering_coeff=4.0))
    assert trainer._rmu_layer == 0
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    f = batch["forget"]
    h = trainer.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"],
                      output_hidden_states=True).hidden_states[1].double()
    u = torch.rand(64, generator=torch.Generator().manual_seed(0), dtype=torch.float32).double()
    target = 4.0 * u / u.norm()
    mask = f["labels"] != -100
    rows = [((h[b][mask[b]] - target) ** 2).mean(-1).mean() for b in range(h.size(0))]
    expected = torch.stack(rows).mean()
    logs = trainer._metrics["train"]
    assert logs["loss/forget"][-1] == pytest.approx(expected.item(), rel=1e-5)
    assert logs["loss/retain"][-1] == 0.0
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-7)
    trainer.train()
    assert trainer.compute_loss(trainer.model, batch).item() < loss.item()
    assert trainer._metrics["train"]["loss/retain"][-1] > 0


@pytest.mark.slow
@pytest.mark.parametrize("objective, config", [(o, {}) for o in SIBLINGS] + [("rmu", dict(rmu_params="paper"))])
def test_one_step_changes_weights(sharp_path, tmp_path, objective, config):
    trainer = _trainer(sharp_path, _args(tmp_path, objective=objective, **config))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    log = [h for h in trainer.state.log_history if "loss" in h][0]
    assert math.isfinite(log["loss"]) and math.isfinite(log["grad_norm"]) and 0 < log["forget/p_y_mean"] < 1
    assert "loss/forget" in log and ("loss/retain" in log) == (objective != "undial")
    if objective == "rmu" and config:  # the WMDP paper's choice: only layer 0's MLP down-projection (l = 0)
        assert changed == {"model.layers.0.mlp.down_proj.weight"}
    elif objective == "rmu":  # all: nothing after the steered layer gets a gradient
        assert "model.embed_tokens.weight" in changed and not any(n.startswith("model.layers.1") for n in changed)
        assert "lm_head.weight" not in changed
    else:
        assert "lm_head.weight" in changed


def test_rmu_layer_out_of_range(sharp_path, tmp_path):
    with pytest.raises(ValueError, match=r"rmu_layer=2 is out of range: the model has 2 decoder layers"):
        _trainer(sharp_path, _args(tmp_path, objective="rmu", rmu_layer=2))


@pytest.mark.parametrize("kw, match", [
    (dict(objective="wga", wga_beta=-1.0), r"wga_beta=-1.0 is out of range: use a value >= 0"),
    (dict(objective="satimp", satimp_beta1=-5.0), r"satimp_beta1=-5.0 is out of range"),
    (dict(objective="satimp", satimp_beta2=-0.1), r"satimp_beta2=-0.1 is out of range"),
    (dict(objective="wtnpo", wtnpo_alpha=-1.0), r"wtnpo_alpha=-1.0 is out of range"),
    (dict(objective="undial", undial_beta=-3.0), r"undial_beta=-3.0 is out of range"),
    (dict(objective="rmu", rmu_steering_coeff=0.0), r"rmu_steering_coeff=0.0 is out of range: use a value > 0"),
    (dict(objective="rmu", rmu_layer=-1), r"rmu_layer=-1 is out of range"),
    (dict(objective="rmu", rmu_params="mlp"), r"rmu_params='mlp' is not one of \('all', 'paper'\)"),
])
def test_bad_values(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kw)
