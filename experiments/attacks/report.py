"""From the attack study's job records to per-seed measures, mean / sd, the claims re-judged per seed, and files.

Every measure is "how much of the forget set the model still gives away" (lower = more forgotten): forget prob
(teacher-forced p of the forget answers, length-normalised as TOFU's Q_A_Prob) and greedy ROUGE-L recall before the
attacks, after relearning (all forget questions; or half of them, measured on the held-out half) and after
quantization; leak@k (ROUGE-L recall >= 0.5 proxy) and the expected max ROUGE-L recall over k samples; beside them
the privacy metrics of open-unlearning's TOFU evaluation (privleak against the retain model, MIA AUCs, extraction
strength, exact memorization) and model utility.
"""

from __future__ import annotations

import json
from pathlib import Path

from ceu_rl.tofu.attacks import relearn_robustness
from ceu_rl.tofu.metrics import summary_from_eval_log

from ..stats import mean_sd
from . import plots
from .config import LEAK_THRESHOLD


# claims of the README and study pages, as (variant, baseline): does the variant give away less, per seed?
CLAIMS = (("ceu_full_retain", "grpo_retain"), ("ceu_prefix_retain", "grpo_retain"), ("ceu_full_kl", "grpo_kl"),
          ("ceu_full", "grpo"), ("ceu_full_retain", "npo"), ("ceu_full_retain", "idk_dpo"),
          ("ceu_full_retain", "ce_u_retain"), ("ce_u_retain", "npo"), ("ce_u_retain", "simnpo"),
          ("ce_u_idk_dpo", "idk_dpo"),
          # issue 25: does SAM (at the plain form's operating point) make forgetting survive the attacks?
          ("npo+sam", "npo"), ("ce_u_retain+sam", "ce_u_retain"), ("grad_diff+sam", "grad_diff"),
          ("grpo_retain+sam", "grpo_retain"), ("ceu_full_retain+sam", "ceu_full_retain"),
          ("ce_u_retain+sam", "npo+sam"), ("ceu_full_retain+sam", "npo+sam"),
          ("npo+adv", "npo"), ("ce_u_retain+adv", "ce_u_retain"), ("grad_diff+adv", "grad_diff"),
          ("ce_u_retain+adv", "npo+adv"), ("satimp+sam", "satimp"), ("satimp+adv", "satimp"),
          ("npo+wa", "npo"), ("ce_u_retain+wa", "ce_u_retain"), ("grad_diff+wa", "grad_diff"), ("satimp+wa", "satimp"),
          # issue 26: CE-U among its siblings (offline at matched utility; as the RL negative with the retain anchor)
          ("ce_u_retain", "wga"), ("ce_u_retain", "satimp"), ("ce_u", "undial"), ("ce_u_retain", "rmu"),
          ("ceu_full_retain", "rl_wga_retain"), ("ceu_full_retain", "rl_satimp_retain"),
          ("rl_wga_retain", "grpo_retain"), ("rl_satimp_retain", "grpo_retain"))


