"""The evaluation runner on a tiny model: every field, in open-unlearning's layout, with values checked directly."""

import json
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl.tofu import load_split
from ceu_rl.tofu.evaluate import answer_losses, evaluate_tofu, privacy_metrics, write_eval
from ceu_rl.tofu.formatting import encode_qa
from ceu_rl.tofu.metrics import UTILITY_KEYS
from ceu_rl.tiny_models import save_tiny_model

SUBSETS = {"forget": range(4), "retain": range(3), "ra": range(3), "wf": range(3)}
MIAS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_gradnorm")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    texts = list(load_split("forget01")["answer"]) + list(load_split("retain_perturbed")["answer"][:50])
    return save_tiny_model(tmp_path_factory.mktemp("eval-tiny"), texts, vocab_size=400)


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return AutoModelForCausalLM.from_pretrained(tiny_path), AutoTokenizer.from_pretrained(tiny_path)


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


@pytest.fixture(scope="module")
def privacy_logs(tiny, tiny_path):
    """The evaluation with and without the privacy metrics (a second copy of the model as the reference model)."""
    model, tok = tiny
    kw = dict(prompt_format="plain", max_new_tokens=4, batch_size=3, subsets=SUBSETS)
    reference = AutoModelForCausalLM.from_pretrained(tiny_path)
    torch.nn.init.normal_(reference.lm_head.weight, std=0.02)  # another model: a non-zero reference score
    return (evaluate_tofu(model, tok, "forget01", privacy=False, **kw),
            evaluate_tofu(model, tok, "forget01", reference_model=reference, **kw))


def test_privacy_metrics_only_add_keys(privacy_logs):
    without, with_privacy = privacy_logs
    assert json.dumps({k: with_privacy[k] for k in without}) == json.dumps(without)  # every value, bit for bit
    added = set(with_privacy) - set(without)
    assert added == {*MIAS, "mia_reference", "privleak", "extraction_strength", "exact_memorization"}
    for key in (*MIAS, "mia_reference"):
        entry = with_privacy[key]
        assert len(entry["forget"]["value_by_index"]) == len(entry["holdout"]["value_by_index"]) == 4  # subset too
        assert entry["auc"] == entry["agg_value"]
    assert with_privacy["privleak"]["agg_value"] == pytest.approx(
        (1 - with_privacy["mia_min_k"]["auc"] - 0.5) / (0.5 + 1e-10) * 100, rel=1e-12)  # no retain log: ref 0.5
    assert len(with_privacy["extraction_strength"]["value_by_index"]) == 4


def test_privleak_against_the_retain_log_and_switches(tiny, privacy_logs, tmp_path):
    model, tok = tiny
    without, with_privacy = privacy_logs
    kw = dict(prompt_format="plain", max_new_tokens=2, batch_size=3, gradnorm=False)
    log = evaluate_tofu(model, tok, "forget01", subsets=SUBSETS, retain_log=with_privacy, **kw)
    assert "mia_gradnorm" not in log and "mia_reference" not in log
    assert log["privleak"]["agg_value"] == 0.0  # the same model as its "retain model": its own level
    # another holdout split and subset: rows 100-103 exist in holdout05 only (holdout01 has 40)
    log = evaluate_tofu(model, tok, "forget01", subsets={**SUBSETS, "holdout": range(100, 104)},
                        holdout_split="holdout05", **kw)
    assert len(log["mia_loss"]["holdout"]["value_by_index"]) == 4
    assert log["mia_loss"]["holdout"]["value_by_index"] != with_privacy["mia_loss"]["holdout"]["value_by_index"]
    summary = write_eval(with_privacy, tmp_path, retain_log=without)  # a retain log without MIAs: ref 0.5
    assert summary["privleak"] == with_privacy["privleak"]["agg_value"]
    for key in (*MIAS, "mia_reference"):
        assert summary[key] == with_privacy[key]["auc"]
    assert summary["extraction_strength"] == with_privacy["extraction_strength"]["agg_value"]


