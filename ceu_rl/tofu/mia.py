"""Membership-inference attacks of open-unlearning's TOFU evaluation, one short function per attack score.

open-unlearning (Dorna et al., "OpenUnlearning", arXiv 2506.12618; `src/evals/metrics/mia/`) scores every forget and
every holdout item, then reports the ROC AUC of telling them apart. Every score is signed like a loss (higher = less
likely a member) and the AUC takes the holdout items as the positive class, so AUC 1 means the forget items look far
more "seen" than the holdout items, 0.5 that they cannot be told apart (`mia/utils.py`, `mia_auc`).

  loss       avg answer-token NLL (`evaluate_probability`: every labelled token, the final EOS included)
             (Yeom et al. 2018)
  zlib       loss / len(zlib.compress(decoded answer)) (Carlini et al. 2021, USENIX Security)
  min_k      -mean of the k = 40% lowest token log-probs (Shi et al. 2024, arXiv 2310.16789)
  min_k++    min_k of (log p(x_t) - mu_t) / sigma_t, mu_t and sigma_t^2 the mean and variance of log p over the
             vocabulary under p itself (Zhang et al. 2024, arXiv 2404.02936)
  gradnorm   mean over parameter tensors of the p-norm of d loss / d theta (Wang et al. 2024, arXiv 2402.17012)
  reference  loss - the loss of a reference model (e.g. the retain model) on the same item

min_k, min_k++ and gradnorm use open-unlearning's `tokenwise_logprobs` positions: the labelled tokens except the last
one (its EOS). The inputs here are per-token values; `evaluate.answer_token_stats` computes them from one forward pass.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

MIN_K = 0.4  # configs/eval/tofu_metrics/mia_min_k.yaml and mia_min_k_plus_plus.yaml
GRADNORM_P = 2  # configs/eval/tofu_metrics/mia_gradnorm.yaml
SIGMA2_FLOOR = 1e-6  # min_k_plus_plus.py clamps the vocabulary variance here
# TOFU_EVAL.json keys, in the order the evaluator writes them
ATTACKS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_gradnorm", "mia_reference")


def loss_score(answer_logprobs: Sequence[float]) -> float:
    """LOSS attack: the mean NLL over all labelled answer tokens (open-unlearning's avg_loss, EOS included)."""
    lp = np.asarray(answer_logprobs, dtype=np.float64)
    if lp.size == 0:
        raise ValueError("loss_score needs at least one labelled answer token.")
    return float(-lp.mean())


def zlib_score(avg_loss: float, text: str) -> float:
    """zlib attack: avg_loss / zlib-compressed length in bytes of the decoded answer (default level, UTF-8), the text
    being open-unlearning's `extract_target_texts_from_processed_data`: the labelled tokens decoded with
    skip_special_tokens=True."""
    return float(avg_loss) / len(zlib.compress(text.encode("utf-8")))


def _min_k_count(n: int, k: float) -> int:
    # open-unlearning's rounding, float product and all: max(1, int(len * k)), e.g. 3 tokens at k = 0.4 -> 1
    return max(1, int(n * k))


def min_k_score(token_logprobs: Sequence[float], k: float = MIN_K) -> float:
    """Min-k% attack: -mean of the floor(k * n) (at least 1) lowest token log-probs; 0 for an item without tokens
    (as open-unlearning's `MinKProbAttack.compute_score`)."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    if lp.size == 0:
        return 0.0
    return float(-np.mean(np.sort(lp)[: _min_k_count(lp.size, k)]))


def vocab_moments(vocab_logprobs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the mean and variance of log p(v) over the vocabulary under p: mu = sum_v p log p,
    sigma^2 = sum_v p (log p)^2 - mu^2 (min_k_plus_plus.py), computed in float64 from an (n, V) log-prob tensor."""
    lp = vocab_logprobs.double()
    p = lp.exp()
    mu = (p * lp).sum(-1)
    var = (p * lp.square()).sum(-1) - mu.square()
    return mu.cpu().numpy(), var.cpu().numpy()


def min_k_plus_plus_score(token_logprobs: Sequence[float], mu: Sequence[float], var: Sequence[float],
                          k: float = MIN_K) -> float:
    """Min-k%++ attack: min_k of (log p(x_t) - mu_t) / sqrt(max(sigma_t^2, 1e-6)); 0 for an item without tokens."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    if lp.size == 0:
        return 0.0
    mu, var = np.asarray(mu, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if mu.shape != lp.shape or var.shape != lp.shape:
        raise ValueError(f"mu {mu.shape} and var {var.shape} must have the token log-probs' shape {lp.shape}.")
    z = (lp - mu) / np.sqrt(np.maximum(var, SIGMA2_FLOOR))
    return float(-np.mean(np.sort(z)[: _min_k_count(z.size, k)]))


def reference_score(avg_loss: float, reference_avg_loss: float) -> float:
    """Reference attack: the model's avg_loss minus the reference model's on the same item."""
    return float(avg_loss) - float(reference_avg_loss)


def gradient_norm(model, input_ids: torch.Tensor, labels: torch.Tensor, p: float = GRADNORM_P) -> float:
    """GradNorm attack score of one item: the mean over parameter tensors of ||d loss / d theta||_p, with loss the mean
    NLL of the labelled tokens except the last (open-unlearning's `GradNormAttack`: tokenwise_logprobs, p in {1, 2,
    inf}, only tensors that receive a gradient). The gradient is taken with `torch.autograd.grad`, so the model's
    `.grad` buffers are left alone (open-unlearning zeroes them). open-unlearning switches the model to train mode for
    this; we keep the caller's mode, which gives the same numbers for models without dropout (Llama, the tiny models)
    and deterministic ones for the others."""
    if p not in (1, 2, float("inf")):
        raise ValueError(f"gradnorm p must be 1, 2 or inf (open-unlearning's choices), got {p!r}.")
    positions = (labels != -100).nonzero(as_tuple=True)[0][:-1]
    if positions.numel() == 0:
        raise ValueError("gradient_norm needs at least two labelled tokens (the last one, EOS, is not scored): the "
                         "answer was truncated away; raise max_length.")
    params = [q for q in model.parameters() if q.requires_grad]
    if not params:
        raise ValueError("gradient_norm: the model has no parameter with requires_grad=True.")
    device = next(model.parameters()).device
    with torch.enable_grad():
        logits = model(input_ids=input_ids[None].to(device)).logits[0, positions - 1]
        # at least float32 (a float64 model stays float64); open-unlearning takes log_softmax in the model's dtype
        logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
        loss = -logp.gather(1, input_ids.to(device)[positions][:, None]).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    norms = [g.double().norm(p) for g in grads if g is not None]
    return float(torch.stack(norms).mean())


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC with the holdout items as the positive class, computed as scikit-learn's `roc_auc_score` does (so that
    open-unlearning's logged AUCs are reproduced to the last bit): the ROC curve at every distinct score (ties share a
    threshold, i.e. count 1/2), collinear points dropped, then the trapezoidal rule. Equals
    P(holdout > forget) + P(holdout == forget) / 2 up to rounding."""
    f = np.asarray(forget_scores, dtype=np.float64)
    h = np.asarray(holdout_scores, dtype=np.float64)
    if f.size == 0 or h.size == 0:
        raise ValueError(f"mia_auc needs forget and holdout scores; got {f.size} forget and {h.size} holdout.")
    scores = np.concatenate([f, h])
    if not np.all(np.isfinite(scores)):
        raise ValueError("mia_auc: the scores must be finite (a NaN or inf score would make the AUC meaningless).")
    positive = np.concatenate([np.zeros(f.size), np.ones(h.size)])
    order = np.argsort(scores, kind="stable")[::-1]
    scores, positive = scores[order], positive[order]
    thresholds = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tps = np.cumsum(positive, dtype=np.float64)[thresholds]
    fps = 1 + thresholds.astype(np.float64) - tps
    if fps.size > 2:  # roc_curve(drop_intermediate=True)
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[keep], tps[keep]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return float(np.add.reduce(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _split_entry(scores: Sequence[float]) -> dict:
    return {"agg_value": float(np.mean(scores)), "value_by_index": {str(i): {"score": float(s)}
                                                                    for i, s in enumerate(scores)}}


def mia_entry(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> dict:
    """One attack in open-unlearning's TOFU_EVAL.json layout: forget / holdout per-item scores and means, auc and
    agg_value (= auc)."""
    auc = mia_auc(forget_scores, holdout_scores)
    return {"forget": _split_entry(forget_scores), "holdout": _split_entry(holdout_scores), "auc": auc,
            "agg_value": auc}
