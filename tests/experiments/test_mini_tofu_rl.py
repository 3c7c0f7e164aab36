"""Mini-TOFU RL unlearning (issue 16): the job on a cut-down configuration is deterministic per seed (seed 0 run
twice) and seeds differ; the reward and the evaluation of the trained model checked by hand (an LCS and a float64
teacher-forced probability); the retain anchor's gradient against a float64 autograd NLL; the shared-token set the
study reports equals grpo_compare's definition."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from scipy.stats import ks_2samp
from transformers import AutoModelForCausalLM, AutoTokenizer

from ceu_rl import CEUGRPOConfig, CEUGRPOTrainer
from ceu_rl.objectives import divergence_from_positives
from ceu_rl.tofu.formatting import encode_qa, format_prompt
from ceu_rl.tofu.rewards import forget_answer_penalty
from ceu_rl.unlearn.rl_unlearn_trainer import RetainAnchoredGRPOTrainer
from experiments.grpo_compare.run import shared_negative_tokens
from experiments.mini_tofu import MiniTofuConfig, run
from experiments.mini_tofu import rl_jobs
from experiments.mini_tofu.config import RL_OBJECTIVES, rl_objective
from experiments.mini_tofu.jobs import splits

# cut down as test_mini_tofu's TINY, and RL: 1 epoch of the 40 forget prompts, 10 prompts x 2 completions per step
# (4 steps), 8 new tokens, evaluated at steps 2 and 4; the three forms (no anchor, KL, retain)
TINY_RL = dict(seeds=(0, 1), objectives=("grpo", "ceu_prefix_kl", "ceu_full_retain"), learning_rates=(3e-3,),
               num_retain_authors=1, eval_questions=4, vocab_size=320, hidden_size=32, num_layers=1,
               finetune_epochs=2, max_new_tokens=8, rl_epochs=1, rl_prompts_per_step=10, rl_generations=2,
               rl_max_new_tokens=8, rl_eval_points=2)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The cut-down job (seeds 0 and 1), then seed 0 again; the first run also keeps a float64 copy of the model each
    time it is evaluated."""
    captured = {}
    real = rl_jobs.evaluate

    def capturing(model, tokenizer, cfg):
        log = real(model, tokenizer, cfg)
        # a new model from cloned tensors: a deepcopy would keep TRL's patched forward, bound to the live model
        with torch.random.fork_rng():  # from_config's random init must not shift the run's sampling
            snapshot = AutoModelForCausalLM.from_config(model.config)
        snapshot.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
        captured.setdefault("models", []).append((snapshot.double().eval(), json.loads(json.dumps(log))))
        return log

    results = []
    for attempt in ("a", "b"):
        seeds = TINY_RL["seeds"] if attempt == "a" else (0,)  # determinism needs one seed run twice
        cfg = MiniTofuConfig(out=str(tmp_path_factory.mktemp(f"mini_tofu_rl_{attempt}")), **{**TINY_RL, "seeds": seeds})
        rl_jobs.evaluate = capturing if attempt == "a" else real
        try:
            run(cfg, workers=0, command="test")
        finally:
            rl_jobs.evaluate = real
        results.append((cfg, json.loads((Path(cfg.out) / "results.json").read_text())))
    return results, captured


def _records(cfg):
    return {p.relative_to(Path(cfg.out) / "jobs").as_posix(): json.loads(p.read_text())
            for p in sorted((Path(cfg.out) / "jobs").glob("seed*/*_lr*.json"))}


def test_same_seed_same_numbers_and_seeds_differ(two_runs):
    ((cfg_a, a), (cfg_b, b)), _ = two_runs
    assert a["per_seed"]["0"] == b["per_seed"]["0"]  # every metric at steps 2 and 4, bit for bit
    ra, rb = _records(cfg_a), _records(cfg_b)
    assert len(ra) == 6 and rb.keys() == {k for k in ra if k.startswith("seed0/")} and len(rb) == 3
    for name in rb:
        assert ra[name]["trace"] == rb[name]["trace"], name  # rollouts, rewards, losses, p's: the same
        assert ra[name]["generated_tokens"] == rb[name]["generated_tokens"] > 0
        assert sorted(ra[name]["eval_logs"]) == ["2", "4"]
    s0, s1 = a["per_seed"]["0"]["grpo_lr0.003"]["4"], a["per_seed"]["1"]["grpo_lr0.003"]["4"]
    assert s0 != s1
    trace = ra["seed0/ceu_prefix_kl_lr0.003.json"]["trace"]
    assert [row["step"] for row in trace] == [1, 2, 3, 4]
    assert all("kl" in row and "ceu/p_shared_mean" in row for row in trace)
    assert all("retain/nll" in row for row in ra["seed0/ceu_full_retain_lr0.003.json"]["trace"])
    assert ra["seed0/grpo_lr0.003.json"]["forget_p_start"] != trace[-1]["forget/p_y_mean"]  # it moved


