"""From the UNDO study's job records to per-seed measures, mean / sd, the per-seed answers, files and the plot."""

from __future__ import annotations

import json
from pathlib import Path

from ..attacks.report import measures
from ..stats import mean_sd
from .config import UndoStudyConfig, student_name

R_BAR, UTILITY_BAR = 0.8, 0.9  # R >= 0.8 (robust) with >= 0.9x the full model's utility


def _row(m: dict, relearn_lr: str, compute_fraction: float, **extra) -> dict:
    at = f"relearn {relearn_lr}"
    return {"model_utility": m["model utility"], "forget_Q_A_Prob": m["forget prob"],
            "forget_quality": m["forget quality"], "R": m[f"{at}: R (prob)"],
            "relearn_forget_Q_A_Prob": m[f"{at}: forget prob"], "heldout_R": m[f"{at}: held-out R (prob)"],
            "heldout_forget_Q_A_Prob_after": m[f"{at}: held-out prob"],
            # leak@k (ROUGE-L recall >= 0.5) on the held-out half, sampled from the relearned model (when measured)
            **{"heldout_leak_after_relearn": v for k, v in m.items() if k.startswith(f"{at}: held-out leak@")},
            "compute_fraction": compute_fraction, **extra}


def per_seed(cfg: UndoStudyConfig, records: dict) -> dict:
    """{seed: {name: row}} for every seed whose full and retain records are done: "full", "retain", each teacher
    (the plain unlearned model) and each student (config.student_name)."""
    lr = f"{cfg.relearn_lr:g}"
    out = {}
    for seed in cfg.seeds:
        retain, full = records.get((seed, "retain")), records.get((seed, "full"))
        if retain is None or full is None:
            continue
        base = retain["retain_training_flops"]
        table = {"full": _row(measures(full, retain), lr, 0.0),
                 "retain": _row(measures(retain, retain), lr, 1.0)}
        unlearn = {"full": 0}
        for teacher in cfg.teachers:
            rec = records.get((seed, teacher))
            if teacher != "full" and rec is not None:
                unlearn[teacher] = rec["unlearn_flops"]
                table[teacher] = _row(measures(rec, retain), lr, rec["unlearn_flops"] / base, lr=rec["lr"],
                                      step=rec["step"])
            for alpha in cfg.alphas:
                job = records.get((seed, f"students_{teacher}_a{alpha:g}"))
                for name, s in (job or {}).get("students", {}).items():
                    table[name] = _row(measures(s, retain), lr, (unlearn[teacher] + s["distill_flops"]) / base,
                                       teacher=teacher, alpha=alpha, epochs=s["epochs"])
        out[str(seed)] = table
    return out


def aggregate(table: dict) -> dict:
    """name -> measure -> mean / sd / per seed, over the seeds that have the name."""
    names = list(dict.fromkeys(n for rows in table.values() for n in rows))
    out = {}
    for name in names:
        seeds = [s for s in table if name in table[s]]
        keys = [k for k, v in table[seeds[0]][name].items() if isinstance(v, float) and k not in ("alpha", "lr")]
        out[name] = {"seeds": [int(s) for s in seeds], **{k: mean_sd([table[s][name][k] for s in seeds]) for k in keys}}
    return out


