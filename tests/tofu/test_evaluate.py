"""The evaluation runner on a tiny model: every field, in open-unlearning's layout, with values checked directly."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl.tofu import load_split
from ceu_rl.tofu.evaluate import answer_losses, evaluate_tofu, write_eval
from ceu_rl.tofu.metrics import UTILITY_KEYS
from ceu_rl.tiny_models import save_tiny_model

SUBSETS = {"forget": range(4), "retain": range(3), "ra": range(3), "wf": range(3)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = list(load_split("forget01")["answer"]) + list(load_split("retain_perturbed")["answer"][:50])
    path = save_tiny_model(tmp_path_factory.mktemp("eval-tiny"), texts, vocab_size=400)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_every_field_and_layout(tiny, tmp_path):
    model, tok = tiny
    log = evaluate_tofu(model, tok, "forget01", prompt_format="plain", max_new_tokens=8, batch_size=2,
                        subsets=SUBSETS)
    for prefix in ("forget", "retain"):
        for kind in ("Q_A_Prob", "Q_A_PARA_Prob", "Q_A_PERT_Prob", "Q_A_ROUGE"):
            assert len(log[f"{prefix}_{kind}"]["value_by_index"]) == len(SUBSETS[prefix])
    for prefix in ("ra", "wf"):
        for kind in ("Q_A_Prob", "Q_A_PERT_Prob", "Q_A_Prob_normalised", "Q_A_ROUGE", "Truth_Ratio"):
            assert f"{prefix}_{kind}" in log
    assert len(log["forget_truth_ratio"]["value_by_index"]) == 4
    assert 0 <= log["model_utility"]["agg_value"] <= 1  # 0 when any component is 0 (random ROUGE)
    summary = write_eval(log, tmp_path, retain_log=log)
    assert summary["forget_quality"] == 1.0
    written = json.loads((tmp_path / "TOFU_EVAL.json").read_text())
    assert set(UTILITY_KEYS) <= set(written)
    assert json.loads((tmp_path / "TOFU_SUMMARY.json").read_text())["model_utility"] == summary["model_utility"]
    # ROUGE entries carry the generation, and its recall is the mean
    rouge = log["forget_Q_A_ROUGE"]
    assert all("generation" in v for v in rouge["value_by_index"].values())


def test_answer_loss_is_the_mean_answer_token_nll(tiny):
    model, tok = tiny
    q, a = "Who is Ana?", "Ana is a poet."
    (loss,) = answer_losses(model, tok, [q], [a], "plain")
    prompt = tok("Question: Who is Ana?\nAnswer:")["input_ids"]
    answer = tok(" Ana is a poet.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0, :-1].double(), -1)
    targets = ids[0, 1:]
    nll = -logp[torch.arange(len(targets)), targets][len(prompt) - 1:]
    assert loss == pytest.approx(nll.mean().item(), rel=1e-5)
    # the forget truth ratio of a question follows from these losses
    assert math.isfinite(loss)


@pytest.mark.parametrize("split", ["forget05", "forget10"])
def test_runner_on_larger_forget_splits(tiny, split):
    model, tok = tiny
    log = evaluate_tofu(model, tok, split, prompt_format="plain", max_new_tokens=2, batch_size=4,
                        subsets={"forget": range(2), "retain": range(2), "ra": range(2), "wf": range(2)})
    assert len(log["forget_truth_ratio"]["value_by_index"]) == 2
    first = load_split(f"{split}_perturbed")[0]["question"]
    assert log["forget_Q_A_ROUGE"]["value_by_index"]["0"]["input"] == first  # the split's own questions