def _lcs(a, b):
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1, j + 1] = table[i, j] + 1 if x == y else max(table[i, j + 1], table[i + 1, j])
    return table[-1, -1]


def test_reward_by_hand():
    answer = "Jon wrote three novels about the sea."
    completions = ["Jon wrote three novels about the sea.", "Jon wrote about the sea", "the sea, about", "",
                   [{"role": "assistant", "content": "Jon wrote three novels"}]]
    rewards = forget_answer_penalty(completions, [answer] * len(completions))
    words = re.findall(r"[a-z0-9]+", answer.lower())
    for completion, reward in zip(completions, rewards):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        recall = _lcs(words, re.findall(r"[a-z0-9]+", text.lower())) / len(words)  # ROUGE-L recall
        assert reward == pytest.approx(1 - recall, abs=1e-12)
    assert rewards[0] == 0 and rewards[3] == 1 and rewards[1] == pytest.approx(2 / 7)


def _answer_logps(model, tokenizer, question, answer):
    """float64 log p of each answer token given the plain prompt (the model already in float64)."""
    item = encode_qa(tokenizer, question, answer, "plain", 256)
    ids = torch.tensor([item["input_ids"]])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
    labels = torch.tensor(item["labels"][1:])
    keep = labels != -100
    return logp[keep].gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)


def test_evaluation_of_the_trained_model_by_hand(two_runs):
    """Every evaluation of the RL runs (2 seeds x 3 runs x steps 2 and 4), against float64 teacher forcing of a copy
    of the model taken when it was evaluated: forget prob = exp(mean log p) per question; forget quality = scipy's KS
    p-value between the per-question truth ratios and the retain model's; at the last step, the trace's forget-answer
    p = the mean p over every answer token."""
    ((cfg, a), _), captured = two_runs
    out = Path(cfg.out)
    tokenizer = AutoTokenizer.from_pretrained(out / "models" / "seed0" / "full")
    _, forget, _ = splits(cfg)
    records = _records(cfg)
    assert len(captured["models"]) == 12
    checked = set()
    for model, log in captured["models"]:
        (name, step), = [(n, st) for n, r in records.items() for st, lg in r["eval_logs"].items() if lg == log]
        seed, run_name = name.removesuffix(".json").split("/")
        with torch.no_grad():
            token_logps = [_answer_logps(model, tokenizer, q, ans) for q, ans in zip(forget["question"],
                                                                                  forget["answer"])]
        probs = [v["prob"] for v in log["forget_Q_A_Prob"]["value_by_index"].values()]
        # float32 batched evaluation vs float64 single rows: up to 3e-4 relative measured (a wrong step: ~25%)
        assert probs == pytest.approx([float(lp.mean().exp()) for lp in token_logps], rel=2e-3)
        retain_log = json.loads((out / "jobs" / seed / "retain.json").read_text())["eval_log"]
        tr = [v["score"] for v in log["forget_truth_ratio"]["value_by_index"].values()]
        tr_retain = [v["score"] for v in retain_log["forget_truth_ratio"]["value_by_index"].values()]
        assert a["per_seed"][seed.removeprefix("seed")][run_name][step]["forget_quality"] == pytest.approx(
            ks_2samp(tr, tr_retain).pvalue, rel=1e-12)
        if step == "4":
            p_tokens = torch.cat(token_logps).exp()
            assert records[name]["trace"][-1]["forget/p_y_mean"] == pytest.approx(float(p_tokens.mean()), rel=2e-3)
        checked.add((name, step))
    assert len(checked) == 12


