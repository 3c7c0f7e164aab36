"""Evaluate any causal LM on a TOFU forget split: every metric, batched, written in open-unlearning's layout.

    python -m ceu_rl.tofu.evaluate --model PATH_OR_HUB_ID --forget_split forget10 --out DIR [--retain_log RETAIN.json]

writes DIR/TOFU_EVAL.json (per-question values, keys as open-unlearning's) and DIR/TOFU_SUMMARY.json: forget
quality, model utility and their components, and open-unlearning's privacy and memorization metrics (the MIAs
mia_loss / mia_zlib / mia_min_k / mia_min_k_plus_plus / mia_gradnorm [/ mia_reference with --reference_model] between
the forget split and its holdout split, privleak, extraction_strength, exact_memorization; --no_privacy skips them,
--no_gradnorm the most expensive one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm  # TQDM_DISABLE=1 silences the bars

from . import memorization, metrics, mia
from .data import load_split
from .formatting import IGNORE_INDEX, encode_qa, prompt_ids, resolve_max_new_tokens, resolve_prompt_format


def _batches(items, size):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def answer_losses(model, tokenizer, questions, answers, prompt_format, max_length=512, batch_size=16, desc="loss"):
    """Per-pair average answer-token NLL (open-unlearning's avg_loss): mean -log p over the answer tokens."""
    encoded = [encode_qa(tokenizer, q, a, prompt_format, max_length) for q, a in zip(questions, answers)]
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for batch in tqdm(list(_batches(encoded, batch_size)), desc=desc, leave=False):
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in batch])
        labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in batch])
        attn = (torch.arange(width)[None, :] < torch.tensor([len(e["input_ids"]) for e in batch])[:, None]).long()
        device = model.device
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, :-1].float()
        shift = labels[:, 1:].to(device)
        nll = F.cross_entropy(logits.transpose(1, 2), shift, ignore_index=IGNORE_INDEX, reduction="none").sum(1)
        out.extend((nll / (shift != IGNORE_INDEX).sum(1).clamp(min=1)).tolist())
    return out


