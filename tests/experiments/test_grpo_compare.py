"""experiments/grpo_compare: its shared-token detector against a brute-force reference, and a trivial resumable grid."""

import json

import torch

from experiments.grpo_compare import run as grpo_compare


def _shared_by_brute_force(prompts, completions, advantages):
    """Independent reference: set of (prompt, prefix) pairs of positive completions, looked up per negative token."""
    positive = {(p, tuple(c[: t + 1])) for p, c, a in zip(prompts, completions, advantages) if a > 0
                for t in range(len(c))}
    return [[a < 0 and (p, tuple(c[: t + 1])) in positive for t in range(len(c))]
            for p, c, a in zip(prompts, completions, advantages)]


def test_shared_negative_tokens_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    batch, length = 24, 6
    prompt_ids = torch.randint(3, 5, (batch, 3), generator=gen)  # few distinct prompts: groups with repeats
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[::5, 0] = 0  # left padding changes nothing (masked ids count as the same)
    completion_ids = torch.randint(5, 7, (batch, length), generator=gen)  # 2 tokens: many shared prefixes
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    completion_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    advantages = torch.randn(batch, generator=gen)
    advantages[::7] = 0.0
    got = grpo_compare.shared_negative_tokens(prompt_ids, prompt_mask, completion_ids, completion_mask, advantages)
    prompts = [tuple(i for i, m in zip(p.tolist(), mk.tolist()) if m) for p, mk in zip(prompt_ids, prompt_mask)]
    completions = [c[:n].tolist() for c, n in zip(completion_ids, lengths)]
    want = _shared_by_brute_force(prompts, completions, advantages.tolist())
    assert [row[:n].tolist() for row, n in zip(got, lengths)] == want
    assert not got[completion_mask == 0].any() and 0 < got.sum() < (advantages < 0).sum() * length


def test_grpo_compare_runner_trivial_grid_and_resume(tmp_path):
    objectives = grpo_compare.available_objectives()[:2]  # "pg" and the first CE-U variant the config declares
    argv = ["--out", str(tmp_path), "--tasks", "sort", "--learning_rates", "5e-4", "--objectives", *objectives,
            "--seeds", "0", "--max_steps", "2", "--num_prompts", "8"]
    summary = grpo_compare.main(argv)
    assert objectives[0] == "pg" and summary["runs"] == 2 and summary["machine"]["torch"] == torch.__version__
    assert [(c["objective"], c["seeds"]) for c in summary["table"]] == [(o, [0]) for o in objectives]
    for cell in summary["table"]:
        final = cell["reward_final"]
        assert final["per_seed"] == [final["mean"]] and 0.0 <= final["mean"] <= 1.0
    (decision,) = summary["decisions"]
    assert decision["objective"] == objectives[1] and isinstance(decision["default_ok_every_seed"], bool)
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    shared_p = [h["shared/p_mean"] for r in runs for h in r["history"] if h["shared/p_mean"] is not None]
    assert len(runs) == 2 and all(len(r["history"]) == 2 for r in runs)
    assert shared_p and all(0 < p < 1 for p in shared_p)
    assert (tmp_path / "grpo_compare.png").stat().st_size > 0 and "| sort |" in (tmp_path / "summary.md").read_text()
    run_file = next((tmp_path / "runs").rglob("seed0.json"))
    before = run_file.stat().st_mtime_ns
    assert grpo_compare.main(argv)["runs"] == 2 and run_file.stat().st_mtime_ns == before  # resumed: nothing rerun
