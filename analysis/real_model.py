"""Gradient stability on a real pretrained model (issue 30, claim d): gradient ascent vs CE-U on the forget01
answers of SmolLM2-135M-Instruct finetuned on them (experiments/real_tofu's full model), per seed. Same trainer,
data, learning rate and seed for both; no gradient clipping, so the raw gradient norm is traced."""

from __future__ import annotations

import json
from pathlib import Path

from .callback import GradientTraceCallback

OBJECTIVES = ("ga", "ce_u")


def real_model_traces(model_path: str, out: str | Path, seeds=(0, 1, 2), steps: int = 15, lr: float = 2e-5,
                      batch_size: int = 4, prompt_format: str = "chat") -> dict:
    """{"model", "settings", "seeds": {seed: {objective: {"records": [{step, grad_norm, loss, p_y_mean}]}}}}."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl import UnlearnConfig, UnlearnTrainer
    from ceu_rl.console import quiet_trainer
    from ceu_rl.tofu import load_split

    out = Path(out)
    forget = load_split("forget01")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    settings = dict(steps=steps, learning_rate=lr, batch_size=batch_size, prompt_format=prompt_format,
                    forget_split="forget01", max_grad_norm=0.0, ignore_first_n_answer_tokens=0)
    result = {"model": str(model_path), "settings": settings, "seeds": {}}
    for seed in seeds:
        for objective in OBJECTIVES:
            cb = GradientTraceCallback()
            args = UnlearnConfig(output_dir=str(out / f"seed{seed}" / objective), objective=objective, use_cpu=True,
                                 max_steps=steps, learning_rate=lr, per_device_train_batch_size=batch_size,
                                 save_strategy="no", report_to="none", logging_steps=1, seed=seed, disable_tqdm=True,
                                 lr_scheduler_type="constant", max_grad_norm=0.0, prompt_format=prompt_format,
                                 max_length=256, ignore_first_n_answer_tokens=0)
            trainer = UnlearnTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                                     forget_dataset=forget, processing_class=tokenizer, callbacks=[cb])
            quiet_trainer(trainer, Path(args.output_dir) / "log.jsonl")
            trainer.train()
            result["seeds"].setdefault(str(seed), {})[objective] = {"records": cb.records}
    (out / "real_model_traces.json").write_text(json.dumps(result, indent=1))
    return result


def first_last(records: list[dict], key: str) -> tuple[float, float]:
    return records[0][key], records[-1][key]


def plot_real_model_traces(data: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"ga": "tab:red", "ce_u": "tab:blue"}
    for seed, runs in data["seeds"].items():
        for objective, run in runs.items():
            recs = run["records"]
            label = f"{objective}" if seed == next(iter(data["seeds"])) else None
            axes[0].plot([r["step"] for r in recs], [r["grad_norm"] for r in recs], color=colors[objective],
                         alpha=0.8, label=label)
            axes[1].plot([r["step"] for r in recs], [r["p_y_mean"] for r in recs], color=colors[objective],
                         alpha=0.8, label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("whole-model gradient norm (no clipping)")
    axes[1].set_ylabel("mean p_y on the forget tokens")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    s = data["settings"]
    fig.suptitle(f"Real model (SmolLM2-135M-Instruct finetuned on 6 TOFU authors): GA vs CE-U on forget01, "
                 f"lr {s['learning_rate']:g}, one line per seed ({len(data['seeds'])})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
