"""Pairwise preference objectives: DPO and CE-U-DPO (inputs: summed and per-token log-probs, no logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_same_shape
from .logprob_form import ce_u_loss_from_logprobs


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float = 0.1):
    r"""Per-pair DPO loss -log sigma(beta (D_w - D_l)), D = log pi - log pi_ref summed over the completion.

    Rafailov et al., "Direct Preference Optimization" (NeurIPS 2023). Returns (B,).
    """
    u = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    return -F.logsigmoid(u)


def ceu_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, rejected_token_logps,
                 rejected_entropy, rejected_mask, beta: float = 0.1, ceu_weight: float = 1.0):
    r"""Per-pair CE-U-DPO loss and its two terms:

        L = -log sigma(beta (D_w - sg(D_l)))  +  gamma sg(beta sigma(-u)) sum_t CE-U(rejected token t),

    u = beta (D_w - D_l). The first term's gradient is DPO's chosen part; the second replaces DPO's gradient ascent
    on rejected tokens (beta sigma(-u) grad log pi(rejected)) with CE-U at the same adaptive weight (CE-U paper,
    arXiv 2503.01224, Sec. 5). CE-U per token from the rejected tokens' log-probs and entropies (B, T).

    Returns (loss (B,), dpo_term (B,), ceu_term (B,)).
    """
    check_same_shape("rejected_entropy", rejected_entropy, "rejected_token_logps", rejected_token_logps)
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    dpo_term = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio.detach()))
    weight = (beta * torch.sigmoid(-beta * (chosen_ratio - rejected_ratio))).detach()
    ceu = ce_u_loss_from_logprobs(rejected_token_logps, rejected_entropy.detach(), rejected_mask, reduction="none")
    ceu_term = ceu_weight * weight * ceu.sum(dim=-1)
    return dpo_term + ceu_term, dpo_term, ceu_term
