"""From job records to the reported numbers: per-seed TOFU summaries, mean / sd / per-seed aggregates, trajectories
and the best operating point (highest forget quality with model utility >= 0.9x the full model's), Markdown."""

from __future__ import annotations

from ceu_rl.tofu.metrics import summary_from_eval_log

from ..stats import fmt, log10_mean_sd, mean_sd

# reported per model: summary key -> column title
METRICS = {"forget_quality": "forget quality", "model_utility": "model utility",
           "forget_truth_ratio": "forget truth ratio", "forget_Q_A_ROUGE": "forget ROUGE-L",
           "forget_Q_A_Prob": "forget prob", "retain_Q_A_ROUGE": "retain ROUGE-L", "retain_Q_A_Prob": "retain prob"}
UTILITY_FRACTION = 0.9


def _pick(summary: dict) -> dict:
    return {k: summary[k] for k in METRICS}


def per_seed_summaries(records: dict) -> dict:
    """{seed: {"full": {0: summary}, "retain": {0: summary}, "<objective>_lr<lr>": {step: summary}}} for every seed
    whose retain model is done (forget quality is measured against that seed's retain model)."""
    out = {}
    for (seed, name), rec in records.items():
        retain = records.get((seed, "retain"))
        if retain is None:
            continue
        ref = retain["eval_log"]
        if "eval_log" in rec:
            points = {0: _pick(summary_from_eval_log(rec["eval_log"], ref))}
        else:
            points = {int(step): _pick(summary_from_eval_log(log, ref)) for step, log in rec["eval_logs"].items()}
        out.setdefault(seed, {})[name] = points
    return out


def run_names(cfg) -> list[tuple[str, str, float]]:
    return [(f"{o}_lr{lr:g}", o, lr) for o in cfg.objectives for lr in cfg.lrs_of(o)]


def _seeds_with(summaries: dict, name: str) -> list[int]:
    return sorted(s for s, runs in summaries.items() if name in runs and "full" in runs)


def final_rows(cfg, summaries: dict) -> dict:
    """name -> {"seeds", metric -> mean_sd} at the final evaluated step (full and retain: their one evaluation)."""
    rows = {}
    for name in ("full", "retain", *(n for n, _, _ in run_names(cfg))):
        seeds = _seeds_with(summaries, name)
        if not seeds:
            continue
        finals = [summaries[s][name][max(summaries[s][name])] for s in seeds]
        rows[name] = {"seeds": seeds, **{m: mean_sd([f[m] for f in finals]) for m in METRICS}}
    return rows


def trajectories(cfg, summaries: dict) -> dict:
    """name -> {"objective", "lr", "seeds", "points": [{"step", "forget_quality", "log10_forget_quality",
    "model_utility", "forget_prob"}]}: step 0 is the seed's full model, before unlearning."""
    out = {}
    for name, objective, lr in run_names(cfg):
        seeds = _seeds_with(summaries, name)
        if not seeds:
            continue
        points = []
        for step in [0, *sorted(summaries[seeds[0]][name])]:
            at = [summaries[s]["full"][0] if step == 0 else summaries[s][name][step] for s in seeds]
            fq = [p["forget_quality"] for p in at]
            points.append({"step": step, "forget_quality": mean_sd(fq), "log10_forget_quality": log10_mean_sd(fq),
                           "model_utility": mean_sd([p["model_utility"] for p in at]),
                           "forget_prob": mean_sd([p["forget_Q_A_Prob"] for p in at])})
        out[name] = {"objective": objective, "lr": lr, "seeds": seeds, "points": points}
    return out


def best_operating_points(cfg, summaries: dict) -> dict:
    """Per objective (over every learning rate and evaluated step) and per objective and learning rate: per seed, the
    highest forget quality among the points whose model utility is >= 0.9x that seed's full model's (the full model
    itself, step 0, always qualifies); mean / sd / per seed of that forget quality and its model utility."""
    groups = {}
    for name, objective, lr in run_names(cfg):
        groups.setdefault(objective, []).append((name, lr))
        groups[name] = [(name, lr)]
    out = {}
    for key, members in groups.items():
        seeds = sorted(set.intersection(*(set(_seeds_with(summaries, n)) for n, _ in members)))
        if not seeds:
            continue
        picks = []
        for s in seeds:
            full = summaries[s]["full"][0]
            candidates = [(full["forget_quality"], full["model_utility"], None, 0)]
            candidates += [(p["forget_quality"], p["model_utility"], lr, step)
                           for n, lr in members for step, p in summaries[s][n].items()]
            ok = [c for c in candidates if c[1] >= UTILITY_FRACTION * full["model_utility"]]
            fq, mu, lr, step = max(ok, key=lambda c: c[0])
            picks.append({"seed": s, "forget_quality": fq, "model_utility": mu, "lr": lr, "step": step})
        out[key] = {"seeds": seeds, "forget_quality": mean_sd([p["forget_quality"] for p in picks]),
                    "model_utility": mean_sd([p["model_utility"] for p in picks]), "per_seed": picks}
    return out


def _fq(stat: dict) -> str:
    return f"{stat['mean']:.3g} ± {stat['sd']:.2g} ({', '.join(f'{v:.2g}' for v in stat['per_seed'])})"


def markdown(cfg, rows: dict, best: dict) -> str:
    lines = ["### Final step (mean ± sd over seeds; forget quality also per seed, in seed order)", "",
             "| model | lr | seeds | " + " | ".join(METRICS.values()) + " |", "|---" * (len(METRICS) + 3) + "|"]
    for name, row in rows.items():
        lr = name.rsplit("_lr", 1)[1] if "_lr" in name else "-"
        model = name.rsplit("_lr", 1)[0]
        cells = [_fq(row["forget_quality"]), *(fmt(row[m]) for m in list(METRICS)[1:])]
        lines.append(f"| {model} | {lr} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"### Best forget quality with model utility >= {UTILITY_FRACTION} x the full model's "
              "(over the evaluated steps; per objective: over every learning rate too)", "",
              "| objective | lr | forget quality | model utility | picked (lr, step) per seed |",
              "|---|---|---|---|---|"]
    for key, b in best.items():
        if "_lr" not in key and len(cfg.learning_rates) == 1:
            continue  # identical to its one learning rate's row
        lr = key.rsplit("_lr", 1)[1] if "_lr" in key else "grid"
        picked = ", ".join("full" if p["lr"] is None else f"({p['lr']:g}, {p['step']})" for p in b["per_seed"])
        lines.append(f"| {key.rsplit('_lr', 1)[0]} | {lr} | {_fq(b['forget_quality'])} | {fmt(b['model_utility'])} "
                     f"| {picked} |")
    return "\n".join(lines)


def attack_rows(records: dict) -> dict:
    """The cheap attack suite's measures (experiments/attacks/report.py) of every attacked final model: name -> measure
    -> mean / sd / per seed (seeds whose retain model was attacked too: R and privleak are against it)."""
    from ..attacks.report import aggregate, measures

    table: dict = {}
    for (seed, name), rec in records.items():
        retain = records.get((seed, "retain"))
        if "attacks" not in rec or retain is None or "attacks" not in retain:
            continue
        final = rec.get("eval_log") or rec["eval_logs"][str(max(int(k) for k in rec["eval_logs"]))]
        table.setdefault(seed, {})[name] = measures({"eval_log": final, "attacks": rec["attacks"]}, retain)
    return aggregate(table, list(dict.fromkeys(n for runs in table.values() for n in runs)))
