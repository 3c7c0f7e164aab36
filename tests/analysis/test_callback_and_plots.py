"""GradientTraceCallback against direct computations on a tiny model; the plot command writes every file and the data
behind each plot is what the functions compute."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.utils import add_fused_lm_head

from analysis import GradientTraceCallback, TokenProbabilityProbe
from analysis import closed_forms as cf
from analysis.__main__ import main as analysis_main
from ceu_rl import UnlearnConfig, UnlearnTrainer
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.unlearn.unlearn_trainer import add_linear_ce_u_head

QUESTIONS = ["Who wrote Blue Sky?", "Where was Ana born?", "What is Ana's genre?", "Who is Bo?"]
ANSWERS = ["Ana Ruiz wrote Blue Sky.", "Ana was born in Lima.", "Ana writes poetry.", "Bo is a painter."]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("cb-tiny"), (QUESTIONS + ANSWERS) * 5, vocab_size=300))


def _direct_p(model, tok, prompts, completions):
    """p(label) of every completion token, written out independently of the probe."""
    ps = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions):
            p_ids = tok(prompt)["input_ids"]
            c_ids = tok(completion, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + c_ids])
            probs = torch.softmax(model(input_ids=ids).logits[0].double(), -1)
            for j, t in enumerate(c_ids):
                ps.append(probs[len(p_ids) + j - 1, t].item())
    return np.array(ps)


def test_callback_records_grad_norm_loss_and_p(tiny_path, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    prompts = [f"Question: {q}\nAnswer:" for q in QUESTIONS]
    completions = [" " + a for a in ANSWERS]
    probe = TokenProbabilityProbe(tok, prompts, completions)
    cb = GradientTraceCallback(probe)
    args = UnlearnConfig(output_dir=str(tmp_path), objective="ce_u", use_cpu=True, max_steps=2, learning_rate=1e-2,
                         per_device_train_batch_size=4, save_strategy="no", prompt_format="plain", max_length=64,
                         ignore_first_n_answer_tokens=0, max_grad_norm=0.0, seed=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    initial = AutoModelForCausalLM.from_pretrained(tiny_path)
    add_fused_lm_head(initial, outputs=("log_probs", "entropy"))  # as UnlearnTrainer does to its model
    if args.ce_u_fused_linear and not args.ce_u_from_logits:  # ce_u's exact fused linear + CE-U head
        add_linear_ce_u_head(initial)
    forget = Dataset.from_dict({"question": QUESTIONS, "answer": ANSWERS})
    trainer = UnlearnTrainer(model=model, args=args, forget_dataset=forget, processing_class=tok, callbacks=[cb])

    # direct: gradient norm and loss of step 1 on the whole forget set (batch = all 4 items), on the initial weights
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(initial, {k: {kk: vv for kk, vv in v.items()} for k, v in batch.items()})
    loss.backward()
    direct_norm = torch.stack([p.grad.pow(2).sum() for p in initial.parameters() if p.grad is not None]).sum().sqrt()
    trainer._metrics["train"].clear()
    trainer.train()

    assert [r["step"] for r in cb.records] == [1, 2]
    first = cb.records[0]
    assert first["grad_norm"] == pytest.approx(direct_norm.item(), rel=1e-4)
    assert first["logged_grad_norm"] == pytest.approx(first["grad_norm"], rel=1e-4)  # no clipping
    assert first["loss"] == pytest.approx(loss.item(), rel=1e-4)
    p_direct = _direct_p(AutoModelForCausalLM.from_pretrained(tiny_path), tok, prompts, completions)
    np.testing.assert_allclose(cb.p_before, p_direct, rtol=1e-4)
    np.testing.assert_allclose(cb.p_after, _direct_p(trainer.model, tok, prompts, completions), rtol=1e-4)
    saved = tmp_path / "trace.json"
    cb.save(saved)
    assert json.loads(saved.read_text())["records"][1]["step"] == 2


def test_plot_command_writes_files_and_their_data(tmp_path):
    analysis_main(["plots", "--out", str(tmp_path), "--quick"])
    for name in ("gradient_vs_confidence", "training_traces", "p_y_before_after", "group_net_push", "dpo_net_push"):
        with Image.open(tmp_path / f"{name}.png") as img:
            assert img.size[0] > 400 and img.size[1] > 200
    data = json.loads((tmp_path / "gradient_vs_confidence.json").read_text())
    assert {"gradient_ascent", "ce_u", "dpo_rejected", "ceu_dpo_rejected", "grpo_negative",
            "ceu_grpo_negative"} == set(data)
    for row in data["ce_u"]["rows"]:  # the plotted lines are the closed forms at the plotted points
        assert row["closed_form"]["l2"] == pytest.approx(float(cf.ce_u(row["p_y"], row["q_sq"])["l2"]), rel=1e-12)
        assert row["autograd"]["l2"] == pytest.approx(row["closed_form"]["l2"], rel=1e-6)
    for row in data["gradient_ascent"]["rows"]:
        assert row["autograd"]["l2"] == pytest.approx(float(cf.gradient_ascent(row["p_y"], row["q_sq"])["l2"]),
                                                      rel=1e-6)
    push = json.loads((tmp_path / "group_net_push.json").read_text())
    assert push["panels"][1]["curves"]["ceu_full"]["stable"] == [0.5]  # balanced group: CE-U drags p to 1/2
    dpo = json.loads((tmp_path / "dpo_net_push.json").read_text())
    assert dpo["panels"][0]["curves"]["ceu_full g=1"]["stable"] == [0.5]  # a DPO pair: P = M, p* = 1 / (1 + gamma)
    assert dpo["panels"][0]["curves"]["dpo"]["neutral"] == [0.0, 1.0]
    traces = json.loads((tmp_path / "training_traces.json").read_text())
    assert set(traces) == {"ga", "ce_u", "dpo", "ce_u_dpo", "grpo", "ce_u_grpo"}
    for name, t in traces.items():
        assert len(t["records"]) == 8, name
        assert all(r["grad_norm"] > 0 and np.isfinite(r["loss"]) for r in t["records"])
        assert len(t["p_before"]) == len(t["p_after"]) > 0
    # unclipped runs: the callback's norm is the Trainer's logged one
    for r in traces["ga"]["records"]:
        assert r["grad_norm"] == pytest.approx(r["logged_grad_norm"], rel=1e-4)