def measures(record: dict, retain: dict) -> dict:
    """One model's measures (retain: the same seed's retain-model record, for forget quality, privleak and R)."""
    a, ra = record["attacks"], retain["attacks"]
    summary = summary_from_eval_log(record["eval_log"], retain["eval_log"])
    out = {"forget prob": a["before"]["forget_Q_A_Prob"], "forget ROUGE": a["before"]["forget_Q_A_ROUGE"],
           "model utility": summary["model_utility"], "forget quality": summary["forget_quality"]}
    for key in ("privleak", "mia_min_k", "mia_loss", "extraction_strength", "exact_memorization"):
        if key in summary:
            out[key] = summary[key]
    for lr, r in a["relearn"].items():
        if lr in ("before", "heldout_idx"):
            continue
        if "all" in r:  # OpenUnlearning's protocol (not in the main job's cheap form)
            out[f"relearn {lr}: forget prob"] = r["all"]["forget_Q_A_Prob"]
            out[f"relearn {lr}: R (prob)"] = relearn_robustness(
                a["before"]["forget_Q_A_Prob"], r["all"]["forget_Q_A_Prob"], ra["before"]["forget_Q_A_Prob"],
                ra["relearn"][lr]["all"]["forget_Q_A_Prob"])
        out[f"relearn {lr}: held-out prob"] = r["heldout"]["forget_Q_A_Prob"]
        out[f"relearn {lr}: held-out ROUGE"] = r["heldout"]["forget_Q_A_ROUGE"]
        if "heldout_leak" in r:  # leak@k on the held-out questions, sampled from the relearned model
            leak = r["heldout_leak"]["question"]
            out[f"relearn {lr}: held-out leak@{leak['ks'][-1]}"] = leak["leak_at_k"][LEAK_THRESHOLD][-1]
            out[f"relearn {lr}: held-out E max ROUGE@{leak['ks'][-1]}"] = leak["expected_max_rougeL_recall"][-1]
        out[f"relearn {lr}: held-out R (prob)"] = relearn_robustness(
            a["relearn"]["before"]["heldout"]["forget_Q_A_Prob"], r["heldout"]["forget_Q_A_Prob"],
            ra["relearn"]["before"]["heldout"]["forget_Q_A_Prob"], ra["relearn"][lr]["heldout"]["forget_Q_A_Prob"])
    for bits, q in a["quantize"].items():
        out[f"{bits}: forget prob"] = q["forget_Q_A_Prob"]
        out[f"{bits}: forget ROUGE"] = q["forget_Q_A_ROUGE"]
    for key, name in (("question", ""), ("paraphrased_question", " (paraphrased)")):
        if key not in a["leak"]:
            continue
        leak = a["leak"][key]
        for k, v in zip(leak["ks"], leak["leak_at_k"][LEAK_THRESHOLD]):
            if k in (1, leak["ks"][-1]):
                out[f"leak@{k}{name}"] = v
        out[f"E max ROUGE@{leak['ks'][-1]}{name}"] = leak["expected_max_rougeL_recall"][-1]
    return out


def per_seed(records: dict) -> dict:
    """{seed: {name: measures}} for every seed whose retain model is done."""
    out = {}
    for (seed, name), rec in records.items():
        if (seed, "retain") in records:
            out.setdefault(seed, {})[name] = measures(rec, records[(seed, "retain")])
    return out


def aggregate(table: dict, names) -> dict:
    """name -> measure -> mean / sd / per seed, over the seeds that have the name."""
    rows = {}
    for name in names:
        seeds = sorted(s for s in table if name in table[s])
        if seeds:
            keys = table[seeds[0]][name]
            rows[name] = {"seeds": seeds, **{k: mean_sd([table[s][name][k] for s in seeds]) for k in keys}}
    return rows


def claims(table: dict, keys) -> dict:
    """(variant vs baseline) -> measure -> per seed "Y" (variant lower), "=" (equal) or "n"; and whether every seed
    says Y. Measures where lower = more forgotten only."""
    out = {}
    for variant, base in CLAIMS:
        seeds = sorted(s for s in table if variant in table[s] and base in table[s])
        if not seeds:
            continue
        verdicts = {}
        for k in keys:
            marks = "".join("Y" if table[s][variant][k] < table[s][base][k] else
                            "=" if table[s][variant][k] == table[s][base][k] else "n" for s in seeds)
            verdicts[k] = {"per_seed": marks, "every_seed": set(marks) == {"Y"}}
        out[f"{variant} vs {base}"] = {"seeds": seeds, **verdicts}
    return out


def _num(v: float) -> str:
    return f"{v:.2g}" if v != 0 and abs(v) < 0.01 else f"{v:.2f}"


def _cell(stat: dict) -> str:
    return f"{_num(stat['mean'])} ({', '.join(_num(v) for v in stat['per_seed'])})"


def _groups(columns) -> list[tuple[str, list[str]]]:
    """The measures in three tables a reader can take in: before the attacks, relearning, sampling + quantization."""
    relearn = [c for c in columns if c.startswith("relearn")]
    other = [c for c in columns if c.startswith(("leak", "E max", "4bit", "8bit"))]
    before = [c for c in columns if c not in relearn and c not in other]
    return [(t, cs) for t, cs in (("before the attacks, with open-unlearning's privacy metrics", before),
                                  ("after relearning", relearn), ("under sampling and quantization", other)) if cs]


# the condensed table that opens results.md (the rest follow in three tables)
KEY_COLUMNS = ("forget prob", "model utility", "relearn 0.001: forget prob", "relearn 0.001: R (prob)",
               "relearn 0.001: held-out prob", "leak@32", "E max ROUGE@32", "4bit: forget prob", "privleak")


