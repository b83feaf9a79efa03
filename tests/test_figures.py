"""Figures drawn from synthetic stationary tables built from theory, and which figures a
result's columns give."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage
from synthetic import noisy_table

from thermosgd.analysis.sources import Analysis
from thermosgd.report import figures
from thermosgd.report import figures_isotropic as plots
from thermosgd.report.plotting import save_figure

PROTOCOLS = ["fixed-lr", "fixed-elr", "fixed-sphere"]


def _points(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_energy_entropy_panel(protocol):
    ax = plots.panel_energy_entropy(noisy_table(protocol))
    (twin,) = [other for other in ax.figure.axes if other is not ax and other.bbox.bounds == ax.bbox.bounds]
    # exact + asymptotic theory lines and one point cloud (all grid points) on each y axis
    assert len(ax.lines) == 2 and len(twin.lines) == 2
    assert len(_points(ax)) == 1 and len(_points(twin)) == 1
    assert len(_points(ax)[0].get_offsets()) == 25
    assert "temperature" in ax.get_xlabel()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("panel", [plots.panel_ideal_gas, plots.panel_entropy_vs_lr, plots.panel_entropy_vs_wd])
def test_curve_panels_have_one_line_and_points_per_level(protocol, panel):
    ax = panel(noisy_table(protocol))
    # 5 levels: one theory line and one set of 5 seed-averaged points each, plus a colorbar
    assert len(ax.lines) == 5
    assert [len(points.get_offsets()) for points in _points(ax)] == [5] * 5
    assert len(ax.figure.axes) == 2  # the panel and its colorbar
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_ideal_gas_slopes_match_theory():
    # theory r* ~ (eta / lambda)^(1/4) for fixed LR; 1 % noise moves the fitted slope < 0.01
    ax = plots.panel_ideal_gas(noisy_table("fixed-lr"))
    title = ax.get_title()
    assert "theory 0.250" in title
    measured = float(title.split("measured ")[-1])
    assert abs(measured - 0.25) < 0.01


@pytest.mark.parametrize("protocol, images", [("fixed-lr", 9), ("fixed-elr", 9), ("fixed-sphere", 4)])
def test_potential_panel(protocol, images):
    ax = plots.panel_potential_minimum(noisy_table(protocol))
    heatmaps = [child for child in ax.child_axes if child.images]
    assert len(heatmaps) == images
    assert all(isinstance(h.images[0], AxesImage) for h in heatmaps)
    assert all(h.images[0].get_array().shape == (5, 5) for h in heatmaps)


def test_potential_minimum_sits_on_the_chosen_point_without_noise():
    # With exact theory values G is minimized at the chosen point (eq. 22): square == circle.
    ax = plots.panel_potential_minimum(noisy_table("fixed-elr", noise=0.0, seeds=(0,)))
    for heatmap in ax.child_axes:
        square, circle = heatmap.lines
        assert np.allclose(square.get_xydata(), circle.get_xydata())


def test_diverged_points_become_holes():
    table = noisy_table("fixed-lr")
    table.loc[table["learning_rate"] == table["learning_rate"].max(), "status"] = "diverged"
    ax = plots.panel_potential_minimum(table)
    data = ax.child_axes[0].images[0].get_array()
    assert np.ma.getmaskarray(data)[:, -1].all() or np.isnan(np.ma.filled(data, np.nan)[:, -1]).all()


def test_mixed_protocols_are_refused():
    table = pd.concat([noisy_table("fixed-lr"), noisy_table("fixed-elr")])
    with pytest.raises(ValueError, match="one protocol"):
        plots.panel_ideal_gas(table)


@pytest.mark.parametrize("protocol", ["fixed-lr", "fixed-sphere"])  # ELR's layout is LR's
def test_the_isotropic_figure_draws_with_holes(tmp_path, protocol):
    table = noisy_table(protocol)
    table.loc[table["learning_rate"] == table["learning_rate"].min(), "status"] = "diverged"
    fig = plots.fig_isotropic(table)  # holes must draw silently
    path = save_figure(fig, tmp_path / protocol / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["figure.png"]  # no temp file left behind
    assert "2 seed(s), 10 diverged run(s)" in fig.get_suptitle()


def _analysis(table, metrics=None):
    return Analysis("x", table["protocol"].iloc[0], table, {}, {}, metrics=metrics)


def test_figures_are_chosen_by_the_columns():
    """The isotropic panels need the closed forms; the network panels the measured sigma^2,
    Figure 12 a corrected prediction, Figure 13 the logs."""
    table = noisy_table("fixed-lr")
    assert [s.name for s in figures.figures_for(_analysis(table))] == ["figure"]
    network = table.drop(columns=["entropy_theory"]).assign(
        sigma2=1.0, radius_theory_corrected=table["radius_theory"])
    logs = pd.DataFrame({"run": ["a"], "iteration": [1]})
    assert [s.name for s in figures.figures_for(_analysis(network, logs))] == [
        "stationary", "radius_theories", "learning_curves"]
