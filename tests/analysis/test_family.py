"""CE-U's family (analysis/family.py, closed_forms.py, DERIVATIONS.md Sec. 10): every closed form against float64
autograd through the trainer's loss functions, the "equal up to a reweighting of GA" statements as whole gradient
vectors, the limits p_y -> 0 and p_y -> 1 stated in DERIVATIONS.md, and the figure."""

import math

import numpy as np
import pytest
import torch

from analysis import closed_forms as cf
from analysis.empirical import logits_with_label_prob
from analysis.family import MEMBERS, family_token_gradient, make_family

P_GRID = [1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-6]
EXTRA = {  # parameters beyond the figure's
    "WGA beta=0.5": ("wga", {"beta": 0.5}, lambda p, q: cf.wga(p, q, 0.5)),
    "SatImp 2, 3": ("satimp", {"beta1": 2.0, "beta2": 3.0}, lambda p, q: cf.satimp(p, q, 2.0, 3.0)),
    "UNDIAL beta=30": ("undial", {"beta": 30.0}, lambda p, q: cf.undial(p, q, 30.0)),
    "UNDIAL beta=0.1": ("undial", {"beta": 0.1}, lambda p, q: cf.undial(p, q, 0.1)),
    "SimNPO delta=0.5": ("simnpo", {"beta": 2.5, "delta": 0.5}, lambda p, q: cf.simnpo(p, q, 2.5, 0.5)),
    "WTNPO ref 0.3": ("wtnpo", {"beta": 1.0, "alpha": 0.0, "ref_p_y": 0.3}, lambda p, q: cf.wtnpo(p, q, 1.0, 0.0, 0.3)),
    "UNDIAL frozen ref 0.99": ("undial_frozen", {"beta": 10.0, "ref_p_y": 0.99},
                               lambda p, q: {"label": cf.undial_frozen_label(p, 0.99, 10.0)}),
}
CASES = {**{k: v[:3] for k, v in MEMBERS.items()}, **EXTRA}


@pytest.mark.parametrize("vocab", [2, 50, 5000])
@pytest.mark.parametrize("name", list(CASES))
def test_closed_form_equals_float64_autograd(name, vocab):
    objective, kw, closed_fn = CASES[name]
    for i, p in enumerate(P_GRID):
        z, y, q_sq = logits_with_label_prob(p, vocab, seed=i)
        auto = family_token_gradient(objective, z, y, **kw)
        for key, value in closed_fn(p, q_sq).items():
            assert auto[key] == pytest.approx(float(value), rel=1e-6, abs=1e-300), (name, p, key)


def _grad(objective, z, y, **kw):
    """The whole logit-gradient vector (float64) by autograd through the loss, via family_token_gradient's loss."""
    from ceu_rl.objectives import ce_u_loss, gradient_ascent_loss, satimp_loss, undial_loss, wga_loss

    z = z.clone().requires_grad_()
    logp = torch.log_softmax(z, -1)[:, 0]
    loss = {"gradient_ascent": lambda: gradient_ascent_loss(z, y, reduction="sum"),
            "ce_u": lambda: ce_u_loss(z, y, reduction="sum"),
            "wga": lambda: wga_loss(logp, beta=kw.get("beta", 1.0), reduction="sum"),
            "satimp": lambda: satimp_loss(logp, beta1=kw.get("beta1", 5.0), beta2=kw.get("beta2", 1.0),
                                          reduction="sum"),
            "undial": lambda: undial_loss(z, z.detach(), y, beta=kw.get("beta", 10.0), reduction="sum")}[objective]()
    loss.backward()
    return z.grad[0]


@pytest.mark.parametrize("objective, kw", [("ce_u", {}), ("wga", {"beta": 1.0}), ("wga", {"beta": 5.0}),
                                           ("satimp", {"beta1": 5.0, "beta2": 1.0}), ("undial", {"beta": 10.0}),
                                           ("undial", {"beta": 2.0})])
def test_each_token_member_is_gradient_ascent_reweighted(objective, kw):
    """grad member = w(p_y) grad GA as whole vectors (label and every other logit): CE-U w = p / (1 - p), WGA p^beta,
    SatImp p^beta1 (1 - p)^beta2, UNDIAL (current teacher) p s / (1 - s p)."""
    for i, p in enumerate([1e-3, 0.2, 0.5, 0.9, 0.999]):
        z, y, _ = logits_with_label_prob(p, 300, seed=10 + i)
        w = float(cf.family_weight_on_ga(objective, p, **kw))
        torch.testing.assert_close(_grad(objective, z, y, **kw), w * _grad("gradient_ascent", z, y),
                                   rtol=1e-7, atol=1e-14 * max(w, 1.0))


