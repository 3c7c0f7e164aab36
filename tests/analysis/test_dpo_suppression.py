"""analysis/dpo_suppression: the first-order change of the rejected and chosen log-prob predicted from the trainer's
gradients against a finite-difference step of gradient descent, scored independently (float64 full logits)."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from analysis import dpo_suppression as ds
from ceu_rl.tiny_models import save_tiny_model
from experiments.dpo_compare.data import completion_logps

PAIRS = Dataset.from_dict({"prompt": ["Q: sky?\nA:", "Q: bees?\nA:", "Q: cat?\nA:"],
                           "chosen": [" The sky is blue.", " Bees make honey.", " A cat has four legs."],
                           "rejected": [" The sky is green.", " Bees make milk.", " Seven legs."]})


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    texts = [*PAIRS["prompt"], *PAIRS["chosen"], *PAIRS["rejected"]] * 4
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny"), texts, vocab_size=300))


def _mean_logps(model, tokenizer):
    return [completion_logps(model, tokenizer, PAIRS["prompt"], PAIRS[k]).mean().item() for k in ("chosen", "rejected")]


@pytest.mark.parametrize("objective", ["ceu_full", "ceu_prefix"])
def test_first_order_change_equals_finite_difference(model_path, tmp_path, objective):
    grads = ds.first_step_gradients(model_path, PAIRS, objective, beta=0.1, output_dir=str(tmp_path))
    sgd = ds.sgd_threshold(grads)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path)
    before = _mean_logps(base, tokenizer)
    eta = 1e-3
    for gamma in (0.0, 3.0):
        model = AutoModelForCausalLM.from_pretrained(model_path)
        step = grads["g_0"] + gamma * grads["g_1"]
        with torch.no_grad():
            offset = 0
            for p in model.parameters():
                p -= eta * step[offset:offset + p.numel()].reshape(p.shape)
                offset += p.numel()
        after = _mean_logps(model, tokenizer)
        predicted_rejected = sgd["rejected_change_gamma0"] + gamma * sgd["rejected_change_per_gamma"]
        predicted_chosen = sgd["chosen_change_gamma0"] + gamma * sgd["chosen_change_per_gamma"]
        scale = max(abs(predicted_rejected), abs(predicted_chosen))
        assert (after[1] - before[1]) / eta == pytest.approx(predicted_rejected, rel=0.05, abs=0.02 * scale)
        assert (after[0] - before[0]) / eta == pytest.approx(predicted_chosen, rel=0.05, abs=0.02 * scale)
    star = sgd["gamma_star_sgd"]
    if 0 < star < float("inf"):  # the predicted change of the rejected answer changes sign at gamma*
        assert sgd["rejected_change_gamma0"] + star * sgd["rejected_change_per_gamma"] == pytest.approx(0, abs=1e-6)
    adam = ds.adam_threshold(grads, gammas=[0.0, 1.0, 1e3])
    assert len(adam["rejected_change"]) == 3
