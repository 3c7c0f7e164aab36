"""Aggregation of `dpo.py` runs: per method mean, sd and per-seed values, and per seed the README's DPO claims
(docs/dpo_compare) checked on the real model:

- chosen_up: a CE-U-DPO variant raises the chosen answer (training pairs) more than every baseline;
- least_collateral: it changes the unrelated text (TOFU world facts; retain90 beside) least, i.e. its collateral
  change is the highest of all methods;
- rejected_least: it lowers the rejected answer less than every baseline (its rejected change is above theirs);
- full_vs_prefix: `ceu_full` raises the rejected answer (change > 0) and `ceu_prefix` lowers it (change < 0), at the
  same weight;
- pass@1: its held-out pass@1 against DPO's and against the base model's.

The pairs sharing a long token prefix (>= LONG_PREFIX completion tokens, e.g. "The largest of these numbers is 77." vs
"... 79.") are also scored apart (`*_long` / `*_short`: the same runs, the change averaged over that subset), where
docs/dpo_compare says `ceu_prefix` matters.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.stats import mean_sd

BASELINES = ("DPO", "IPO", "APO-zero", "NCA", "DPOP")
KEYS = ("train_chosen_change", "train_rejected_change", "train_reward_margin", "train_reward_accuracy",
        "heldout_chosen_change", "heldout_rejected_change", "heldout_reward_margin", "heldout_reward_accuracy",
        "collateral_world_facts", "collateral_retain90", "pass@1", "pass@1_delta", "pass@1_mul", "pass@1_max",
        "train_seconds", "run_seconds",
        *[f"{split}_{side}_change_{part}" for split in ("train", "heldout") for side in ("chosen", "rejected")
          for part in ("long", "short")])
LONG_PREFIX = 5


def subset_changes(before: dict, after: dict, shared: dict, threshold: int = LONG_PREFIX) -> dict:
    """Mean change of the chosen and rejected log-prob over the pairs sharing >= `threshold` completion tokens
    ("long") and the others ("short"); `shared[split]` lists the shared tokens per pair (aligned with the scores)."""
    out = {}
    for split, lengths in shared.items():
        for side in ("chosen", "rejected"):
            diffs = [a - b for a, b in zip(after[f"{split}_{side}"], before[f"{split}_{side}"])]
            for part, keep in (("long", lambda k: k >= threshold), ("short", lambda k: k < threshold)):
                chosen = [d for d, k in zip(diffs, lengths) if keep(k)]
                if chosen:
                    out[f"{split}_{side}_change_{part}"] = sum(chosen) / len(chosen)
    return out


def derived(row: dict, base: dict, shared: dict | None = None) -> dict:
    out = {k: row[k] for k in KEYS if k in row}
    out["pass@1_delta"] = row["pass@1"] - base["pass@1"]
    if shared is not None and "scores_after" in row:
        out.update(subset_changes(base["scores"], row["scores_after"], shared))
    return out


def cells_by_seed(rows: list[dict], base: dict, shared: dict | None = None) -> dict:
    """{seed: {method: derived row}}."""
    cells = {}
    for r in rows:
        cells.setdefault(r["seed"], {})[r["method"]] = derived(r, base, shared)
    return cells


def summarize(cells: dict, methods: list[str]) -> list[dict]:
    table = []
    for m in methods:
        seeds = sorted(s for s in cells if m in cells[s])
        if seeds:
            table.append({"method": m, "seeds": seeds,
                          **{k: mean_sd([cells[s][m][k] for s in seeds]) for k in KEYS if k in cells[seeds[0]][m]}})
    return table


def beats(by_method: dict, method: str, others, key: str) -> bool | None:
    """`method`'s `key` strictly above every present method of `others` (None when `method` or all others lack it)."""
    rivals = [by_method[o][key] for o in others if o in by_method and o != method]
    if method not in by_method or not rivals:
        return None
    return all(by_method[method][key] > v for v in rivals)


def _counterpart(method: str) -> str | None:
    if " full " in method:
        return method.replace(" full ", " prefix ")
    return None