def test_identities_between_members():
    p, q_sq = np.array([1e-4, 0.3, 0.7, 1 - 1e-5]), 0.2
    for key in ("label", "l1", "l2"):
        # UNDIAL's beta -> infinity limit is CE-U (on the first step, teacher = current model)
        np.testing.assert_allclose(cf.undial(p, q_sq, math.inf)[key], cf.ce_u(p, q_sq)[key], rtol=1e-12)
        # SimNPO on a one-token sequence (delta = 0) is NPO with pi_ref = 1
        np.testing.assert_allclose(cf.simnpo(p, q_sq, 2.5)[key], cf.npo(p, q_sq, 2.5, np.log(p))[key], rtol=1e-12)
        # NPO at its start (pi = pi_ref) is GA; WGA at beta = 0 is GA; WTNPO with alpha = 0 at p = p_ref too
        for member in (cf.npo(p, q_sq, 0.1, 0.0), cf.wga(p, q_sq, 0.0), cf.wtnpo(p, q_sq, 4.0, 0.0, p)):
            np.testing.assert_allclose(member[key], cf.gradient_ascent(p, q_sq)[key], rtol=1e-12)
    # a frozen teacher equal to the current model gives the current-teacher push on the label
    np.testing.assert_allclose(cf.undial_frozen_label(p, p, 3.0), cf.undial(p, q_sq, 3.0)["label"], rtol=1e-9)


def test_limits_as_stated_in_derivations():
    """p_y -> 1: every member with a bounded weight pushes ~ c (1 - p_y), CE-U pushes 1; p_y -> 0: GA pushes 1,
    the others ~ p^k (k = 1 for CE-U and UNDIAL, beta for WGA, beta1 for SatImp, beta for NPO/SimNPO)."""
    eps, q = 1e-9, 0.1
    high, low = 1 - eps, eps

    def push(member, p):
        return float(member(p, q)["label"])
    assert push(cf.ce_u, high) == pytest.approx(1.0, rel=1e-8)
    assert push(cf.gradient_ascent, high) / eps == pytest.approx(1.0, rel=1e-6)
    assert push(lambda p, q: cf.wga(p, q, 5.0), high) / eps == pytest.approx(1.0, rel=1e-6)
    assert push(lambda p, q: cf.satimp(p, q, 5.0, 1.0), high) / eps**2 == pytest.approx(1.0, rel=1e-6)
    assert push(lambda p, q: cf.undial(p, q, 10.0), high) / eps == pytest.approx(math.expm1(10.0), rel=1e-4)
    assert push(lambda p, q: cf.npo(p, q, 0.1, 0.0), high) / eps == pytest.approx(1.0, rel=1e-6)
    assert push(lambda p, q: cf.simnpo(p, q, 2.5), high) / eps == pytest.approx(1.0, rel=1e-6)
    # UNDIAL(beta) follows CE-U until 1 - p_y ~ e^-beta: at 1 - p = e^-beta its push is half CE-U's
    b = 10.0
    assert push(lambda p, q: cf.undial(p, q, b), 1 - math.exp(-b)) == pytest.approx(0.5, rel=1e-4)
    assert push(cf.gradient_ascent, low) == pytest.approx(1.0, rel=1e-8)
    assert push(cf.ce_u, low) / eps == pytest.approx(1.0, rel=1e-6)
    assert push(lambda p, q: cf.undial(p, q, 3.0), low) / eps == pytest.approx(-math.expm1(-3.0), rel=1e-6)
    assert push(lambda p, q: cf.wga(p, q, 2.0), low) / eps**2 == pytest.approx(1.0, rel=1e-6)
    assert push(lambda p, q: cf.satimp(p, q, 5.0, 1.0), low) / eps**5 == pytest.approx(1.0, rel=1e-6)
    r = 0.9
    assert push(lambda p, q: cf.npo(p, q, 0.5, np.log(p / r)), low) / (eps / r) ** 0.5 == pytest.approx(2.0, rel=1e-4)
    # the frozen teacher's fixed point: no push at p_y = t_y, a pull back up below it
    t = r * math.exp(-3.0) / (r * math.exp(-3.0) + 1 - r)
    assert abs(float(cf.undial_frozen_label(t, r, 3.0))) < 1e-15 and float(cf.undial_frozen_label(t / 2, r, 3.0)) < 0


@pytest.mark.slow
def test_figure_and_data(tmp_path):
    path = make_family(tmp_path, quick=True)
    assert path.exists() and path.stat().st_size > 20_000
    import json

    data = json.loads((tmp_path / "family_vs_confidence.json").read_text())
    assert set(data) == set(MEMBERS)
    for name, d in data.items():
        for row in d["rows"]:
            for key, value in row["closed_form"].items():
                assert row["autograd"][key] == pytest.approx(value, rel=1e-6, abs=1e-300), (name, row["p_y"], key)