def answers(cfg: UndoStudyConfig, table: dict) -> dict:
    """Per seed: (1) the students with R >= 0.8, >= 0.9x the full model's utility and compute_fraction < 1, and the
    best R among students above the utility bar; (2) CE-U+retain (and CE-U-GRPO+retain) vs NPO as teachers at the
    same alpha and length (equal distillation compute): does the CE-U teacher's student have the higher R, the lower
    forget prob after relearning, the higher held-out R?"""
    robust, best, versus = {}, {}, {}
    for seed, rows in table.items():
        bar = UTILITY_BAR * rows["full"]["model_utility"]
        students = {n: r for n, r in rows.items() if n.startswith("undo:")}
        robust[seed] = sorted(n for n, r in students.items() if r["R"] >= R_BAR and r["model_utility"] >= bar
                              and r["compute_fraction"] < 1)
        useful = {n: r for n, r in students.items() if r["model_utility"] >= bar}
        best[seed] = max(((r["R"], n) for n, r in useful.items()), default=(None, None))
    for ceu in ("ce_u_retain", "ceu_full_retain"):
        for alpha in cfg.alphas:
            for epochs in cfg.epochs:
                a, b = student_name(ceu, alpha, epochs), student_name("npo", alpha, epochs)
                seeds = [s for s in table if a in table[s] and b in table[s]]
                if not seeds:
                    continue
                marks = {}
                for key, higher in (("R", True), ("relearn_forget_Q_A_Prob", False), ("heldout_R", True)):
                    marks[key] = "".join(
                        "=" if table[s][a][key] == table[s][b][key] else
                        "Y" if (table[s][a][key] > table[s][b][key]) == higher else "n" for s in seeds)
                versus[f"{a} vs {b}"] = {"seeds": [int(s) for s in seeds], **marks,
                                         "compute_fraction": {"ceu": [table[s][a]["compute_fraction"] for s in seeds],
                                                              "npo": [table[s][b]["compute_fraction"] for s in seeds]}}
    return {"robust_students": robust, "best_R_above_utility_bar": {s: {"R": r, "name": n} for s, (r, n) in
                                                                      best.items()},
            "ceu_vs_npo": versus, "bars": {"R": R_BAR, "utility_fraction_of_full": UTILITY_BAR}}


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def markdown(result: dict) -> str:
    rows, ans = result["rows"], result["answers"]
    lines = ["# UNDO on mini-TOFU: results", "", f"`{result['command']}`; total job CPU "
             f"{result['total_job_cpu_s']:.0f} s; seeds {list(result['per_seed'])}.", "",
             "| model | seeds | utility | forget prob | R (lr 1e-3) | held-out R | forget prob after relearning | "
             "held-out leak@k after relearning | compute fraction |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        leak = _fmt(r["heldout_leak_after_relearn"]) if "heldout_leak_after_relearn" in r else "not measured"
        lines.append(f"| {name} | {len(r['seeds'])} | {_fmt(r['model_utility'])} | {_fmt(r['forget_Q_A_Prob'])} | "
                     f"{_fmt(r['R'])} | {_fmt(r['heldout_R'])} | {_fmt(r['relearn_forget_Q_A_Prob'])} | {leak} | "
                     f"{_fmt(r['compute_fraction'])} |")
    lines += ["", "## Per seed: R, utility, compute fraction", "",
              "| model | " + " | ".join(f"seed {s}" for s in result["per_seed"]) + " |",
              "|---|" + "---|" * len(result["per_seed"])]
    for name in rows:
        cells = [(f"{t[name]['R']:.3f} / {t[name]['model_utility']:.2f} / {t[name]['compute_fraction']:.3f}"
                  if name in t else "-") for t in result["per_seed"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Answers per seed", "",
              f"Students with R >= {R_BAR}, utility >= {UTILITY_BAR}x the full model's and compute fraction < 1:", ""]
    for seed, names in ans["robust_students"].items():
        b = ans["best_R_above_utility_bar"][seed]
        best = "no student above the utility bar" if b["name"] is None else f"best R above the utility bar " \
               f"{b['R']:.3f} ({b['name']})"
        lines.append(f"- seed {seed}: {', '.join(names) if names else 'none'}; {best}")
    lines += ["", "CE-U teachers vs NPO at the same alpha and length (per seed: Y = the CE-U teacher's student is more "
              "robust):", "", "| pair | R higher | forget prob after relearning lower | held-out R higher |",
              "|---|---|---|---|"]
    for pair, v in ans["ceu_vs_npo"].items():
        lines.append(f"| {pair} | {v['R']} | {v['relearn_forget_Q_A_Prob']} | {v['heldout_R']} |")
    return "\n".join(lines) + "\n"


def write(cfg: UndoStudyConfig, records: dict, points: dict, out: Path, meta: dict) -> dict:
    from dataclasses import asdict

    table = per_seed(cfg, records)
    result = {**meta, "config": asdict(cfg),
              "operating_points": {f"seed{s} {o}": {"lr": p["lr"], "step": p["step"]} for (s, o), p in
                                   sorted(points.items())},
              "total_job_cpu_s": sum(r["cpu_s"] for r in records.values()),
              "complete_seeds": [int(s) for s in table if all(
                  (int(s), f"students_{t}_a{a:g}") in records for t in cfg.teachers for a in cfg.alphas
                  if t == "full" or (int(s), t) in points)],
              "compute_count": "training FLOPs in units of N (parameters) x tokens: 2 per non-padding token "
                               "forwarded without gradient, 6 with gradient; compute_fraction = (unlearning run + "
                               "distillation) / the retain model's finetune (6 x 20 epochs x its 200 questions' "
                               "tokens)",
              "rows": aggregate(table) if table else {}, "answers": answers(cfg, table) if table else {},
              "per_seed": table}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    if table:
        (out / "results.md").write_text(markdown(result))
        from .plots import plot

        plot(result, out / "undo.png")
    return result