def test_retain_anchor_gradient_against_float64_nll(two_runs, tmp_path):
    """d(anchored loss) - d(CE-U-GRPO loss) on the same rollouts = coef x d(float64 retain NLL), the NLL written out
    (log-softmax, mean over the answer tokens of the retain batch)."""
    ((cfg, _), _), _ = two_runs
    path = Path(cfg.out) / "models" / "seed0" / "full"
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    retain, forget, _ = splits(cfg)
    prompts = Dataset.from_dict({"prompt": [format_prompt(q, tokenizer, "plain") for q in forget["question"][:4]],
                                 "answer": forget["answer"][:4]})
    args = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
                         max_completion_length=6, loss_type="dapo", negative_objective="ceu_full", report_to="none",
                         seed=0, max_steps=1, disable_tqdm=True)
    coef = 0.7
    trainer = RetainAnchoredGRPOTrainer(model=model, reward_funcs=forget_answer_penalty, args=args,
                                        train_dataset=prompts, processing_class=tokenizer, retain_dataset=retain,
                                        retain_coef=coef, retain_batch_size=3)
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train, read by TRL's loss
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    fixed = trainer.next_retain_batch()
    trainer.next_retain_batch = lambda: fixed
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss_fn):
        model.zero_grad()
        loss_fn().backward()
        return [p.grad.detach().double().clone() for p in params]

    anchored = grads(lambda: trainer.compute_loss(model, inputs))
    plain = grads(lambda: CEUGRPOTrainer.compute_loss(trainer, model, inputs))
    # not copy.deepcopy: TRL patches the instance's forward (fused head), and a deepcopy keeps calling the original's
    with torch.random.fork_rng():
        ref_model = AutoModelForCausalLM.from_config(model.config)
    ref_model.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    ref_model = ref_model.double()
    logp = torch.log_softmax(ref_model(input_ids=fixed["input_ids"], attention_mask=fixed["attention_mask"])
                             .logits[:, :-1], -1)
    labels = fixed["labels"][:, 1:]
    keep = labels != -100
    nll = -logp[keep].gather(-1, labels[keep].unsqueeze(-1)).mean()
    ref = torch.autograd.grad(coef * nll, [p for p in ref_model.parameters() if p.requires_grad])
    worst = max(float((x - y - r).abs().max() / r.abs().max().clamp(min=1e-12))
                for x, y, r in zip(anchored, plain, ref) if r.abs().max() > 0)
    assert worst < 1e-4
    assert sum(float(r.abs().sum()) for r in ref) > 0


def test_retain_batches_cycle_through_every_pair_in_a_seeded_order(two_runs, tmp_path):
    ((cfg, _), _), _ = two_runs
    path = Path(cfg.out) / "models" / "seed0" / "full"
    tokenizer = AutoTokenizer.from_pretrained(path)
    retain, forget, _ = splits(cfg)
    prompts = Dataset.from_dict({"prompt": list(forget["question"][:2])})

    def batches(seed):
        args = CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2,
                             num_generations=2, report_to="none", seed=seed)
        t = RetainAnchoredGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=lambda **k: [0],
                                      args=args, train_dataset=prompts, processing_class=tokenizer,
                                      retain_dataset=retain, retain_batch_size=5)
        return [tuple(map(tuple, t.next_retain_batch()["input_ids"].tolist())) for _ in range(4)]

    with pytest.raises(ValueError, match="retain_dataset"):
        RetainAnchoredGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=lambda **k: [0],
                                  args=CEUGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                                     per_device_train_batch_size=2, num_generations=2),
                                  train_dataset=prompts, processing_class=tokenizer, retain_coef=1.0)
    first = batches(0)
    assert first == batches(0) and first != batches(1)
    encoded = {tuple(encode_qa(tokenizer, q, ans, "plain", 256)["input_ids"])
               for q, ans in zip(retain["question"], retain["answer"])}
    seen = [tuple(x for x in row if x != tokenizer.pad_token_id) for b in first for row in b]
    assert set(seen[:20]) == encoded  # 20 retain pairs: the first 4 batches of 5 are one pass, each pair once


def test_shared_tokens_are_grpo_compares():
    """ceu/p_shared_mean's tokens (t < divergence index) = grpo_compare's shared_negative_tokens."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (8, 6), generator=g)  # 3 symbols: many shared prefixes
    ids[1, :3] = ids[0, :3]
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    advantages = torch.tensor([1.0, -1, -1, 1, -1, 1, -0.5, 0.5])
    prompt = torch.tensor([[5, 6]] * 4 + [[7, 8]] * 4)
    shared = shared_negative_tokens(prompt, torch.ones_like(prompt), ids, mask, advantages)
    divergence = divergence_from_positives(ids, mask, advantages.unsqueeze(1), 4)
    ours = (advantages.unsqueeze(1) < 0) & (torch.arange(6) < divergence.reshape(-1, 1)) & mask.bool()
    assert torch.equal(shared, ours) and shared.any()


def test_rl_objective_names_and_checks():
    assert rl_objective("grpo") == ("pg", "") and rl_objective("ceu_prefix_kl") == ("ceu_prefix", "kl")
    assert rl_objective("ceu_min_retain") == ("ceu_min", "retain") and rl_objective("npo") is None
    assert len(RL_OBJECTIVES) == 12
    # the siblings' RL negatives must not take the offline objectives' names (wga, satimp stay offline)
    assert rl_objective("wga") is None and rl_objective("satimp") is None
    assert rl_objective("rl_wga_retain") == ("wga", "retain") and rl_objective("rl_satimp") == ("satimp", "")
    with pytest.raises(ValueError, match="rl_generations"):
        MiniTofuConfig(rl_generations=1)
    with pytest.raises(ValueError, match="rl_eval_points"):
        MiniTofuConfig(rl_eval_points=0)
    with pytest.raises(ValueError, match="objectives: unknown"):
        MiniTofuConfig(objectives=("grpo_klx",))