def markdown(rows: dict, claim_rows: dict, columns) -> str:
    key = [c for c in KEY_COLUMNS if c in columns]
    lines = ["### At a glance: mean (per seed, in seed order)", "", "| model | " + " | ".join(key) + " |",
             "|---" * (len(key) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(row[c]) if c in row else "-" for c in key) + " |"
              for name, row in rows.items()] + [""]
    for title, cols in _groups(columns):
        lines += [f"### Per model, {title}: mean (per seed, in seed order)", "",
                  "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row[c]) if c in row else "-" for c in cols) + " |")
        lines.append("")
    if not claim_rows:
        return "\n".join(lines)
    keys = sorted({k for c in claim_rows.values() for k in c if k != "seeds"}, key=list(columns).index)
    lines += ["### Claims re-judged: does the variant give away less than the baseline? (Y per seed)", "",
              "| variant vs baseline | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for pair, c in claim_rows.items():
        lines.append(f"| {pair} | " + " | ".join(
            c[k]["per_seed"] + (" **all**" if c[k]["every_seed"] else "") for k in keys) + " |")
    return "\n".join(lines)


def leak_curves(records: dict) -> dict:
    """{seed: {name: {question key: {"ks", "leak_at_k"}}}} at LEAK_THRESHOLD: what plot_leak draws, kept in
    results.json so that a later run merging this one (`prior`) can draw them too."""
    out = {}
    for (seed, name), rec in records.items():
        for key in ("question", "paraphrased_question"):
            if key not in rec["attacks"]["leak"]:
                continue
            leak = rec["attacks"]["leak"][key]
            out.setdefault(str(seed), {}).setdefault(name, {})[key] = {"ks": leak["ks"],
                                                                        "leak_at_k": leak["leak_at_k"][LEAK_THRESHOLD]}
    return out


def merge_prior(table: dict, curves: dict, path: str) -> dict:
    """Fill `table` ({seed: {name: measures}}) and `curves` with the (seed, model) pairs of a previous run's
    results.json that this run did not compute; returns what was taken, and from which run."""
    prior = json.loads(Path(path).read_text())
    taken = {}
    for seed, models in prior["per_seed"].items():
        for name, m in models.items():
            if name not in table.get(int(seed), {}):
                table.setdefault(int(seed), {})[name] = m
                taken.setdefault(seed, []).append(name)
                if name in prior.get("leak_curves", {}).get(seed, {}):
                    curves.setdefault(seed, {})[name] = prior["leak_curves"][seed][name]
    return {"path": str(path), "command": prior["command"], "machine": prior["machine"],
            "objectives": prior["config"]["objectives"], "models": taken,
            "merged_from": prior.get("merged_from")}


def write(cfg, records: dict, points: dict, out: Path, meta: dict) -> dict:
    table, curves = per_seed(records), leak_curves(records)
    prior = merge_prior(table, curves, cfg.prior) if cfg.prior else None
    table = dict(sorted(table.items()))
    names = list(dict.fromkeys(["full", "retain", *(prior["objectives"] if prior else ()), *cfg.objectives]))
    rows = aggregate(table, names)
    columns = [c for c in next(iter(rows.values())) if c != "seeds"] if rows else []  # measures() order
    # the measures where lower = less given away (not utility, forget quality, R, or the two-sided MIA scores)
    lower_is_less = [c for c in columns if c not in ("model utility", "forget quality", "privleak", "mia_min_k",
                                                     "mia_loss") and not c.endswith("R (prob)")]
    claim_rows = claims(table, lower_is_less)
    picked = {f"seed{s} {o}": {"lr": p["lr"], "step": p["step"]} for (s, o), p in sorted(points.items())}
    cpu = sum(r["cpu_s"] for r in records.values())
    result = {**meta, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "operating_points": picked,
              "total_job_cpu_s": cpu, "merged_from": prior, "rows": rows, "claims": claim_rows,
              "per_seed": {str(s): v for s, v in table.items()}, "leak_curves": curves}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    merged = "" if not prior else (
        f"\nSeeds and models not run by this command are those of `{prior['command']}` "
        f"(machine: {prior['machine']}): " + "; ".join(f"seed {s}: {len(n)} models" for s, n in prior["models"].items())
        + ".")
    footer = (f"\n\nSeeds {sorted(table)}; this command's job CPU time {cpu:.0f} s.\nCommand: `{meta['command']}`\n"
              f"Machine: {meta['machine']}{merged}\n")
    (out / "results.md").write_text(markdown(rows, claim_rows, columns) + footer)
    if rows:
        plots.plot_attacks(rows, cfg, out / "attacks.png")
        plots.plot_leak(curves, names, out / "leak_at_k.png")
    return result