def answers(cells: dict, methods: list[str]) -> dict:
    """Per CE-U variant and claim, the per-seed booleans (seeds in ascending order) and the values compared."""
    ceu = [m for m in methods if m.startswith("CE-U-DPO")]
    baselines = [m for m in methods if m in BASELINES]
    out = {}
    for m in ceu:
        a = {"seeds": [], "chosen_up": [], "least_collateral": [], "least_collateral_retain90": [],
             "rejected_least": [], "pass@1_above_DPO": [], "pass@1_above_base": []}
        for s in sorted(cells):
            by = cells[s]
            if m not in by:
                continue
            a["seeds"].append(s)
            a["chosen_up"].append(beats(by, m, baselines, "train_chosen_change"))
            a["least_collateral"].append(beats(by, m, methods, "collateral_world_facts"))
            a["least_collateral_retain90"].append(beats(by, m, methods, "collateral_retain90"))
            a["rejected_least"].append(beats(by, m, baselines, "train_rejected_change"))
            a["pass@1_above_DPO"].append(by[m]["pass@1"] > by["DPO"]["pass@1"] if "DPO" in by else None)
            a["pass@1_above_base"].append(by[m]["pass@1_delta"] > 0)
        out[m] = a
    for m in ceu:
        other = _counterpart(m)
        if other is None or other not in methods:
            continue
        seeds = [s for s in sorted(cells) if m in cells[s] and other in cells[s]]
        out[f"{m} vs {other}"] = {
            "seeds": seeds,
            "full_raises_rejected": [cells[s][m]["train_rejected_change"] > 0 for s in seeds],
            "prefix_lowers_rejected": [cells[s][other]["train_rejected_change"] < 0 for s in seeds],
            "prefix_below_full": [cells[s][other]["train_rejected_change"] < cells[s][m]["train_rejected_change"]
                                  for s in seeds],
            "full_rejected": [cells[s][m]["train_rejected_change"] for s in seeds],
            "prefix_rejected": [cells[s][other]["train_rejected_change"] for s in seeds]}
        if all("train_rejected_change_long" in cells[s][k] for s in seeds for k in (m, other)):
            long_full = [cells[s][m]["train_rejected_change_long"] for s in seeds]
            long_prefix = [cells[s][other]["train_rejected_change_long"] for s in seeds]
            out[f"{m} vs {other}"].update(
                full_rejected_long=long_full, prefix_rejected_long=long_prefix,
                prefix_below_full_long=[b < a for a, b in zip(long_full, long_prefix)],
                full_raises_rejected_long=[a > 0 for a in long_full],
                prefix_lowers_rejected_long=[b < 0 for b in long_prefix])
    return out


def _cell(stat: dict, spec: str) -> str:
    per = ", ".join(f"{v:{spec}}" for v in stat["per_seed"])
    return f"{stat['mean']:{spec}} ± {stat['sd']:{spec.lstrip('+')}} ({per})"


COLUMNS = (("train_chosen_change", "chosen Δ (train)", "+.2f"), ("train_rejected_change", "rejected Δ (train)", "+.2f"),
           ("train_reward_accuracy", "reward acc (train)", ".2f"),
           ("heldout_chosen_change", "chosen Δ (held-out)", "+.2f"),
           ("heldout_rejected_change", "rejected Δ (held-out)", "+.2f"),
           ("heldout_reward_accuracy", "reward acc (held-out)", ".2f"),
           ("pass@1", "pass@1", ".3f"), ("pass@1_delta", "pass@1 − base", "+.3f"),
           ("collateral_world_facts", "collateral (world facts)", "+.3f"),
           ("collateral_retain90", "collateral (retain90)", "+.2f"), ("run_seconds", "run s", ".0f"))