@torch.no_grad()
def greedy_answers(model, tokenizer, questions, prompt_format, max_new_tokens=200, batch_size=16, desc="generate"):
    """Greedy generations for ROUGE, left-padded batches, cut at EOS."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outs = []
    for batch in tqdm(list(_batches(list(questions), batch_size)), desc=desc, leave=False):
        encoded = [prompt_ids(tokenizer, q, prompt_format) for q in batch]
        width = max(len(e) for e in encoded)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=model.device)
        attn = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=model.device)
        gen = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        outs.extend(t.strip() for t in tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True))
    return outs


def _pad_batch(batch, pad):
    width = max(len(e["input_ids"]) for e in batch)
    ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in batch])
    attn = (torch.arange(width)[None, :] < torch.tensor([len(e["input_ids"]) for e in batch])[:, None]).long()
    return ids, attn


@torch.no_grad()
def answer_token_stats(model, tokenizer, questions, answers, prompt_format, max_length=512, batch_size=16,
                       desc="token stats"):
    """Per (question, answer), from one teacher-forced forward pass, in float64 from the model's logits, what the
    privacy and memorization metrics read (open-unlearning's `evaluate_probability`, `tokenwise_logprobs` and
    `tokenwise_vocab_logprobs`):

    avg_loss     mean NLL of every labelled token (answer + EOS)
    logprobs     log p of the labelled tokens except the last (EOS), as tokenwise_logprobs
    mu, var      mean and variance of log p over the vocabulary at those positions (min-k++)
    preds        argmax predictions at those positions; `targets` the tokens there (EM, ES)
    text         the labelled tokens decoded with skip_special_tokens=True (zlib)
    """
    encoded = [encode_qa(tokenizer, q, a, prompt_format, max_length) for q, a in zip(questions, answers)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for batch in tqdm(list(_batches(encoded, batch_size)), desc=desc, leave=False):
        ids, attn = _pad_batch(batch, pad)
        logits = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device)).logits
        for row, e in enumerate(batch):
            labelled = [j for j, t in enumerate(e["labels"]) if t != IGNORE_INDEX]
            # only the answer positions go to float64 (a (seq, vocab) float64 tensor of a 7B model would not fit)
            lp = torch.log_softmax(logits[row, [j - 1 for j in labelled]].double(), dim=-1)
            tokens = torch.tensor([e["input_ids"][j] for j in labelled], device=lp.device)
            answer_lp = lp.gather(1, tokens[:, None])[:, 0]
            scored = lp[:-1]  # positions predicting every labelled token but the last
            mu, var = mia.vocab_moments(scored)
            out.append({"avg_loss": mia.loss_score(answer_lp.cpu().numpy()),
                        "logprobs": answer_lp[:-1].cpu().numpy(), "mu": mu, "var": var,
                        "preds": scored.argmax(-1).cpu().numpy(), "targets": tokens[:-1].cpu().numpy(),
                        "text": tokenizer.decode([e["input_ids"][j] for j in labelled], skip_special_tokens=True)})
    return out


def gradnorm_scores(model, tokenizer, questions, answers, prompt_format, max_length=512, p=mia.GRADNORM_P,
                    desc="gradnorm"):
    """Per (question, answer), `mia.gradient_norm` (one forward and backward pass each, as open-unlearning's batch
    size 1)."""
    out = []
    for q, a in tqdm(list(zip(questions, answers)), desc=desc, leave=False):
        e = encode_qa(tokenizer, q, a, prompt_format, max_length)
        out.append(mia.gradient_norm(model, torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), p))
    return out


def _mia_scores(stats, reference_stats=None):
    """attack key -> per-item scores from `answer_token_stats` (gradnorm is computed apart)."""
    scores = {
        "mia_loss": [s["avg_loss"] for s in stats],
        "mia_zlib": [mia.zlib_score(s["avg_loss"], s["text"]) for s in stats],
        "mia_min_k": [mia.min_k_score(s["logprobs"]) for s in stats],
        "mia_min_k_plus_plus": [mia.min_k_plus_plus_score(s["logprobs"], s["mu"], s["var"]) for s in stats],
    }
    if reference_stats is not None:
        scores["mia_reference"] = [mia.reference_score(s["avg_loss"], r["avg_loss"])
                                   for s, r in zip(stats, reference_stats)]
    return scores


def privacy_metrics(model, tokenizer, forget_rows, holdout_rows, fmt, batch_size=16, max_length=512, gradnorm=True,
                    reference_model=None) -> dict:
    """open-unlearning's TOFU privacy and memorization metrics: the MIAs (`mia.ATTACKS`; mia_gradnorm when
    `gradnorm`, mia_reference when a `reference_model` sharing the tokenizer is given) between the forget and the
    holdout items, and extraction strength and exact memorization on the forget items. `*_rows`: dicts of columns
    with question / answer. One forward pass per item and model, plus a backward pass per item for gradnorm."""
    kw = dict(max_length=max_length, batch_size=batch_size)
    per_split, reference = {}, {}
    for split, rows in (("forget", forget_rows), ("holdout", holdout_rows)):
        per_split[split] = answer_token_stats(model, tokenizer, rows["question"], rows["answer"], fmt,
                                              desc=f"{split} token stats", **kw)
        if reference_model is not None:
            reference[split] = answer_token_stats(reference_model, tokenizer, rows["question"], rows["answer"], fmt,
                                                  desc=f"{split} reference", **kw)
    scores = {split: _mia_scores(per_split[split], reference.get(split)) for split in per_split}
    if gradnorm:
        for split, rows in (("forget", forget_rows), ("holdout", holdout_rows)):
            scores[split]["mia_gradnorm"] = gradnorm_scores(model, tokenizer, rows["question"], rows["answer"], fmt,
                                                            max_length, desc=f"{split} gradnorm")
    log = {key: mia.mia_entry(scores["forget"][key], scores["holdout"][key])
           for key in mia.ATTACKS if key in scores["forget"]}
    es = [memorization.extraction_strength(s["preds"], s["targets"]) for s in per_split["forget"]]
    em = [memorization.exact_memorization(s["preds"], s["targets"]) for s in per_split["forget"]]
    log["extraction_strength"] = _metric([{"score": v} for v in es], memorization.extraction_strength_mean(es))
    log["exact_memorization"] = _metric([{"score": v} for v in em], memorization.exact_memorization_mean(em))
    return log


def _by_index(values):
    return {str(i): v for i, v in enumerate(values)}


def _prob_entries(losses):
    return [{"prob": float(np.exp(-l)), "avg_loss": float(l)} for l in losses]


def _pert_entries(loss_matrix):
    return [{"prob": [float(np.exp(-l)) for l in row], "avg_loss": [float(l) for l in row]} for row in loss_matrix]


def _perturbed_losses(model, tokenizer, rows, fmt, **kw):
    """avg losses of every perturbed answer, as a (questions, perturbations) matrix."""
    n_pert = len(rows["perturbed_answer"][0])
    if any(len(p) != n_pert for p in rows["perturbed_answer"]):
        raise ValueError("Every question must have the same number of perturbed answers.")
    cols = [answer_losses(model, tokenizer, rows["question"], [p[j] for p in rows["perturbed_answer"]], fmt,
                          desc=f"perturbed {j + 1}/{n_pert}", **kw) for j in range(n_pert)]
    return np.array(cols).T


def _rouge_entries(model, tokenizer, questions, answers, fmt, max_new_tokens, batch_size):
    gens = greedy_answers(model, tokenizer, questions, fmt, max_new_tokens, batch_size)
    return [{**metrics.rouge_scores(g, a), "input": q, "ground_truth": a, "generation": g}
            for q, a, g in zip(questions, answers, gens)]


def _metric(values, agg):
    return {"agg_value": agg, "value_by_index": _by_index(values)}


def evaluate_split(model, tokenizer, rows, prefix, fmt, has_paraphrase, forget, max_new_tokens, batch_size,
                   max_length):
    """All metrics of one eval set (`rows`: dict of columns) under open-unlearning's key names."""
    kw = dict(max_length=max_length, batch_size=batch_size)
    log = {}
    correct = answer_losses(model, tokenizer, rows["question"], rows["answer"], fmt, desc=f"{prefix} answers", **kw)
    log[f"{prefix}_Q_A_Prob"] = _metric(_prob_entries(correct), float(np.mean(np.exp(-np.array(correct)))))
    pert = _perturbed_losses(model, tokenizer, rows, fmt, **kw)
    log[f"{prefix}_Q_A_PERT_Prob"] = _metric(_pert_entries(pert), float(np.mean(np.exp(-pert))))
    if has_paraphrase:
        para = answer_losses(model, tokenizer, rows["question"], rows["paraphrased_answer"], fmt,
                             desc=f"{prefix} paraphrases", **kw)
        log[f"{prefix}_Q_A_PARA_Prob"] = _metric(_prob_entries(para), float(np.mean(np.exp(-np.array(para)))))
        reference = para
    else:
        norm = metrics.normalised_probability(np.exp(-np.array(correct)), np.exp(-pert))
        log[f"{prefix}_Q_A_Prob_normalised"] = _metric([{"prob": float(v)} for v in norm], float(norm.mean()))
        reference = correct
    ratios = metrics.truth_ratios(reference, pert)
    agg = metrics.truth_ratio_forget_score(ratios) if forget else metrics.truth_ratio_utility_score(ratios)
    tr_key = "forget_truth_ratio" if forget else f"{prefix}_Truth_Ratio"
    log[tr_key] = _metric([{"score": float(r)} for r in ratios], agg)
    rouge = _rouge_entries(model, tokenizer, rows["question"], rows["answer"], fmt, max_new_tokens, batch_size)
    log[f"{prefix}_Q_A_ROUGE"] = _metric(rouge, float(np.mean([r["rougeL_recall"] for r in rouge])))
    return log


