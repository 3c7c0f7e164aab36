"""UNDO on the real model (issue 32, item 3): the unlearned SmolLM2 distilled into a noised copy of itself.

    python -m experiments.real_tofu.undo [--teacher ce_u_retain_lr0.0001] [--alphas 0.1 0.3] [--seed 0]

Needs `python -m experiments.real_tofu` run first in the same --out (its full and retain models, their relearning
attack, and the teacher: the final model of an attacked run, saved under models/seed<seed>/<run>). Per alpha, one job
(kept as JSON under <out>/undo/: resumable; one alpha a process, so that two alphas run side by side on two cores):
noise a copy of the teacher (`ceu_rl.unlearn.UndoTrainer`, the noise drawn as the model's own initialisation), distil
the teacher into it (forward KL on every non-padding position), and measure the student as the real-model study
measures every model: TOFU evaluation (utility's parts) and the relearning attack on all 40 forget questions
(OpenUnlearning's R of forget prob against the retain model's own rise).

Distillation data, sized for a CPU: the retain authors' questions the retain model was finetuned on, prompt and
answer (chat format), and "general" text, which a pretrained model needs so that noise does not erase what it knew
before TOFU (the authors distil on general web text as well; none is offline here): questions about TOFU authors
outside the finetune, each with the teacher's own greedy answer (forward KL uses the teacher's full distribution at
every position, so the text's only role is where the teacher is queried). Compute is counted as in docs/undo (2 x
tokens a forward without gradient, 6 x with), over the retain model's finetune (its 5 epochs over its 80 questions):
the pretraining both models share is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ceu_rl.tofu.attacks import relearn_robustness
from ceu_rl.tofu.formatting import encode_qa
from ceu_rl.tofu.metrics import summary_from_eval_log

from ..mini_tofu.jobs import AUTHOR_SIZE, _Clock
from ..undo.jobs import FlopCounter, save
from .config import RealTofuConfig
from .jobs import evaluate, model_dir, relearn_attack, splits

PARTS = ("model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE",
         "ra_Q_A_ROUGE", "wf_Q_A_ROUGE", "ra_Q_A_Prob_normalised", "wf_Q_A_Prob_normalised")


def general_rows(teacher, tokenizer, cfg: RealTofuConfig, n_authors: int) -> dict:
    """Questions of the `n_authors` TOFU authors after the finetuned retain authors (never trained on), answered by
    the teacher greedily in the chat format."""
    from ceu_rl.tofu.data import load_split
    from ceu_rl.tofu.evaluate import greedy_answers

    start = cfg.num_retain_authors * AUTHOR_SIZE
    questions = load_split("full").select(range(start, start + n_authors * AUTHOR_SIZE))["question"]
    teacher.eval()
    answers = greedy_answers(teacher, tokenizer, questions, cfg.prompt_format, cfg.max_new_tokens, batch_size=20)
    return {"question": list(questions), "answer": list(answers)}


def retain_finetune_flops(cfg: RealTofuConfig, tokenizer) -> int:
    retain, _ = splits(cfg)
    tokens = sum(len(encode_qa(tokenizer, q, a, cfg.prompt_format, cfg.max_length)["input_ids"])
                 for q, a in zip(retain["question"], retain["answer"]))
    return 6 * cfg.finetune_epochs * tokens


def measure(model, tokenizer, cfg: RealTofuConfig, seed: int) -> dict:
    model.eval()
    return {"eval_log": evaluate(model, tokenizer, cfg), "relearn": relearn_attack(model, tokenizer, cfg, seed)}


def student_job(cfg: RealTofuConfig, seed: int, teacher: str, alpha: float, args, out: Path) -> dict:
    from datasets import Dataset, concatenate_datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl.console import quiet_trainer
    from ceu_rl.unlearn import UndoConfig, UndoTrainer

    clock = _Clock()
    path = model_dir(out, f"seed{seed}/{teacher}")
    if not path.is_dir():
        raise SystemExit(f"{path}: no teacher model; run `python -m experiments.real_tofu --out {out} --seeds {seed}` "
                         f"with its objective in `attacked` first.")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    retain, _ = splits(cfg)
    general = Dataset.from_dict(general_rows(model, tokenizer, cfg, args.general_authors))
    data = concatenate_datasets([retain.select_columns(["question", "answer"]), general])
    name = f"{teacher}_a{alpha:g}"
    targs = UndoConfig(output_dir=str(out / "runs" / f"seed{seed}" / f"undo_{name}"), use_cpu=True,
                       num_train_epochs=args.epochs, learning_rate=args.distill_lr, per_device_train_batch_size=8,
                       lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                       save_strategy="no", report_to="none", logging_steps=1, seed=seed, disable_tqdm=True,
                       noise_alpha=alpha, noise_seed=seed + 1000, prompt_format=cfg.prompt_format,
                       max_length=cfg.max_length)
    trainer = UndoTrainer(model=model, args=targs, train_dataset=data, processing_class=tokenizer)
    quiet_trainer(trainer, out / "logs" / f"seed{seed}" / f"undo_{name}.jsonl")
    counter = FlopCounter(trainer.model, trainer.teacher_model)
    trainer.train()
    counter.remove()
    trace = [{k: h[k] for k in ("step", "loss", "grad_norm") if k in h} for h in trainer.state.log_history
             if "loss" in h]
    student = trainer.accelerator.unwrap_model(trainer.model)
    return {"seed": seed, "name": name, "teacher": teacher, "alpha": alpha, "epochs": args.epochs,
            "distill_lr": args.distill_lr, "distill_rows": len(data), "general_rows": len(general),
            "distill_flops": counter.flops, "retain_finetune_flops": retain_finetune_flops(cfg, tokenizer),
            "trace": trace, "noised_fraction": trainer.noised_fraction, **measure(student, tokenizer, cfg, seed),
            **clock.seconds()}


def teacher_job(cfg: RealTofuConfig, seed: int, teacher: str, out: Path) -> dict:
    """The plain teacher measured as the students are (the study's run of it was not attacked)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    clock = _Clock()
    path = model_dir(out, f"seed{seed}/{teacher}")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    return {"seed": seed, "name": teacher, "kind": "teacher", **measure(model, tokenizer, cfg, seed),
            **clock.seconds()}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def report(out: Path, seed: int, command: str = "") -> dict:
    """One row per model: the real-model study's full, retain and unlearned runs (their final evaluation and
    relearning attack) and every UNDO student, with utility's parts, forget prob after relearning and R."""
    jobs = out / "jobs"
    shared = {n: _load(jobs / "seedshared" / f"{n}.json") for n in ("full", "retain", "relearn_full", "relearn_retain")}
    ret = shared["retain"]["eval_log"]
    rb = ret["forget_Q_A_Prob"]["agg_value"]
    ra = shared["relearn_retain"]["relearn"]["after"]["forget_Q_A_Prob"]

    def row(name, log, after, **extra):
        s = summary_from_eval_log(log, ret)
        before = s["forget_Q_A_Prob"]
        return {"name": name, **{k: s[k] for k in PARTS}, "forget_prob_after_relearning": after,
                "R": relearn_robustness(before, after, rb, ra), **extra}

    rows = [row(n, shared[n]["eval_log"], shared[f"relearn_{n}"]["relearn"]["after"]["forget_Q_A_Prob"],
                compute_fraction=1.0 if n == "retain" else 0.0) for n in ("full", "retain")]
    rows[0]["R"] = None  # the full model has nothing forgotten to come back: R says nothing about it
    for path in sorted((jobs / f"seed{seed}").glob("*.json")):
        rec = _load(path)
        if "relearn" in rec and "eval_logs" in rec:  # an attacked unlearning run: its final step
            log = rec["eval_logs"][str(max(int(k) for k in rec["eval_logs"]))]
            rows.append(row(rec["name"], log, rec["relearn"]["after"]["forget_Q_A_Prob"]))
    for path in sorted((out / "undo" / f"seed{seed}").glob("*.json")):
        rec = _load(path)
        if rec.get("kind") == "teacher":
            rows.append(row(rec["name"], rec["eval_log"], rec["relearn"]["after"]["forget_Q_A_Prob"]))
            continue
        rows.append(row(f"undo:{rec['name']}", rec["eval_log"], rec["relearn"]["after"]["forget_Q_A_Prob"],
                        alpha=rec["alpha"], epochs=rec["epochs"], distill_lr=rec["distill_lr"],
                        distill_rows=rec["distill_rows"], general_rows=rec["general_rows"], cpu_s=rec["cpu_s"],
                        steps=len(rec["trace"]),
                        kl_first_step=rec["trace"][0]["loss"], kl_last_step=rec["trace"][-1]["loss"],
                        distill_compute_fraction=rec["distill_flops"] / rec["retain_finetune_flops"]))
    result = {"command": command, "seed": seed,
              "relearn_lr": shared["relearn_retain"]["relearn"]["lr"], "rows": rows}
    (out / "undo" / "results.json").write_text(json.dumps(result, indent=1))
    (out / "undo" / "results.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    cols = ("model_utility", "forget_Q_A_Prob", "forget_prob_after_relearning", "R", "retain_Q_A_ROUGE",
            "ra_Q_A_ROUGE", "wf_Q_A_ROUGE")
    lines = [f"Seed {result['seed']}; relearning: all 40 forget questions, 1 epoch, lr {result['relearn_lr']:g}.", "",
             "| model | " + " | ".join(cols) + " | distillation compute / retain finetune |",
             "|---|" + "---|" * (len(cols) + 1)]
    for r in result["rows"]:
        frac = r.get("distill_compute_fraction")
        lines.append(f"| {r['name']} | " + " | ".join("" if r[c] is None else f"{r[c]:.3f}" for c in cols)
                     + f" | {'' if frac is None else f'{frac:.2f}'} |")
    return "\n".join(lines) + "\n"


def study_config(out: Path, seed: int) -> RealTofuConfig:
    """The settings the real-model study's full model was made with (its job record), so that the students are
    measured on the same eval sets, format and relearning attack."""
    from dataclasses import fields

    settings = _load(out / "jobs" / "seedshared" / "full.json")["settings"]
    kept = {f.name: settings[f.name] for f in fields(RealTofuConfig) if f.name in settings}
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()}
    return RealTofuConfig(**{**kept, "out": str(out), "seeds": (seed,)})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/real_tofu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", default="ce_u_retain_lr0.0001", help="an attacked run of the real-model study")
    p.add_argument("--alphas", type=float, nargs="*", default=[0.1, 0.3], help="none: only the teacher")
    p.add_argument("--epochs", type=int, default=3, help="distillation epochs over the retain + general rows")
    p.add_argument("--distill_lr", type=float, default=1e-4, help="the finetune's lr")
    p.add_argument("--general_authors", type=int, default=4, help="TOFU authors outside the finetune (20 q each)")
    p.add_argument("--report_only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / "jobs" / "seedshared" / "full.json").is_file():
        raise SystemExit(f"{out}: no real-model study here; run `python -m experiments.real_tofu --out {out}` first.")
    cfg = study_config(out, args.seed)
    study_job = out / "jobs" / f"seed{args.seed}" / f"{args.teacher}.json"
    teacher_path = out / "undo" / f"seed{args.seed}" / f"{args.teacher}.json"
    if not args.report_only and study_job.is_file() and "relearn" not in _load(study_job) \
            and not teacher_path.is_file():  # the study attacks only its highest lr: attack this teacher here
        save(teacher_path, teacher_job(cfg, args.seed, args.teacher, out))
    for alpha in [] if args.report_only else args.alphas:
        path = out / "undo" / f"seed{args.seed}" / f"{args.teacher}_a{alpha:g}.json"
        if not path.is_file():
            record = student_job(cfg, args.seed, args.teacher, alpha, args, out)
            save(path, record)
            print(f"[real-tofu undo] {record['name']}: {record['wall_s']:.0f} s wall, {record['cpu_s']:.0f} s CPU",
                  flush=True)
    command = "python -m experiments.real_tofu.undo " + " ".join(sys.argv[1:] if argv is None else argv)
    print(markdown(report(out, args.seed, command)), flush=True)


if __name__ == "__main__":
    main()
