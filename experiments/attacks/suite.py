"""The attack suite on one model (in memory): leak@k, relearning (whole forget set and held-out half) and
quantization, each with the library's functions (`ceu_rl.tofu.attacks`), each on a fresh copy of the model."""

from __future__ import annotations

import time

from ceu_rl.tofu.attacks import forget_metrics, heldout_split, leak_report, quantize_model, relearn
from ceu_rl.tofu.data import load_split

from .config import AttackStudyConfig

FMT = dict(prompt_format="plain", max_new_tokens=48, batch_size=40, max_length=256)  # mini-TOFU's evaluation


def forget_rows(split: str = "forget01") -> dict:
    """The forget split's evaluation rows (question, answer, paraphrase, perturbed answers) as a dict of columns."""
    return load_split(f"{split}_perturbed").to_dict()


def _subset(rows: dict, idx) -> dict:
    return {k: [v[i] for i in idx] for k, v in rows.items()}


def _leak(model, tokenizer, rows, cfg: AttackStudyConfig, seed: int, paraphrased: bool | None = None) -> dict:
    paraphrased = cfg.leak_paraphrased if paraphrased is None else paraphrased
    report = leak_report(model, tokenizer, rows["question"], rows["answer"], n=cfg.leak_n,
                         paraphrased_questions=rows["paraphrased_question"] if paraphrased else None,
                         max_new_tokens=cfg.leak_max_new_tokens, prompt_format="plain",
                         batch_size=cfg.leak_batch_size, seed=seed)
    for key in ("question", "paraphrased_question")[:1 + paraphrased]:  # counts and maxima, not texts
        for item in report[key]["per_question"]:
            item.pop("question", None)
            item.pop("answer", None)
    return report


def _relearn(model, tokenizer, rows, cfg: AttackStudyConfig, seed: int) -> dict:
    """Per lr: forget metrics after relearning on all forget questions ("all", OpenUnlearning's protocol), and after
    relearning on a seeded half ("heldout": measured on the other half; "seen": on the relearned half). `cfg.cheap`
    (the main job): the held-out form only."""
    learn_idx, held_idx = heldout_split(len(rows["question"]), seed)
    out = {"heldout_idx": held_idx, "before": {"heldout": forget_metrics(model, tokenizer, _subset(rows, held_idx),
                                                                       **FMT)}}
    kw = dict(epochs=cfg.relearn_epochs, batch_size=cfg.relearn_batch_size, gradient_accumulation_steps=1,
              prompt_format="plain", seed=seed, max_length=256)
    for lr in cfg.relearn_lrs:
        result = {}
        if not cfg.cheap:
            attacked = relearn(model, tokenizer, _subset(rows, range(len(rows["question"]))), lr, **kw)
            result["all"] = forget_metrics(attacked, tokenizer, rows, **FMT)
        attacked = relearn(model, tokenizer, _subset(rows, learn_idx), lr, **kw)
        result["heldout"] = forget_metrics(attacked, tokenizer, _subset(rows, held_idx), **FMT)
        if lr in cfg.leak_after_relearn:  # sampling the held-out questions from the relearned model
            result["heldout_leak"] = _leak(attacked, tokenizer, _subset(rows, held_idx), cfg, seed, paraphrased=False)
        if not cfg.cheap:
            result["seen"] = forget_metrics(attacked, tokenizer, _subset(rows, learn_idx), **FMT)
        out[f"{lr:g}"] = result
    return out


def _quantize(model, tokenizer, rows, cfg: AttackStudyConfig) -> dict:
    out = {}
    for bits in cfg.quant_bits:
        quantized = quantize_model(model, bits=bits, method=cfg.quant_method)
        out[f"{bits}bit"] = {**forget_metrics(quantized, tokenizer, rows, **FMT),
                             "quantization": quantized.quantization_info}
    return out


def attack_suite(model, tokenizer, cfg: AttackStudyConfig, seed: int, split: str = "forget01") -> dict:
    """{"before": forget metrics, "leak": leak@k report, "relearn": ..., "quantize": ..., "cpu_s": per attack} of
    `model`, which is left unchanged (every attack works on a copy)."""
    rows = forget_rows(split)
    model.eval()
    out, cpu_s = {"before": forget_metrics(model, tokenizer, rows, **FMT)}, {}
    for name, attack in (("leak", lambda: _leak(model, tokenizer, rows, cfg, seed)),
                         ("relearn", lambda: _relearn(model, tokenizer, rows, cfg, seed)),
                         ("quantize", lambda: _quantize(model, tokenizer, rows, cfg))):
        start = time.process_time()
        out[name] = attack()
        cpu_s[name] = time.process_time() - start
    return {**out, "cpu_s": cpu_s}
