"""Exact per-token log(1 - p_y) from hidden states and the LM head, without N x V logits and without autograd.

From log p alone (what TRL's fused head returns), 1 - p = -expm1(log p) inherits log p's float32 error, relative
error ~ err(log p) / (1 - p): largest exactly where CE-U's weight p / (1 - p) is largest. Here log(1 - p_y) =
-softplus(z_y - LSE_{k != y}(z)), from the log-sum-exp over the vocabulary without y (the masked LSE of
`ce_u_loss` / `linear_ce_u_loss`), so it is exact in float32 even when p_y rounds to 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._linear_ce_u_function import default_chunk_rows


@torch.no_grad()
def label_log_odds(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor | None = None,
                   temperature: float = 1.0, chunk_size: int | None = None) -> torch.Tensor:
    r"""log(p_y / (1 - p_y)) = z_y - LSE_{k != y}(z) per token, z = (hidden @ weight.T + bias) / temperature.

    Computed in float32 (float64 when hidden and weight are both float64), chunk by chunk over tokens (at most
    `chunk_size` rows of logits at a time), under no_grad. +inf where every other logit is -inf (p_y = 1 exactly),
    -inf where z_y = -inf. Shapes: hidden (..., H), weight (V, H), labels hidden.shape[:-1] with entries in [0, V).
    """
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}: weight must be (vocab, "
                         "hidden) with hidden's last dimension = weight.shape[1].")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"labels {tuple(labels.shape)} must have hidden's leading shape {tuple(hidden.shape[:-1])}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    vocab = weight.shape[0]
    flat_labels = labels.reshape(-1)
    if flat_labels.numel() and (int(flat_labels.min()) < 0 or int(flat_labels.max()) >= vocab):
        raise ValueError(f"labels must lie in [0, {vocab}) (vocab from weight.shape[0]); select valid tokens first.")
    cdtype = torch.float64 if hidden.dtype == weight.dtype == torch.float64 else torch.float32
    w = weight.to(cdtype)
    b = None if bias is None else bias.to(cdtype)
    flat_hidden = hidden.reshape(-1, weight.shape[1])
    out = torch.empty(flat_labels.shape, dtype=cdtype, device=hidden.device)
    rows = chunk_size or default_chunk_rows(vocab)
    for start in range(0, flat_labels.numel(), rows):
        h = flat_hidden[start:start + rows].to(cdtype)
        z = h @ w.T if b is None else torch.addmm(b, h, w.T)
        if temperature != 1.0:
            z.mul_(1.0 / temperature)  # as TRL's fused head: logits * (1 / temperature)
        y = flat_labels[start:start + rows].unsqueeze(1)
        z_label = z.gather(1, y).squeeze(1)
        lse_masked = torch.logsumexp(z.scatter_(1, y, float("-inf")), dim=1)
        out[start:start + rows] = z_label - lse_masked
    return out.view(labels.shape)


def log_one_minus_p(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                    bias: torch.Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = None) -> torch.Tensor:
    r"""log(1 - p_y) = -softplus(z_y - LSE_{k != y}(z)) per token (see `label_log_odds`; no gradient).

    Exact where p_y rounds to 1 in float32 (e.g. -20 at 1 - p_y = 2e-9); -inf only where every other logit is -inf.
    CE-U's weight p / (1 - p) is then `expm1(-log_one_minus_p)`.
    """
    return -F.softplus(label_log_odds(hidden, weight, labels, bias, temperature, chunk_size))