def markdown(table: list[dict], ans: dict, base: dict, pairs_stats: dict, meta: dict) -> str:
    lines = ["# DPO on SmolLM2-135M-Instruct with on-policy pairs: results", "",
             f"Command: `{meta['command']}`", "",
             "Log-prob changes are summed over the answer tokens (nats), mean over pairs; collateral is the mean "
             "change of the summed answer log-prob of unrelated questions. Cells: mean ± sd (per seed).", "",
             f"Base model: held-out pass@1 {base['pass@1']:.3f} (mul {base['pass@1_mul']:.3f}, "
             f"max {base['pass@1_max']:.3f}), 32 prompts x 8 samples.", ""]
    for split in ("train", "heldout"):
        st = pairs_stats.get(f"{split}_stats")
        if st:
            per = ", ".join(f"{t}: {v['pairs']}/{v['prompts']}" for t, v in st["per_task"].items())
            lines.append(f"- {split} pairs: {st['pairs']} ({per} prompts yielded a pair); mean shared prefix "
                         f"{st['mean_shared_prefix_tokens']:.2f} tokens of {st['mean_rejected_tokens']:.2f} rejected "
                         f"({st['rejected_tokens_shared']:.2f} of rejected tokens), first token shared in "
                         f"{st['pairs_sharing_first_token']:.2f} of pairs")
    lines += ["", "| method | " + " | ".join(c[1] for c in COLUMNS) + " |",
              "|---|" + "---|" * len(COLUMNS)]
    for row in table:
        lines.append(f"| {row['method']} | " + " | ".join(_cell(row[k], spec) if k in row else "" for k, _, spec
                                                          in COLUMNS) + " |")
    lines += ["", "## Per-seed answers", "", "| CE-U variant | seeds | " + " | ".join(
        ("chosen_up", "least_collateral", "least_collateral_retain90", "rejected_least", "pass@1_above_DPO",
         "pass@1_above_base")) + " |", "|---|---|" + "---|" * 6]
    yn = lambda v: "yes" if v else ("n/a" if v is None else "no")  # noqa: E731
    for m, a in ans.items():
        if "chosen_up" in a:
            lines.append(f"| {m} | {a['seeds']} | " + " | ".join(
                "/".join(yn(v) for v in a[k]) for k in ("chosen_up", "least_collateral", "least_collateral_retain90",
                                                        "rejected_least", "pass@1_above_DPO",
                                                        "pass@1_above_base")) + " |")
    def full_vs_prefix(suffix: str) -> list[str]:  # all training pairs (""), or the long-prefix ones ("_long")
        rows = ["| full vs prefix | full raises rejected | prefix lowers rejected | prefix below full | "
                "rejected Δ full | rejected Δ prefix |", "|---|---|---|---|---|---|"]
        for m, a in ans.items():
            if f"full_rejected{suffix}" in a:
                rows.append(f"| {m} | " + " | ".join("/".join(yn(v) for v in a[k + suffix]) for k in (
                    "full_raises_rejected", "prefix_lowers_rejected", "prefix_below_full")) + " | "
                    + ", ".join(f"{v:+.2f}" for v in a[f"full_rejected{suffix}"]) + " | "
                    + ", ".join(f"{v:+.2f}" for v in a[f"prefix_rejected{suffix}"]) + " |")
        return rows

    lines += ["", *full_vs_prefix("")]
    if any("full_rejected_long" in a for a in ans.values()):
        lines += ["", f"Pairs sharing >= {LONG_PREFIX} completion tokens (training pairs; same runs):", "",
                  *full_vs_prefix("_long")]
    if any("train_rejected_change_long" in row for row in table):
        lines += ["", f"Log-prob changes split by the pair's shared prefix (long: >= {LONG_PREFIX} tokens):", "", "| method | " + " | ".join(f"{s} {side} Δ {part}" for s in ("train", "heldout")
                                                  for side in ("chosen", "rejected") for part in ("long", "short"))
                  + " |", "|---|" + "---|" * 8]
        for row in table:
            lines.append(f"| {row['method']} | " + " | ".join(
                _cell(row[k], "+.2f") if k in row else "" for k in (
                    f"{s}_{side}_change_{part}" for s in ("train", "heldout") for side in ("chosen", "rejected")
                    for part in ("long", "short"))) + " |")
    return "\n".join(lines) + "\n"


def shared_lengths(model_path, pairs: dict, base: dict) -> dict | None:
    """Shared completion tokens per scored pair (training pairs cut to those trained on, as the scores are)."""
    if not model_path:
        return None
    from transformers import AutoTokenizer

    from experiments.real_rl.dpo import common_prefix_length, completion_ids

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    out = {}
    for split in ("train", "heldout"):
        rows = pairs[split][:len(base["scores"][f"{split}_chosen"])]
        out[split] = [common_prefix_length(completion_ids(tokenizer, p["prompt"], p["chosen"])[1],
                                           completion_ids(tokenizer, p["prompt"], p["rejected"])[1]) for p in rows]
    return out


def write_report(out: Path, paths: list[Path], methods: list[str], command: str, settings: dict,
                 docs: Path | None = None) -> dict:
    from experiments.machine import machine_info

    base = json.loads((out / "base.json").read_text())
    pairs = json.loads((out / "pairs.json").read_text())
    pairs_stats = {k: v for k, v in pairs.items() if k.endswith("_stats") or k.endswith("_accuracy")
                   or k == "settings"}
    rows = [json.loads(p.read_text()) for p in paths]
    shared = shared_lengths(settings.get("model"), pairs, base)
    cells = cells_by_seed(rows, base, shared)
    table = summarize(cells, methods)
    ans = answers(cells, methods)
    meta = {"command": command, "machine": machine_info(torch_threads=1),
            "settings": {k: v for k, v in settings.items() if k not in ("aggregate_only", "worker", "docs")}}
    if shared:
        meta["long_prefix"] = {"threshold_tokens": LONG_PREFIX, **{
            f"{split}_pairs_long": sum(k >= LONG_PREFIX for k in v) for split, v in shared.items()},
            **{f"{split}_pairs": len(v) for split, v in shared.items()}}
    result = {**meta, "pairs": pairs_stats,
              "base": {k: base[k] for k in ("pass@1", "pass@1_mul", "pass@1_max", "correct_counts", "seconds")},
              "table": table, "answers": ans,
              "per_seed": {str(s): cells[s] for s in sorted(cells)}}
    text = markdown(table, ans, result["base"], pairs_stats, meta)
    for folder in [out] + ([docs] if docs else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(result, indent=1))
        (folder / "results.md").write_text(text)
    print(text)
    return result
