"""The real-model study's numbers: every metric per seed, run and step (privacy metrics and utility's parts
included), and the per-seed answer to issue 30's claims (a) CE-U-GRPO + retain forgets more than GRPO + retain,
(b) CE-U+retain keeps more utility than GradDiff at matched or better forgetting and (c) CE-U-IdkDPO forgets more
than IdkDPO, at the operating points (utility >= 0.9x the full model's), and the utility parts of the base, full and
retain models (what finetuning costs)."""

from __future__ import annotations

from ceu_rl.tofu.attacks import relearn_robustness
from ceu_rl.tofu.metrics import summary_from_eval_log

from ..mini_tofu.report import UTILITY_FRACTION
from ..stats import mean_sd

PARTS = ("model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "retain_Q_A_Prob",
         "retain_Q_A_ROUGE", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE",
         "privleak", "extraction_strength")


def full_summaries(records: dict) -> dict:
    """{seed: {name: {step: every summary metric}}}, forget quality and privleak against the retain model."""
    out = {}
    for (seed, name), rec in records.items():
        retain = records.get((seed, "retain"))
        if retain is None:
            continue
        logs = {"0": rec["eval_log"]} if "eval_log" in rec else rec["eval_logs"]
        out.setdefault(str(seed), {})[name] = {str(step): summary_from_eval_log(log, retain["eval_log"])
                                               for step, log in logs.items()}
    return out


def points(runs: dict, objective: str) -> list[dict]:
    """Every evaluated (lr, step) point of `objective` in one seed's runs, with its summary."""
    return [{"lr": float(name.rsplit("_lr", 1)[1]), "step": int(step), **s}
            for name, steps in runs.items() if name.rsplit("_lr", 1)[0] == objective for step, s in steps.items()]


def operating_point(runs: dict, objective: str) -> dict | None:
    """The lowest forget prob among the points with utility >= 0.9x the full model's (experiments/attacks/points.py's
    rule); None if no point keeps that much utility."""
    limit = UTILITY_FRACTION * runs["full"]["0"]["model_utility"]
    ok = [p for p in points(runs, objective) if p["model_utility"] >= limit]
    return min(ok, key=lambda p: (p["forget_Q_A_Prob"], p["step"], p["lr"])) if ok else None


def claim_a(runs: dict) -> dict:
    """CE-U-GRPO + retain's operating point forgets more (lower forget prob) than GRPO + retain's; it holds also when
    GRPO + retain has no point at >= 0.9x utility and CE-U-GRPO + retain has one."""
    ceu, grpo = operating_point(runs, "ceu_full_retain"), operating_point(runs, "grpo_retain")
    holds = ceu is not None and (grpo is None or ceu["forget_Q_A_Prob"] < grpo["forget_Q_A_Prob"])
    return {"holds": holds, "ceu_full_retain": ceu and ceu["forget_Q_A_Prob"],
            "grpo_retain": grpo and grpo["forget_Q_A_Prob"]}


def claim_b(runs: dict) -> dict:
    """Per GradDiff point: does some CE-U+retain point forget at least as much (forget prob <=) and keep more
    utility? Holds when that is so for every GradDiff point."""
    ceu, gd = points(runs, "ce_u_retain"), points(runs, "grad_diff")
    rows = [{"grad_diff": (p["lr"], p["step"], p["forget_Q_A_Prob"], p["model_utility"]),
             "dominated_by_ce_u_retain": any(c["forget_Q_A_Prob"] <= p["forget_Q_A_Prob"]
                                             and c["model_utility"] > p["model_utility"] for c in ceu)} for p in gd]
    return {"holds": bool(rows) and bool(ceu) and all(r["dominated_by_ce_u_retain"] for r in rows), "rows": rows}


def claim_c(runs: dict) -> dict:
    """At every shared (lr, step): CE-U-IdkDPO's forget prob below IdkDPO's."""
    idk = {(p["lr"], p["step"]): p for p in points(runs, "idk_dpo")}
    ceu = {(p["lr"], p["step"]): p for p in points(runs, "ce_u_idk_dpo")}
    rows = [{"lr": k[0], "step": k[1], "idk_dpo": idk[k]["forget_Q_A_Prob"], "ce_u_idk_dpo": ceu[k]["forget_Q_A_Prob"]}
            for k in sorted(set(idk) & set(ceu))]
    return {"holds": bool(rows) and all(r["ce_u_idk_dpo"] < r["idk_dpo"] for r in rows), "rows": rows}


