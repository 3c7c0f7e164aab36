"""experiments/attacks/plots.py's plot_attacks: the title says which models these are (the caller's subtitle; the main
job's cheap form: lr 2e-4, last step) and stays inside the figure, clear of the legend."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from experiments.attacks.config import full_preset, main_job_preset  # noqa: E402
from experiments.attacks.plots import default_subtitle, plot_attacks  # noqa: E402


def _rows(names, seeds=3):
    keys = ("forget prob", "relearn 0.001: forget prob", "relearn 0.001: held-out prob")
    return {n: {k: {"mean": 0.1 * (i + 1) % 1, "per_seed": [0.1 * (i + 1) % 1] * seeds} for k in keys}
            for i, n in enumerate(names)}


@pytest.mark.parametrize("names", [("full", "retain", "grpo_retain", "ceu_full_retain"),
                                   ("full", "retain", "ga", "grad_diff", "npo", "simnpo", "kl", "ce_u", "ce_u_retain",
                                    "idk_dpo", "ce_u_idk_dpo", "grpo_retain", "ceu_full_retain", "satimp")])
def test_title_inside_the_figure_and_clear_of_the_legend(names, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure it
    plot_attacks(_rows(names), main_job_preset(), tmp_path / "attacks.png")
    assert (tmp_path / "attacks.png").stat().st_size > 0
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    title = ax.title if ax.title.get_text() else ax._left_title
    text = title.get_text()
    assert "lr 2e-4, last step" in text and "operating point" not in text and "3 seeds" in text
    box = title.get_window_extent(renderer)
    width, height = fig.get_size_inches() * fig.dpi
    assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height
    legend = fig.legends[0].get_window_extent(renderer)
    assert box.x1 <= legend.x0 or box.y0 >= legend.y1  # not under the legend


def test_subtitle_from_the_caller_and_the_study_default(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_attacks(_rows(("full", "retain")), full_preset(), tmp_path / "a.png", subtitle="seed 7's models at step 15")
    assert "seed 7's models at step 15" in figures[0].axes[0]._left_title.get_text()
    assert default_subtitle(full_preset()) == "each model at its operating point"
    assert default_subtitle(main_job_preset()) == "the main job's final models: lr 2e-4, last step"
