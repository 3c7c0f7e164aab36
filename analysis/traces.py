"""Training traces on the same tiny model, data and seed: GA vs CE-U (UnlearnTrainer), DPO vs CE-U-DPO (TRL's
DPOTrainer vs CEUDPOTrainer), recorded with GradientTraceCallback."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from ceu_rl import CEUDPOConfig, CEUDPOTrainer, CEUGRPOConfig, CEUGRPOTrainer, UnlearnConfig, UnlearnTrainer
from ceu_rl.console import quiet_trainer
from ceu_rl.tofu import load_split
from ceu_rl.tofu.finetune import warm_started_tiny_model
from ceu_rl.tofu.rewards import forget_answer_penalty

from .callback import GradientTraceCallback, TokenProbabilityProbe


def _memorised_model(out: Path, questions, answers, rejected, quick: bool) -> str:
    """A tiny Llama supervised on the answers and the rejected answers until they are likely (p_y high)."""
    data = Dataset.from_dict({"question": [*questions, *questions], "answer": [*answers, *rejected]})
    return warm_started_tiny_model(out, [*questions, *answers, *rejected] * 2, data, epochs=80 if quick else 60,
                                   max_length=128, batch_size=8, vocab_size=400 if quick else 800,
                                   hidden_size=64 if quick else 128, num_layers=2)


def _train(trainer) -> None:
    """Train with the per-step log dicts in <output_dir>/log.jsonl instead of the terminal."""
    quiet_trainer(trainer, Path(trainer.args.output_dir) / "log.jsonl")
    trainer.train()


def run_traces(out: str | Path, quick: bool = True, steps: int | None = None) -> dict:
    out = Path(out)
    n = 8 if quick else 40
    rows = load_split("forget10_perturbed").select(range(n))
    questions, answers = list(rows["question"]), list(rows["answer"])
    rejected = [p[0] for p in rows["perturbed_answer"]]
    model_path = _memorised_model(out / "model", questions, answers, rejected, quick)
    tok = AutoTokenizer.from_pretrained(model_path)
    prompts = [f"Question: {q}\nAnswer:" for q in questions]
    steps = steps or (8 if quick else 40)
    common = dict(use_cpu=True, max_steps=steps, learning_rate=1e-3, per_device_train_batch_size=4,
                  save_strategy="no", report_to="none", logging_steps=1, seed=0, disable_tqdm=True,
                  lr_scheduler_type="constant", max_grad_norm=0.0)  # no clipping: the raw gradient is traced
    traces = {}
    forget = Dataset.from_dict({"question": questions, "answer": answers})
    for objective in ("ga", "ce_u"):
        cb = GradientTraceCallback(TokenProbabilityProbe(tok, prompts, [" " + a for a in answers]))
        args = UnlearnConfig(output_dir=str(out / objective), objective=objective, prompt_format="plain",
                             max_length=128, ignore_first_n_answer_tokens=0, **common)
        _train(UnlearnTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                              forget_dataset=forget, processing_class=tok, callbacks=[cb]))
        traces[objective] = cb.to_dict()
    pairs = Dataset.from_dict({"prompt": prompts, "chosen": [" " + a for a in answers],
                               "rejected": [" " + r for r in rejected]})
    dpo_common = dict(common, bf16=False, gradient_checkpointing=False, beta=0.1, max_length=128)
    for name, trainer_cls, config in (("dpo", DPOTrainer, DPOConfig(output_dir=str(out / "dpo"), **dpo_common)),
                                      ("ce_u_dpo", CEUDPOTrainer,
                                       CEUDPOConfig(output_dir=str(out / "ce_u_dpo"), loss_type="ceu", **dpo_common))):
        # TRL's stock DPOTrainer logs no per-token p: the probe measures p on the rejected tokens for both
        cb = GradientTraceCallback(TokenProbabilityProbe(tok, prompts, [" " + r for r in rejected]))
        model = AutoModelForCausalLM.from_pretrained(model_path)
        _train(trainer_cls(model=model, ref_model=AutoModelForCausalLM.from_pretrained(model_path), args=config,
                           train_dataset=pairs, processing_class=tok, callbacks=[cb]))
        traces[name] = cb.to_dict()
    # GRPO vs CE-U-GRPO: reward = not reproducing the memorised answer; p on negative-advantage tokens is logged by
    # CEUGRPOTrainer in both modes ("pg" is TRL's loss)
    prompts_ds = Dataset.from_dict({"prompt": prompts, "answer": answers})
    grpo_common = {k: v for k, v in common.items() if k != "per_device_train_batch_size"}
    for name, objective in (("grpo", "pg"), ("ce_u_grpo", "ceu")):
        cb = GradientTraceCallback(TokenProbabilityProbe(tok, prompts, [" " + a for a in answers]))
        config = CEUGRPOConfig(output_dir=str(out / name), negative_objective=objective, bf16=False,
                               gradient_checkpointing=False, per_device_train_batch_size=8, num_generations=4,
                               max_completion_length=16, beta=0.0, **grpo_common)
        _train(CEUGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path),
                              reward_funcs=forget_answer_penalty, args=config, train_dataset=prompts_ds,
                              processing_class=tok, callbacks=[cb]))
        traces[name] = cb.to_dict()
    return traces
