"""Which `ceu_weight` suppresses the rejected answer, to first order (DERIVATIONS.md Sec. 9.3).

Sec. 9's per-token analysis says CE-U pushes the rejected answer's own tokens down whatever gamma > 0; what can still
raise the rejected answer is the chosen side's pull reaching it through shared parameters (a chosen and a rejected
answer to the same question are similar text). CE-U-DPO's gradient is linear in gamma, g(gamma) = g_0 + gamma g_1
(g_0: DPO's chosen side alone, g_1: the CE-U term per unit gamma), so one step of gradient descent changes the
batch's mean rejected log-prob D_l by -eta grad D_l . g(gamma) = -eta (s_0 + gamma s_1) to first order:

    D_l falls  iff  gamma > gamma* = -s_0 / s_1   (when s_0 < 0 < s_1; every gamma >= 0 when s_0 >= 0).

Adam's first step is -eta sign(g) instead (its moments start at the first gradient), which is not linear in gamma:
`adam_threshold` scans gamma for the sign of -grad D_l . sign(g(gamma)). Both are statements about the first step
from the starting model, measured here, not about the whole run.
"""

from __future__ import annotations

import numpy as np
import torch

from ceu_rl import CEUDPOConfig, CEUDPOTrainer


def _flat_grad(loss, params) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def first_step_gradients(model_path: str, pairs, objective: str = "ceu_full", beta: float = 0.1,
                         output_dir: str = "/tmp/dpo_suppression") -> dict[str, torch.Tensor]:
    """On one batch holding every pair, at the starting model (policy = reference): g_0 (gamma = 0), g_1 (the CE-U
    term per unit gamma), g_dpo (TRL's DPO), and grad D_w, grad D_l (mean summed chosen / rejected log-prob), all
    flattened over the parameters, float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = CEUDPOConfig(output_dir=output_dir, use_cpu=True, bf16=False, report_to=[], beta=beta, loss_type="ceu",
                        rejected_objective=objective, per_device_train_batch_size=len(pairs),
                        gradient_checkpointing=False, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = CEUDPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args, train_dataset=pairs,
                            processing_class=tokenizer)
    model = trainer.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    out = {}
    for name, gamma in (("g_0", 0.0), ("g_at_1", 1.0)):
        trainer.args.ceu_weight = gamma
        out[name] = _flat_grad(trainer.compute_loss(model, batch), params)
    out["g_1"] = out.pop("g_at_1") - out["g_0"]
    trainer._is_ceu = False  # the same trainer and batch through TRL's own sigmoid loss: DPO
    out["g_dpo"] = _flat_grad(trainer.compute_loss(model, batch), params)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token_logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    sums = (token_logps * batch["completion_mask"][:, 1:]).sum(1)
    n = sums.size(0) // 2
    out["grad_d_chosen"] = _flat_grad(sums[:n].mean(), params)
    out["grad_d_rejected"] = _flat_grad(sums[n:].mean(), params)
    return out


def sgd_threshold(grads: dict) -> dict:
    """First-order change of D_l and D_w per unit step under gradient descent, as s_0 + gamma s_1, and gamma*."""
    s0 = float(grads["grad_d_rejected"] @ grads["g_0"])
    s1 = float(grads["grad_d_rejected"] @ grads["g_1"])
    c0 = float(grads["grad_d_chosen"] @ grads["g_0"])
    c1 = float(grads["grad_d_chosen"] @ grads["g_1"])
    # dD = -eta grad D . g: report the change per unit eta
    star = 0.0 if s0 >= 0 else (-s0 / s1 if s1 > 0 else float("inf"))
    return {"rejected_change_gamma0": -s0, "rejected_change_per_gamma": -s1, "chosen_change_gamma0": -c0,
            "chosen_change_per_gamma": -c1, "gamma_star_sgd": star,
            "dpo_rejected_change": -float(grads["grad_d_rejected"] @ grads["g_dpo"]),
            "dpo_chosen_change": -float(grads["grad_d_chosen"] @ grads["g_dpo"])}


def adam_threshold(grads: dict, gammas=None) -> dict:
    """Adam's first step -eta sign(g): the change of D_l and D_w per unit eta over a gamma grid, and the smallest
    grid gamma from which D_l falls (None if it never does on the grid)."""
    gammas = np.geomspace(1e-2, 1e3, 61) if gammas is None else np.asarray(gammas, dtype=float)
    rejected, chosen = [], []
    for gamma in gammas:
        step = -torch.sign(grads["g_0"] + float(gamma) * grads["g_1"])
        rejected.append(float(grads["grad_d_rejected"] @ step))
        chosen.append(float(grads["grad_d_chosen"] @ step))
    falls = [g for g, r in zip(gammas, rejected) if r < 0]
    dpo_step = -torch.sign(grads["g_dpo"])
    return {"gammas": gammas.tolist(), "rejected_change": rejected, "chosen_change": chosen,
            "gamma_star_adam": float(falls[0]) if falls else None,
            "dpo_rejected_change": float(grads["grad_d_rejected"] @ dpo_step),
            "dpo_chosen_change": float(grads["grad_d_chosen"] @ dpo_step)}


def main(argv=None):
    """python -m analysis.dpo_suppression --study outputs/dpo_compare [--seeds 0 1 2 3 4] [--out FILE.json]: the
    first-step thresholds on each seed's starting model of the dpo_compare study (same training pairs)."""
    import argparse
    import json
    import sys
    from pathlib import Path

    import datasets
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments.dpo_compare import data as dpo_data
    from experiments.machine import machine_info

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="outputs/dpo_compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--train_pairs", type=int, default=32)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--out", default=None, help="default: <study>/suppression_threshold.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    pairs = dpo_data.preference_pairs(0, args.train_pairs)
    result = {"command": "python -m analysis.dpo_suppression " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(), "per_seed": {}}
    for seed in args.seeds:
        path = str(Path(args.study) / f"seed{seed}" / "tiny" / "warm")
        result["per_seed"][seed] = {}
        for objective in ("ceu_full", "ceu_prefix"):
            grads = first_step_gradients(path, pairs, objective, args.beta, output_dir=str(Path(args.study) / "tmp"))
            adam = adam_threshold(grads)
            result["per_seed"][seed][objective] = {**sgd_threshold(grads), "adam": adam}
            print(f"seed {seed} {objective}: gamma* SGD {result['per_seed'][seed][objective]['gamma_star_sgd']:.3g}, "
                  f"Adam first step {adam['gamma_star_adam']}", flush=True)
    out = Path(args.out or Path(args.study) / "suppression_threshold.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
