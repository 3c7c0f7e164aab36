"""The real-model panel's traces (analysis/real_model.py) on a tiny stand-in: GA and CE-U start from the same model
and batch (same first p_y), every step is traced, and the figure is written, also from its JSON alone."""

import json

import pytest

from analysis.plots import real_model_panel
from analysis.real_model import plot_real_model_traces, real_model_traces
from ceu_rl.tiny_models import save_tiny_model
from ceu_rl.tofu import load_split


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_model")
    d = load_split("forget01")
    path = save_tiny_model(root / "m", [*d["question"], *d["answer"]] * 3, vocab_size=400, hidden_size=32,
                           num_layers=1, seed=0)
    return root, real_model_traces(str(path), root / "runs", seeds=(0, 1), steps=3, lr=1e-3, prompt_format="plain")


def test_same_start_every_step_traced(traces):
    _, data = traces
    assert sorted(data["seeds"]) == ["0", "1"]
    for runs in data["seeds"].values():
        ga, ce = runs["ga"]["records"], runs["ce_u"]["records"]
        assert [r["step"] for r in ga] == [r["step"] for r in ce] == [1, 2, 3]
        assert ga[0]["p_y_mean"] == pytest.approx(ce[0]["p_y_mean"], rel=1e-6)  # same model, same first batch
        assert all(r["grad_norm"] > 0 and 0 < r["p_y_mean"] < 1 for r in ga + ce)
        assert ga[0]["grad_norm"] != ce[0]["grad_norm"]  # the objectives differ from the first step


def test_plot_from_json(traces, tmp_path):
    root, data = traces
    plot_real_model_traces(data, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000
    (tmp_path / "t.json").write_text(json.dumps(data))
    (tmp_path / "out").mkdir()
    png = real_model_panel(tmp_path / "out", str(tmp_path / "t.json"))  # what `--real_model X.json` draws
    assert png.stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "real_model_traces.json").read_text()) == data
