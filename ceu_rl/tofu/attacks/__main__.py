"""Attacks on an unlearned model, on a TOFU forget split (docs/attacks.md):

    python -m ceu_rl.tofu.attacks leak     --model PATH [--retain_model PATH] --forget_split forget10 --out DIR
    python -m ceu_rl.tofu.attacks relearn  --model PATH --retain_model PATH [--heldout] [--lr 2e-5 ...] --out DIR
    python -m ceu_rl.tofu.attacks quantize --model PATH [--bits 4 8] [--method auto] --out DIR

write DIR/LEAK.json, DIR/RELEARN.json or DIR/QUANTIZE.json and print a short table. The model is loaded with
`dtype="auto"` on the GPU when there is one. `--prompt_format auto` and an unset `--max_new_tokens` take what the
model's config records (`ceu_rl_prompt_format`, `ceu_rl_max_new_tokens`: written when this library trained and
evaluated it, e.g. mini-TOFU's plain format and 48 tokens), else the format's guess and 200; every model of a run
(the unlearned one and its references) is generated from with the --model's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..formatting import resolve_max_new_tokens, resolve_prompt_format
from .leak import DEFAULT_THRESHOLDS, leak_report
from .quantize import METHODS, quantization_robustness, quantize_model
from .relearn import KNOWLEDGE_DIRECTIONS, forget_metrics, heldout_split, relearn, relearn_robustness_table


def _load(path: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def _resolve_settings(args, model, tokenizer) -> None:
    """--prompt_format auto and an unset --max_new_tokens from what `model` (the --model) records, else the guesses;
    in place, so that its references are measured with the same settings."""
    args.prompt_format = resolve_prompt_format(args.prompt_format, tokenizer, model=model)
    args.max_new_tokens = resolve_max_new_tokens(args.max_new_tokens, model)
    print(f"prompt format {args.prompt_format!r}, max_new_tokens {args.max_new_tokens}")


def _rows(args) -> dict:
    from ..data import load_split

    data = load_split(f"{args.forget_split}_perturbed", args.data_source)
    if args.questions is not None:
        if not 1 <= args.questions <= len(data):
            raise ValueError(f"--questions {args.questions}: {args.forget_split} has {len(data)} questions.")
        data = data.select(range(args.questions))
    return data.to_dict()


def _subset(rows: dict, idx: list[int]) -> dict:
    return {key: [values[i] for i in idx] for key, values in rows.items()}


def _write(out: str, name: str, payload: dict) -> Path:
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


def run_leak(args) -> dict:
    rows = _rows(args)
    para = rows.get("paraphrased_question") if not args.no_paraphrased else None
    if not args.no_paraphrased and para is None:
        raise ValueError(f"{args.forget_split}_perturbed has no paraphrased_question column: pass --no_paraphrased.")
    out = {"forget_split": args.forget_split}
    for role, path in (("model", args.model), ("retain_model", args.retain_model)):
        if path is None:
            continue
        model, tokenizer = _load(path)
        if role == "model":
            _resolve_settings(args, model, tokenizer)
        sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                        max_new_tokens=args.max_new_tokens, prompt_format=args.prompt_format,
                        batch_size=args.batch_size, seed=args.seed)
        start = time.time()
        out[role] = {"path": path, **leak_report(model, tokenizer, rows["question"], rows["answer"], n=args.n,
                                                 ks=args.ks, thresholds=args.thresholds,
                                                 paraphrased_questions=para, keep_samples=args.save_samples,
                                                 **sampling)}
        out[role]["seconds"] = round(time.time() - start, 1)
    print(f"written {_write(args.out, 'LEAK.json', out)}")
    for role in ("model", "retain_model"):
        for key in ("question", "paraphrased_question"):
            if role in out and key in out[role]:
                r = out[role][key]
                print(f"{role} / {key}: k={r['ks']}")
                for t, curve in r["leak_at_k"].items():
                    print(f"  leak@k (rougeL_recall >= {t}): " + " ".join(f"{v:.3f}" for v in curve))
                print("  E[max rougeL_recall over k]: " + " ".join(f"{v:.3f}" for v in r["expected_max_rougeL_recall"]))
    return out


def _metrics(model, tokenizer, rows, args) -> dict:
    return forget_metrics(model, tokenizer, rows, args.prompt_format, args.max_new_tokens, args.batch_size,
                          args.max_length)


def run_relearn(args) -> dict:
    rows = _rows(args)
    n = len(rows["question"])
    train_idx, eval_idx = heldout_split(n, args.seed) if args.heldout else (list(range(n)), list(range(n)))
    train, evaluate = _subset(rows, train_idx), _subset(rows, eval_idx)
    out = {"forget_split": args.forget_split, "heldout": args.heldout, "train_index": train_idx,
           "eval_index": eval_idx,
           "settings": dict(epochs=args.epochs, batch_size=args.train_batch_size,
                            gradient_accumulation_steps=args.grad_accum, seed=args.seed,
                            lr_scheduler_type=args.lr_scheduler_type), "runs": []}
    models = {"unlearned": args.model, "retain": args.retain_model, **({"full": args.full_model}
                                                                     if args.full_model else {})}
    loaded = {role: _load(path) for role, path in models.items() if path is not None}
    _resolve_settings(args, *loaded["unlearned"])
    before = {role: _metrics(m, t, evaluate, args) for role, (m, t) in loaded.items()}
    for lr in args.lr:
        run = {"lr": lr}
        for role, (model, tokenizer) in loaded.items():
            attacked = relearn(model, tokenizer, train, lr=lr, epochs=args.epochs, batch_size=args.train_batch_size,
                               gradient_accumulation_steps=args.grad_accum, prompt_format=args.prompt_format,
                               seed=args.seed, max_length=args.max_length, lr_scheduler_type=args.lr_scheduler_type)
            run[role] = {"path": models[role], "before": before[role],
                         "after": _metrics(attacked, tokenizer, evaluate, args)}
            del attacked
        if "retain" in run:
            run["R"] = relearn_robustness_table(run["unlearned"]["before"], run["unlearned"]["after"],
                                                run["retain"]["before"], run["retain"]["after"])
        out["runs"].append(run)
        print(f"lr {lr:g}: " + "; ".join(
            f"{role} forget_Q_A_Prob {run[role]['before']['forget_Q_A_Prob']:.3f} -> "
            f"{run[role]['after']['forget_Q_A_Prob']:.3f}" for role in loaded)
            + (f"; R {json.dumps({k: round(v, 3) for k, v in run['R'].items()})}" if "R" in run else ""))
    print(f"written {_write(args.out, 'RELEARN.json', out)}")
    return out


def run_quantize(args) -> dict:
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its per-call int8 cast notices
    rows = _rows(args)
    model, tokenizer = _load(args.model)
    _resolve_settings(args, model, tokenizer)
    before = _metrics(model, tokenizer, rows, args)
    out = {"forget_split": args.forget_split, "path": args.model, "before": before, "runs": []}
    for bits in args.bits:
        quantized = quantize_model(model, bits, method=args.method, quant_type=args.quant_type,
                                   group_size=args.group_size, skip_modules=tuple(args.skip_modules))
        after = _metrics(quantized, tokenizer, rows, args)
        q = {k: quantization_robustness(before[k], after[k]) for k, d in KNOWLEDGE_DIRECTIONS.items()
             if d == 1 and k in before}
        out["runs"].append({"bits": bits, "quantization": quantized.quantization_info, "after": after, "Q": q})
        print(f"{bits}-bit ({quantized.quantization_info['method']}): " + ", ".join(
            f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in q))
        del quantized
    print(f"written {_write(args.out, 'QUANTIZE.json', out)}")
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the (unlearned) model: hub id or local path")
    p.add_argument("--forget_split", default="forget10", choices=["forget01", "forget05", "forget10"])
    p.add_argument("--questions", type=int, default=None, help="only the first N forget questions (default: all)")
    p.add_argument("--data_source", default=None, help="folder of TOFU JSON files, or 'hub' (default: shipped copy)")
    p.add_argument("--prompt_format", default="auto", choices=["auto", "llama2", "chat", "plain"],
                   help="auto: the format the model's config records (ceu_rl_prompt_format), else [INST] for Llama-2, "
                        "the chat template where there is one, else plain")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="default: the model's recorded ceu_rl_max_new_tokens, else 200")
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--out", required=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ceu_rl.tofu.attacks", description="Attacks on unlearned models")
    sub = p.add_subparsers(dest="attack", required=True)
    leak = sub.add_parser("leak", help="leak@k under sampling (arXiv 2511.04934)")
    _common(leak)
    leak.add_argument("--retain_model", default=None, help="the floor: a model that never saw the forget set")
    leak.add_argument("--n", type=int, default=200, help="samples per question (the paper: 200)")
    leak.add_argument("--temperature", type=float, default=1.0)
    leak.add_argument("--top_p", type=float, default=1.0)
    leak.add_argument("--top_k", type=int, default=0, help="0: off (transformers' generate would apply 50)")
    leak.add_argument("--ks", type=int, nargs="+", default=None, help="default 1, 2, 4, ..., min(128, n)")
    leak.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    leak.add_argument("--no_paraphrased", action="store_true", help="skip TOFU's paraphrased_question")
    leak.add_argument("--batch_size", type=int, default=256, help="sequences per generate call")
    leak.add_argument("--seed", type=int, default=0)
    leak.add_argument("--save_samples", action="store_true", help="keep every sample and its ROUGE in LEAK.json")
    rel = sub.add_parser("relearn", help="relearning attack and OpenUnlearning's R (arXiv 2506.12618)")
    _common(rel)
    rel.add_argument("--retain_model", default=None, help="the reference for R (OpenUnlearning's protocol)")
    rel.add_argument("--full_model", default=None, help="optional second reference: the model before unlearning")
    rel.add_argument("--lr", type=float, nargs="+", default=[2e-5], help="one run per learning rate")
    rel.add_argument("--epochs", type=float, default=1)
    rel.add_argument("--train_batch_size", type=int, default=8)
    rel.add_argument("--grad_accum", type=int, default=4)
    rel.add_argument("--lr_scheduler_type", default="linear")
    rel.add_argument("--heldout", action="store_true", help="relearn on a seeded half, measure on the other half")
    rel.add_argument("--seed", type=int, default=0)
    rel.add_argument("--batch_size", type=int, default=16, help="evaluation batch size")
    qua = sub.add_parser("quantize", help="4-/8-bit weight quantization (arXiv 2410.16454)")
    _common(qua)
    qua.add_argument("--bits", type=int, nargs="+", default=[4, 8], choices=[4, 8])
    qua.add_argument("--method", default="auto", choices=METHODS, help="auto: bitsandbytes if installed, else fake")
    qua.add_argument("--quant_type", default="nf4", choices=["nf4", "fp4", "int"],
                     help="4-bit format (fp4: transformers' default, the paper's code; int: stand-in only)")
    qua.add_argument("--group_size", type=int, default=64, help="stand-in 4-bit block size (bitsandbytes: 64)")
    qua.add_argument("--skip_modules", nargs="*", default=["lm_head"], help="linear layers left in full precision")
    qua.add_argument("--batch_size", type=int, default=16, help="evaluation batch size")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    if args.attack == "relearn" and args.retain_model is None:
        print("note: no --retain_model, so no R (the retain model's change is its reference)")
    return {"leak": run_leak, "relearn": run_relearn, "quantize": run_quantize}[args.attack](args)


if __name__ == "__main__":
    main()