HOLDOUT_OF = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}


def evaluate_tofu(model, tokenizer, forget_split="forget10", data_source=None, prompt_format="auto",
                  retain_log: dict | None = None, max_new_tokens=200, batch_size=16, max_length=512,
                  subsets: dict | None = None, privacy: bool = True, gradnorm: bool = True, reference_model=None,
                  holdout_split: str | None = None) -> dict:
    """Evaluate on the forget split, the retain set, real authors and world facts. Returns the TOFU_EVAL dict.

    `subsets` optionally restricts an eval set to some rows, e.g. {"retain": range(160)} (the mini-TOFU default);
    the holdout set takes subsets["holdout"], else the forget set's subset.
    `retain_log`: a retain model's TOFU_EVAL dict, for forget_quality (else it is left out) and privleak (its
    mia_min_k AUC; without one, or without that key, open-unlearning's reference AUC 0.5).
    `privacy`: also open-unlearning's privacy and memorization metrics (`privacy_metrics`: the MIAs between the forget
    items and the holdout split `holdout_split`, default the forget split's (holdout01/05/10), extraction strength,
    exact memorization, privleak); `gradnorm=False` skips the per-item backward passes of mia_gradnorm;
    `reference_model` (sharing the tokenizer, e.g. the retain model) adds mia_reference. They only add keys: every
    other value is computed as without them.
    """
    fmt = resolve_prompt_format(prompt_format, tokenizer, model=model)
    subsets = subsets or {}
    model.eval()
    sets = {
        "forget": (f"{forget_split}_perturbed", True, True),
        "retain": ("retain_perturbed", True, False),
        "ra": ("real_authors_perturbed", False, False),
        "wf": ("world_facts_perturbed", False, False),
    }
    log = {}
    for prefix, (split, has_para, forget) in sets.items():
        data = load_split(split, data_source)
        if prefix in subsets:
            data = data.select(list(subsets[prefix]))
        rows = data.to_dict()
        if prefix == "forget":
            forget_rows = rows
        log.update(evaluate_split(model, tokenizer, rows, prefix, fmt, has_para, forget, max_new_tokens, batch_size,
                                  max_length))
    if privacy:
        holdout_split = holdout_split or HOLDOUT_OF.get(forget_split)
        if holdout_split is None:
            raise ValueError(f"No default holdout split for forget_split={forget_split!r}: pass holdout_split= one "
                             f"of {sorted(HOLDOUT_OF.values())}, or privacy=False.")
        try:
            holdout = load_split(holdout_split, data_source)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} The privacy metrics (MIA, privleak) score the forget split against the "
                                    f"holdout split {holdout_split!r}: add it to the data folder (the package ships "
                                    "it: ceu_rl/tofu/data), or pass privacy=False (CLI: --no_privacy).") from None
        if "holdout" in subsets or "forget" in subsets:
            holdout = holdout.select(list(subsets.get("holdout", subsets.get("forget"))))
        if reference_model is not None:
            reference_model.eval()
        log.update(privacy_metrics(model, tokenizer, forget_rows, holdout.to_dict(), fmt, batch_size, max_length,
                                   gradnorm, reference_model))
    summary = metrics.summary_from_eval_log(log, retain_log)
    log["model_utility"] = {"agg_value": summary["model_utility"]}
    log["forget_quality"] = {"agg_value": summary.get("forget_quality")}
    if "privleak" in summary:
        log["privleak"] = {"agg_value": summary["privleak"]}
    return log