def _brute_force(model, tok, question, answer):
    """Every per-item privacy value of one QA pair by loops over its answer tokens, in float64 (`model` is float64),
    from the token ids built by hand as `test_answer_loss_is_the_mean_answer_token_nll` does."""
    prompt = tok(f"Question: {question}\nAnswer:")["input_ids"]
    answer_ids = tok(" " + answer.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = prompt + answer_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    logp, z, preds = [], [], []
    for j in range(len(prompt), len(ids)):
        row = logits[j - 1]
        lp = row - (row.max() + math.log(np.exp(row - row.max()).sum()))
        p = np.exp(lp)
        mu = (p * lp).sum()
        var = (p * (lp - mu) ** 2).sum()
        logp.append(lp[ids[j]])
        z.append((lp[ids[j]] - mu) / math.sqrt(max(var, 1e-6)))
        preds.append(int(np.argmax(row)))
    loss = -sum(logp) / len(logp)
    scored, z, preds, targets = logp[:-1], z[:-1], preds[:-1], answer_ids[:-1]  # not the EOS
    count = max(1, int(len(scored) * 0.4))
    # gradnorm: .backward of the mean NLL of the scored tokens, then each parameter's 2-norm, averaged
    model.zero_grad(set_to_none=True)
    out = model(torch.tensor([ids])).logits[0]
    nll = -torch.stack([torch.log_softmax(out[j - 1], -1)[ids[j]] for j in range(len(prompt), len(ids) - 1)]).mean()
    nll.backward()
    norms = [q.grad.norm().item() for q in model.parameters() if q.grad is not None]
    model.zero_grad(set_to_none=True)
    k = next(k for k in range(len(targets)) if preds[k:] == targets[k:] or k == len(targets) - 1)
    return {"mia_loss": loss,
            "mia_zlib": loss / len(zlib.compress(tok.decode(answer_ids, skip_special_tokens=True).encode("utf-8"))),
            "mia_min_k": -sum(sorted(scored)[:count]) / count,
            "mia_min_k_plus_plus": -sum(sorted(z)[:count]) / count,
            "mia_gradnorm": sum(norms) / len(norms),
            "extraction_strength": 1 - k / len(targets),
            "exact_memorization": sum(a == b for a, b in zip(preds, targets)) / len(targets)}


def _pairwise_auc(forget, holdout):
    return sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout) / (len(forget) * len(holdout))


@pytest.mark.slow
def test_privacy_metrics_against_float64_brute_force(tiny_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    forget = load_split("forget01_perturbed")[:4]
    holdout = load_split("holdout01")[:3]
    # memorise two forget answers a little, so that exact memorization and extraction strength are not trivial
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = [encode_qa(tok, q, a, "plain", 256) for q, a in zip(forget["question"][:2], forget["answer"][:2])]
    for _ in range(40):
        loss = sum(model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss
                   for e in batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = model.eval().double()
    reference = AutoModelForCausalLM.from_pretrained(tiny_path).eval().double()
    # batch_size 3: the items of a batch have different lengths, so the padding is exercised too
    log = privacy_metrics(model, tok, forget, holdout, "plain", batch_size=3, reference_model=reference)
    scores = {}
    for split, rows in (("forget", forget), ("holdout", holdout)):
        for i, (q, a) in enumerate(zip(rows["question"], rows["answer"])):
            expected = _brute_force(model, tok, q, a)
            expected["mia_reference"] = expected["mia_loss"] - _brute_force(reference, tok, q, a)["mia_loss"]
            for key in (*MIAS, "mia_reference"):
                got = log[key][split]["value_by_index"][str(i)]["score"]
                assert got == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (split, i, key)
                scores.setdefault(key, {}).setdefault(split, []).append(got)
            if split == "forget":
                for key in ("extraction_strength", "exact_memorization"):
                    assert log[key]["value_by_index"][str(i)]["score"] == pytest.approx(expected[key], rel=1e-12)
    for key, by_split in scores.items():
        assert log[key]["auc"] == pytest.approx(_pairwise_auc(by_split["forget"], by_split["holdout"]), abs=1e-12)
    es = [v["score"] for v in log["extraction_strength"]["value_by_index"].values()]
    assert max(es) == 1.0 and any(0.1 < v < 1 for v in es)  # a whole answer and a partial suffix reproduced
    assert log["extraction_strength"]["agg_value"] == pytest.approx(sum(es) / len(es), rel=1e-12)