def answer(per_seed: dict, objectives) -> dict:
    seeds = sorted(per_seed, key=int)
    out = {"operating_points": {}, "claims": {}, "models": {}}
    for name in ("base", "full", "retain"):
        if all(name in per_seed[s] for s in seeds):
            out["models"][name] = {k: per_seed[seeds[0]][name]["0"][k] for k in PARTS}  # the same in every seed
    for objective in objectives:
        picks = {s: operating_point(per_seed[s], objective) for s in seeds if points(per_seed[s], objective)}
        if picks:
            out["operating_points"][objective] = {
                "per_seed": picks,
                **{k: mean_sd([p[k] for p in picks.values() if p]) for k in ("forget_Q_A_Prob", "model_utility")
                   if any(picks.values())}}
    for key, fn, needs in (("a", claim_a, ("ceu_full_retain", "grpo_retain")),
                           ("b", claim_b, ("ce_u_retain", "grad_diff")), ("c", claim_c, ("idk_dpo", "ce_u_idk_dpo"))):
        if all(o in objectives for o in needs):
            compared = [s for s in seeds if all(points(per_seed[s], o) for o in needs)]  # a cut study: both ran
            per = {s: fn(per_seed[s]) for s in compared}
            out["claims"][key] = {"holds_in_every_seed": len(compared) == len(seeds) and all(v["holds"] for v in
                                                                                              per.values()),
                                  "seeds_compared": compared, "seeds_holding": [s for s, v in per.items() if v["holds"]],
                                  "per_seed": per}
    return out


def markdown(ans: dict) -> str:
    lines = ["## The models before unlearning (utility's parts; forget01's two authors)", "",
             "| model | " + " | ".join(PARTS) + " |", "|---" * (len(PARTS) + 1) + "|"]
    for name, row in ans["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.3g}" for k in PARTS) + " |")
    lines += ["", f"## Operating points (lowest forget prob with utility >= {UTILITY_FRACTION}x the full model's), "
              "per seed", "", "| objective | seed | lr | step | forget prob | forget ROUGE | utility | ra ROUGE | "
              "wf ROUGE | forget quality |", "|---|---|---|---|---|---|---|---|---|---|"]
    for objective, op in ans["operating_points"].items():
        for seed, p in op["per_seed"].items():
            if p is None:
                lines.append(f"| {objective} | {seed} | no point keeps 0.9x utility | | | | | | | |")
                continue
            lines.append(f"| {objective} | {seed} | {p['lr']:g} | {p['step']} | {p['forget_Q_A_Prob']:.3f} | "
                         f"{p['forget_Q_A_ROUGE']:.3f} | {p['model_utility']:.3f} | {p['ra_Q_A_ROUGE']:.3f} | "
                         f"{p['wf_Q_A_ROUGE']:.3f} | {p['forget_quality']:.2g} |")
    names = {"a": "CE-U-GRPO + retain forgets more than GRPO + retain at its operating point",
             "b": "CE-U+retain keeps more utility than GradDiff at matched or better forgetting",
             "c": "CE-U-IdkDPO forgets more (lower forget prob) than IdkDPO at the same lr and step"}
    lines += ["", "## Claims, per seed", ""]
    for key, c in ans["claims"].items():
        verdict = "holds in every seed" if c["holds_in_every_seed"] else \
            f"does NOT hold in every seed (compared in seeds {c['seeds_compared'] or 'none'}; holds in " \
            f"{c['seeds_holding'] or 'none'})"
        lines.append(f"- ({key}) {names[key]}: **{verdict}**.")
    return "\n".join(lines) + "\n"


def relearning(records: dict, shared: dict) -> dict:
    """Per attacked run and seed: forget prob before (the run's final evaluation) and after relearning, and
    OpenUnlearning's R against the retain model's own rise (R >= 0.8 would be forgetting that survives); the full
    and retain models' before / after beside them."""
    if "relearn_retain" not in shared or "retain" not in shared:
        return {}

    def prob(log):
        return log["forget_Q_A_Prob"]["agg_value"]

    ret_before, ret_after = prob(shared["retain"]["eval_log"]), shared["relearn_retain"]["relearn"]["after"]["forget_Q_A_Prob"]
    out = {"relearn_lr": shared["relearn_retain"]["relearn"]["lr"],
           "retain": {"before": ret_before, "after": ret_after}}
    if "relearn_full" in shared:
        out["full"] = {"before": prob(shared["full"]["eval_log"]),
                       "after": shared["relearn_full"]["relearn"]["after"]["forget_Q_A_Prob"]}
    for (seed, name), rec in sorted(records.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        if "relearn" not in rec:
            continue
        before = prob(rec["eval_logs"][str(max(int(k) for k in rec["eval_logs"]))])
        after = rec["relearn"]["after"]["forget_Q_A_Prob"]
        out.setdefault(name, {})[str(seed)] = {"before": before, "after": after,
                                               "R": relearn_robustness(before, after, ret_before, ret_after)}
    return out


def relearning_markdown(rel: dict) -> str:
    if not rel:
        return ""
    lines = ["", f"## Relearning attack (all 40 forget questions, 1 epoch, lr {rel['relearn_lr']:g}): forget prob "
             "before -> after, OpenUnlearning's R (>= 0.8: the forgetting survives)", "",
             "| model | seed | before | after | R |", "|---|---|---|---|---|"]
    for name in ("full", "retain"):
        if name in rel:
            lines.append(f"| {name} | all | {rel[name]['before']:.3f} | {rel[name]['after']:.3f} | |")
    for name, per in rel.items():
        if name in ("full", "retain", "relearn_lr"):
            continue
        for seed, r in per.items():
            lines.append(f"| {name} | {seed} | {r['before']:.3f} | {r['after']:.3f} | {r['R']:.3f} |")
    return "\n".join(lines) + "\n"
