"""CE-U-DPO's per-token gradient weights on rejected tokens, and DPO-Positive's chosen-side penalty.

Both feed an unchanged TRL DPO loss body through the log-prob seam (`reweighted_logprobs`). Why a prefix variant:
a rejected token that shares its context and its value with the chosen answer (the common prefix of the two
completions after the same prompt) gets DPO's pull beta sigma(-u) (1 - p) from the chosen side and, with CE-U on the
rejected side, a push gamma beta sigma(-u) p: the net push (1 - p) - gamma p drags the shared token to
p* = 1 / (1 + gamma) (1/2 at gamma = 1), lowering the chosen answer's own prefix (analysis/DERIVATIONS.md Sec. 9).
DPO's own push there is (1 - p), which cancels the pull exactly; `ceu_prefix` keeps it on the shared prefix and uses
CE-U only from the first token where the rejected answer leaves the chosen one. `wga` and `satimp` put CE-U's
siblings' weights there instead (WGA's p^beta, SatImp's p^beta1 (1 - p)^beta2, `sibling_losses`), as CE-U-GRPO's
`negative_objective` does: bounded weights that grow with p, for the comparison of which weight helps.
"""

from __future__ import annotations

import torch

from .reweighted_logprobs import ce_u_weight
from .sibling_losses import satimp_weight, wga_weight
from .token_weights import SIBLING_NEGATIVE_OBJECTIVES

# CE-U-DPO's choices for rejected tokens (CEUDPOConfig.rejected_objective): CE-U's weight p / (1 - p) ...
CE_U_REJECTED_OBJECTIVES = ("ceu_full", "ceu_prefix")
# ... or a sibling's ("wga": WGA, arXiv 2502.19301; "satimp": SatImp, arXiv 2505.11953), as CE-U-GRPO's
# `negative_objective`. `ceu_exact_gradient` computes CE-U's gradient, so it applies to the first group only.
SIBLING_REJECTED_OBJECTIVES = SIBLING_NEGATIVE_OBJECTIVES
REJECTED_OBJECTIVES = (*CE_U_REJECTED_OBJECTIVES, *SIBLING_REJECTED_OBJECTIVES)


def shared_prefix_mask(input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    r"""Rejected completion tokens that lie in the common prefix of their pair's chosen and rejected completions.

    TRL's DPO batch layout: rows [chosen_1..chosen_n, rejected_1..rejected_n], each prompt + completion, padded on
    the right, so a pair's completions start at the same position (same prompt). `input_ids` and `completion_mask`
    are the scored positions (B, T) (shifted by one as TRL's log-probs are). Returns (n, T) bool: True at rejected
    position t when, from the start of both completions up to and including t, both rows are completion tokens with
    equal ids (same context, same token). A pair whose completions start at different positions shares nothing.
    """
    if input_ids.dim() != 2 or input_ids.shape != completion_mask.shape or input_ids.size(0) % 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and completion_mask {tuple(completion_mask.shape)} must "
                         "both be (2n, T): n chosen rows, then n rejected rows.")
    chosen_ids, rejected_ids = input_ids.chunk(2, dim=0)
    chosen_mask, rejected_mask = completion_mask.bool().chunk(2, dim=0)
    both = chosen_mask & rejected_mask
    # before the completions (prompt) neither row is a completion token: those positions do not break the prefix
    agree = (both & (chosen_ids == rejected_ids)) | (~chosen_mask & ~rejected_mask)
    return agree.long().cumprod(dim=-1).bool() & both


def rejected_token_weight(objective: str, rejected_logps: torch.Tensor, rejected_mask: torch.Tensor,
                          ceu_weight: float, shared: torch.Tensor | None = None, wga_beta: float = 1.0,
                          satimp_beta1: float = 5.0, satimp_beta2: float = 1.0) -> torch.Tensor:
    r"""Gradient weight w per rejected token (no gradient; 1 outside `rejected_mask`): the token's gradient in TRL's
    DPO loss body becomes w grad log pi (p = pi(token), gamma = ceu_weight).

        "ceu_full"    w = gamma p / (1 - p) on every rejected completion token (CE-U, times gamma)
        "ceu_prefix"  w = 1 (DPO's gradient, cancelled by the chosen side's) on `shared` tokens, gamma p / (1 - p)
                      from the first token where the rejected answer leaves the chosen one
        "wga"         w = gamma p^wga_beta on every rejected completion token (`wga_weight`)
        "satimp"      w = gamma p^satimp_beta1 (1 - p)^satimp_beta2 on every rejected completion token
                      (`satimp_weight`)

    `shared`: `shared_prefix_mask` (needed for "ceu_prefix").
    """
    if objective not in REJECTED_OBJECTIVES:
        raise ValueError(f"rejected_objective={objective!r}: use one of {REJECTED_OBJECTIVES}.")
    ones = torch.ones_like(rejected_logps)
    if objective == "wga":
        own = wga_weight(rejected_logps, wga_beta)
    elif objective == "satimp":
        own = satimp_weight(rejected_logps, satimp_beta1, satimp_beta2)
    else:
        own = ce_u_weight(rejected_logps)
    weight = torch.where(rejected_mask.bool(), ceu_weight * own.to(rejected_logps.dtype), ones)
    if objective == "ceu_prefix":
        if shared is None:
            raise ValueError("rejected_objective='ceu_prefix' needs the shared-prefix mask (shared_prefix_mask).")
        weight = torch.where(shared.bool(), torch.ones_like(weight), weight)
    return weight


def rejected_ce_u_mask(objective: str, rejected_mask: torch.Tensor, shared: torch.Tensor | None = None):
    """Where `rejected_token_weight` is the objective's own weight rather than DPO's (bool): every rejected completion
    token ("ceu_full", "wga", "satimp"), or for "ceu_prefix" those past the shared prefix. For the CE-U objectives
    these are the tokens `ceu_exact_gradient` computes exactly."""
    if objective not in REJECTED_OBJECTIVES:
        raise ValueError(f"rejected_objective={objective!r}: use one of {REJECTED_OBJECTIVES}.")
    mask = rejected_mask.bool()
    if objective == "ceu_prefix":
        if shared is None:
            raise ValueError("rejected_objective='ceu_prefix' needs the shared-prefix mask (shared_prefix_mask).")
        mask = mask & ~shared.bool()
    return mask


def dpo_positive_penalty(chosen_logps: torch.Tensor, ref_chosen_logps: torch.Tensor, lam: float) -> torch.Tensor:
    r"""DPO-Positive's term (Pal et al. 2024, "Smaug", arXiv 2402.13228, Eq. 3): lam * max(0, log pi_ref(y_w) -
    log pi(y_w)) per pair, subtracted from the chosen log-ratio inside DPO's sigmoid:

        L = -log sigma(beta (D_w - D_l - lam max(0, -D_w))),   D = log pi - log pi_ref (summed over the completion).

    It is zero while the chosen answer is at least as likely as under the reference, and otherwise adds lam times
    DPO's chosen-side pull: DPO alone may lower both answers as long as the margin grows (likelihood displacement).
    """
    return lam * torch.relu(ref_chosen_logps.detach() - chosen_logps)
