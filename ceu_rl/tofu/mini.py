"""Mini-TOFU: the whole TOFU protocol offline on 2 CPU cores, on a tiny Llama built locally.

1. Train a BPE tokenizer and build a small Llama (random init) from the shipped TOFU text.
2. Finetune it on `num_retain_authors` retain authors + the forget01 authors until the forget answers are memorised
   (the "full" model); finetune the retain model the same way without the forget authors.
3. Unlearn the full model with each objective at matched settings (same lr, steps, batch, seed).
4. Evaluate full, retain and every unlearned model with the TOFU metrics (forget quality against the retain model's
   own evaluation); write the table (JSON + Markdown) and per-step plots of loss, gradient norm and mean p_y.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from ..tiny_models import save_tiny_model
from ..unlearn import UnlearnConfig, UnlearnTrainer
from .data import load_idk, load_split
from .evaluate import evaluate_tofu, write_eval
from .finetune import finetune

AUTHOR_SIZE = 20  # TOFU: 200 authors x 20 questions, in order
DEFAULT_OBJECTIVES = ("ga", "grad_diff", "npo", "simnpo", "kl", "ce_u", "ce_u_retain", "idk_dpo", "ce_u_idk_dpo")


@dataclass
class MiniTofuConfig:
    out: str = "outputs/mini_tofu"
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    num_retain_authors: int = 6  # the first authors of TOFU; forget = forget01 (the last 2 authors)
    eval_questions: int = 40  # per eval set (forget01 has 40)
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 2
    finetune_epochs: int = 20
    finetune_lr: float = 3e-3
    unlearn_epochs: int = 10
    unlearn_lr: float = 2e-4
    batch_size: int = 16
    max_new_tokens: int = 48
    seed: int = 0
    objective_overrides: dict = field(default_factory=lambda: {"simnpo": {"beta": 2.5}})


def _splits(cfg: MiniTofuConfig):
    full = load_split("full")
    retain = full.select(range(cfg.num_retain_authors * AUTHOR_SIZE))
    forget = load_split("forget01")
    return retain, forget


def _training_args(out, epochs, lr, cfg, **kw):
    return dict(output_dir=str(out), use_cpu=True, num_train_epochs=epochs, learning_rate=lr,
                per_device_train_batch_size=cfg.batch_size, save_strategy="no", report_to="none", logging_steps=1,
                seed=cfg.seed, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                disable_tqdm=True, **kw)


def _general_knowledge(cfg):
    """The real-authors and world-facts questions that are evaluated, as plain QA: the tiny model has no pretraining,
    so both the full and the retain model learn them, as a pretrained model would already know them."""
    from datasets import Dataset

    rows = {"question": [], "answer": []}
    for split in ("real_authors_perturbed", "world_facts_perturbed"):
        d = load_split(split).select(range(cfg.eval_questions))
        rows["question"] += list(d["question"])
        rows["answer"] += list(d["answer"])
    return Dataset.from_dict(rows)


def _corpus(retain, forget):
    texts = [*retain["question"], *retain["answer"], *forget["question"], *forget["answer"]]
    for split in ("forget01_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        d = load_split(split)
        texts += [*d["question"], *d["answer"], *(p for ps in d["perturbed_answer"] for p in ps)]
        if "paraphrased_answer" in d.column_names:
            texts += list(d["paraphrased_answer"])
    return texts + ["Question: Answer:"] + load_idk()


def _eval(model, tokenizer, cfg, retain_log=None):
    n = cfg.eval_questions
    subsets = {"forget": range(min(n, 40)), "retain": range(min(n, cfg.num_retain_authors * AUTHOR_SIZE)),
               "ra": range(n), "wf": range(n)}
    return evaluate_tofu(model, tokenizer, "forget01", prompt_format="plain", retain_log=retain_log,
                         max_new_tokens=cfg.max_new_tokens, batch_size=32, max_length=256, subsets=subsets)


def _row(name, summary, seconds=None):
    return {"model": name, "forget_quality": summary.get("forget_quality"), "model_utility": summary["model_utility"],
            "forget_truth_ratio": summary["forget_truth_ratio"], "forget_rouge": summary["forget_Q_A_ROUGE"],
            "forget_prob": summary["forget_Q_A_Prob"], "retain_rouge": summary["retain_Q_A_ROUGE"],
            "retain_prob": summary["retain_Q_A_Prob"], "train_seconds": seconds}


def markdown_table(rows) -> str:
    head = "| model | forget quality | model utility | forget truth ratio | forget ROUGE-L | forget prob | retain ROUGE-L | retain prob |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['model']} | {r['forget_quality']:.3g} | {r['model_utility']:.3f} | "
                     f"{r['forget_truth_ratio']:.3f} | {r['forget_rouge']:.3f} | {r['forget_prob']:.3f} | "
                     f"{r['retain_rouge']:.3f} | {r['retain_prob']:.3f} |")
    return "\n".join(lines)


def plot_traces(traces: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("loss", "loss"), ("grad_norm", "gradient norm"), ("forget/p_y_mean", "mean p_y on forget tokens"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes, keys):
        for name, steps in traces.items():
            ax.plot([s["step"] for s in steps if key in s], [s[key] for s in steps if key in s], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _worker_init():
    torch.set_num_threads(1)


def _finetune_job(cfg, base, name, data, out):
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    start = time.time()
    args = TrainingArguments(**_training_args(out / "runs" / name, cfg.finetune_epochs, cfg.finetune_lr, cfg))
    finetune(model, tokenizer, data, args, prompt_format="plain")
    model.save_pretrained(out / "models" / name)
    tokenizer.save_pretrained(out / "models" / name)
    return time.time() - start


def _unlearn_and_eval_job(cfg, full_path, model_path, objective, forget, retain, out):
    """objective None: just evaluate `model_path`. Returns (TOFU_EVAL log, per-step trace, train seconds)."""
    tokenizer = AutoTokenizer.from_pretrained(full_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    trace, seconds = [], None
    if objective is not None:
        start = time.time()
        args = UnlearnConfig(**_training_args(out / "runs" / objective, cfg.unlearn_epochs, cfg.unlearn_lr, cfg),
                             objective=objective, prompt_format="plain", max_length=256,
                             **cfg.objective_overrides.get(objective, {}))
        trainer = UnlearnTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                                 processing_class=tokenizer, idk_answers=load_idk())
        trainer.train()
        seconds = time.time() - start
        trace = [h for h in trainer.state.log_history if "loss" in h]
    return _eval(model, tokenizer, cfg), trace, seconds


def run(cfg: MiniTofuConfig, workers: int = 2) -> dict:
    """Runs the finetunes, then the unlearning runs and evaluations, `workers` processes at a time (one thread each)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from datasets import concatenate_datasets

    from .metrics import summary_from_eval_log

    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    retain, forget = _splits(cfg)
    general = _general_knowledge(cfg)  # stands in for pretraining: both models learn it
    full_data = concatenate_datasets([retain, general, forget])
    retain_data = concatenate_datasets([retain, general])
    base = save_tiny_model(out / "models" / "init", _corpus(retain, forget), vocab_size=cfg.vocab_size,
                           seed=cfg.seed, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=4)
    full_path = out / "models" / "full"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    with pool:
        jobs = {name: pool.submit(_finetune_job, cfg, base, name, data, out)
                for name, data in (("full", full_data), ("retain", retain_data))}
        timings = {f"finetune_{name}": job.result() for name, job in jobs.items()}
        print(f"[mini-tofu] finetuned full ({len(full_data)} QA) and retain ({len(retain_data)} QA): {timings}",
              flush=True)
        runs = {"full": (full_path, None), "retain": (out / "models" / "retain", None),
                **{o: (full_path, o) for o in cfg.objectives}}
        jobs = {name: pool.submit(_unlearn_and_eval_job, cfg, full_path, path, objective, forget, retain, out)
                for name, (path, objective) in runs.items()}
        results = {name: job.result() for name, job in jobs.items()}

    retain_log = results["retain"][0]
    rows, traces = [], {}
    for name, (log, trace, seconds) in results.items():
        write_eval(log, out / "eval" / name, retain_log)
        summary = summary_from_eval_log(log, retain_log)
        rows.append(_row(name, summary, timings.get(f"finetune_{name}", seconds)))
        if trace:
            traces[name] = trace
    table = markdown_table(rows)
    runtime = time.time() - t0
    result = {"config": asdict(cfg), "rows": rows, "timings_s": timings, "runtime_s": runtime, "workers": workers}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "traces.json").write_text(json.dumps(traces, indent=2))
    (out / "results.md").write_text(table + f"\n\nRuntime: {runtime:.0f} s ({workers} processes, 1 thread each)\n")
    plot_traces(traces, out / "unlearning_traces.png")
    print("\n" + table + f"\n\nmini-TOFU runtime {runtime:.0f} s; results in {out}/results.{{json,md}}, plots in "
          f"{out}/unlearning_traces.png", flush=True)
    return result
