"""log_one_minus_p / label_log_odds vs float64 full logits (p_y = 1 rows, -inf logits, temperature, chunk
boundaries, bf16 hidden), and exact_ce_u_logprobs: value bit for bit, gradient = float64 CE-U where the log-prob
form (w from TRL's float32 log-probs, times TRL's grad log p) is off, and why an exact w alone is not enough."""

import pytest
import torch

from ceu_rl.objectives import exact_ce_u_logprobs, log_one_minus_p, reweighted_logprobs
from ceu_rl.objectives.exact_weights import label_log_odds


def _reference_log_one_minus_p(hidden, weight, labels, bias=None, temperature=1.0):
    """float64, full logits: log sum_{k != y} softmax(z)_k, written out."""
    z = hidden.double() @ weight.double().T
    if bias is not None:
        z = z + bias.double()
    z = z / temperature
    log_p_all = torch.log_softmax(z, -1)
    others = log_p_all.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(others, -1)


def _confident_rows(n=24, vocab=300, width=16, seed=0):
    """Rows whose label has 1 - p from ~1e-1 down to ~1e-12 (float32 log p rounds to 0 for the last ones)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, width, generator=gen)
    hidden = torch.randn(n, width, generator=gen)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    direction = weight[labels] / weight[labels].norm(dim=1, keepdim=True)
    hidden = hidden + torch.linspace(0.0, 12.0, n).unsqueeze(1) * direction  # push z_y up row by row
    return hidden, weight, labels


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 24])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_float64_reference_including_p_rounding_to_one(chunk_size, temperature):
    hidden, weight, labels = _confident_rows()
    bias = torch.randn(weight.shape[0], generator=torch.Generator().manual_seed(1))
    ours = log_one_minus_p(hidden, weight, labels, bias, temperature=temperature, chunk_size=chunk_size)
    expected = _reference_log_one_minus_p(hidden, weight, labels, bias, temperature)
    assert ours.dtype == torch.float32 and not ours.requires_grad
    assert expected.min() < -25, "rows where p_y rounds to 1 in float32"
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5)
    # what the log-prob form can do from float32 log p: nothing once log p rounds to 0
    logp32 = torch.log_softmax((hidden @ weight.T + bias) / temperature, -1).gather(1, labels[:, None]).squeeze(1)
    assert torch.isinf(torch.log(-torch.expm1(logp32))).any()


def test_inf_entries_and_degenerate_rows():
    hidden, weight, labels = _confident_rows(n=4, vocab=6, width=3)
    bias = torch.zeros(6)
    bias[(labels[0] + 1) % 6] = float("-inf")  # banned token: allowed
    ours = log_one_minus_p(hidden, weight, labels, bias)
    torch.testing.assert_close(ours.double(), _reference_log_one_minus_p(hidden, weight, labels, bias),
                               rtol=1e-5, atol=1e-5)
    only_label = torch.full((6,), float("-inf"))
    only_label[labels[1]] = 0.0  # every other token banned: p_y = 1 exactly
    odds = label_log_odds(hidden[1:2], weight, labels[1:2], only_label)
    assert odds.item() == float("inf") and log_one_minus_p(hidden[1:2], weight, labels[1:2], only_label).item() == \
        float("-inf")


def test_bf16_hidden_and_batch_shape():
    hidden, weight, labels = _confident_rows()
    hidden16 = hidden.to(torch.bfloat16).view(4, 6, -1)
    ours = log_one_minus_p(hidden16, weight.to(torch.bfloat16), labels.view(4, 6))
    expected = _reference_log_one_minus_p(hidden16.float().view(24, -1), weight.to(torch.bfloat16).float(), labels)
    assert ours.shape == (4, 6) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.reshape(-1).double(), expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_name_the_problem():
    hidden, weight, labels = _confident_rows(n=3)
    with pytest.raises(ValueError, match="labels must lie in"):
        log_one_minus_p(hidden, weight, torch.tensor([0, 1, 300]))
    with pytest.raises(ValueError, match="weight must be"):
        log_one_minus_p(hidden, weight.T, labels)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        log_one_minus_p(hidden, weight, labels, temperature=0.0)


def _fused_head_logprobs(hidden, weight, labels, temperature):
    """TRL 1.16's fused chunked log-prob head (what the trainers get), float32."""
    from trl.kernels import ChunkedLogProbFunction

    return ChunkedLogProbFunction.apply(hidden, weight, None, labels, temperature, 4096, None, 1.0,
                                        ("log_probs",))[0]


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_exact_ce_u_logprobs_gradient_vs_float64(scale):
    hidden, weight, labels = _confident_rows(n=16, vocab=2000, width=32)
    hidden = hidden * 1.5  # 1 - p from ~1e-1 to ~1e-13
    temperature = 0.9
    mask = torch.ones(16, dtype=torch.bool)
    mask[::5] = False  # these keep their plain log-prob gradient

    def float64_reference():
        h = hidden.double().requires_grad_()
        z = h @ weight.double().T / temperature
        logp = torch.log_softmax(z, -1).gather(1, labels[:, None]).squeeze(1)
        others = z.scatter(1, labels[:, None], float("-inf"))
        # -log(1 - p), whose gradient is p/(1-p) grad log p, in float64 without cancellation: LSE(z) - LSE_{k!=y}(z)
        # where p > 1/2, -log(-expm1(log p)) where p <= 1/2 (each form cancels catastrophically on the other side)
        confident = (logp > -0.6931).detach()
        safe_logp = torch.where(confident, torch.full_like(logp, -1.0), logp)
        ceu_grad_carrier = torch.where(confident, torch.logsumexp(z, 1) - torch.logsumexp(others, 1),
                                       -torch.log(-torch.expm1(safe_logp)))
        torch.where(mask, scale * ceu_grad_carrier, logp).sum().backward()
        return h.grad, torch.exp(-ceu_grad_carrier.detach())

    expected, one_minus_p = float64_reference()
    assert one_minus_p[mask].min() < 1e-7 and one_minus_p[mask].max() > 1e-2

    def gradient(make_surrogate):
        h = hidden.clone().requires_grad_()
        logp = _fused_head_logprobs(h, weight, labels, temperature)
        surrogate = make_surrogate(logp, h)
        assert torch.equal(surrogate.detach(), logp.detach())  # the value, bit for bit
        surrogate.sum().backward()
        return h.grad

    def row_errors(grad):
        return ((grad.double() - expected).norm(dim=1) / expected.norm(dim=1))[mask]

    exact = row_errors(gradient(lambda logp, h: exact_ce_u_logprobs(logp, mask, h, weight, labels,
                                                                    temperature=temperature, scale=scale)))
    from ceu_rl.objectives import ce_u_weight

    default = row_errors(gradient(lambda logp, h: reweighted_logprobs(
        logp, torch.where(mask, scale * ce_u_weight(logp), torch.ones_like(logp)))))
    # an exact w times TRL's grad log p: the label's logit gradient 1 - exp(log p) is as inexact as w was
    exact_w = torch.expm1(-log_one_minus_p(hidden, weight, labels, temperature=temperature))
    exact_w_only = row_errors(gradient(lambda logp, h: reweighted_logprobs(
        logp, torch.where(mask, scale * exact_w, torch.ones_like(logp)))))
    # measured here (1 - p down to 2e-19): exact <= 9.2e-6 per row; default up to 1.0, exact w alone up to 1.1
    assert exact.max() < 1e-4, exact
    assert default.max() > 1e-1 and exact_w_only.max() > 1e-1, (default, exact_w_only)
    # where 1 - p is large the three agree: the difference is the float32 limit only
    wide = one_minus_p[mask] > 1e-2
    assert default[wide].max() < 1e-4 and exact_w_only[wide].max() < 1e-4


def test_exact_ce_u_logprobs_no_masked_tokens_is_identity():
    hidden, weight, labels = _confident_rows(n=4)
    logp = torch.log_softmax(hidden @ weight.T, -1).gather(1, labels[:, None]).squeeze(1)
    assert exact_ce_u_logprobs(logp, torch.zeros(4, dtype=torch.bool), hidden, weight, labels) is logp