def write_eval(log: dict, out_dir: str | Path, retain_log: dict | None = None) -> dict:
    """Write TOFU_EVAL.json and TOFU_SUMMARY.json (open-unlearning's layout); return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "TOFU_EVAL.json").write_text(json.dumps(log, indent=2))
    summary = metrics.summary_from_eval_log(log, retain_log)
    (out / "TOFU_SUMMARY.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = argparse.ArgumentParser(description="Evaluate a causal LM on TOFU")
    p.add_argument("--model", required=True, help="hub id or local path")
    p.add_argument("--forget_split", default="forget10", choices=["forget01", "forget05", "forget10"])
    p.add_argument("--out", required=True)
    p.add_argument("--retain_log", help="retain model's TOFU_EVAL.json, for forget_quality")
    p.add_argument("--data_source", default=None, help="folder of TOFU JSON files, or 'hub' (default: shipped copy)")
    p.add_argument("--prompt_format", default="auto", choices=["auto", "llama2", "chat", "plain"],
                   help="auto: the format the model's config records (ceu_rl_prompt_format), else [INST] for Llama-2, "
                        "the chat template where there is one, else plain")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="greedy tokens for ROUGE; default: the model's recorded ceu_rl_max_new_tokens, else 200")
    p.add_argument("--no_privacy", action="store_true",
                   help="skip the MIAs, privleak, extraction strength and exact memorization")
    p.add_argument("--no_gradnorm", action="store_true", help="skip mia_gradnorm (one backward pass per item)")
    p.add_argument("--reference_model", help="hub id or path of a reference model (e.g. the retain model) for "
                                             "mia_reference; it must share the evaluated model's tokenizer")
    args = p.parse_args(argv)
    from .score import _read

    retain = _read(args.retain_log) if args.retain_log else None  # missing or broken: one "error:" line, before loading
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    reference = None
    if args.reference_model and not args.no_privacy:
        reference = AutoModelForCausalLM.from_pretrained(args.reference_model, dtype="auto").to(device).eval()
    fmt = resolve_prompt_format(args.prompt_format, tokenizer, model=model)
    max_new_tokens = resolve_max_new_tokens(args.max_new_tokens, model)
    print(f"prompt format {fmt!r}, max_new_tokens {max_new_tokens}", file=sys.stderr)
    log = evaluate_tofu(model, tokenizer, args.forget_split, args.data_source, fmt, retain,
                        max_new_tokens, args.batch_size, privacy=not args.no_privacy,
                        gradnorm=not args.no_gradnorm, reference_model=reference)
    print(json.dumps(write_eval(log, args.out, retain), indent=2))


if __name__ == "__main__":
    main()
