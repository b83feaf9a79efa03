"""Figures of the isotropic model, drawn from a synthetic stationary table built from theory."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage

from thermosgd import theory
from thermosgd.report import figures_isotropic as plots

PROTOCOLS = ["fixed-lr", "fixed-elr", "fixed-sphere"]


def synthetic_table(protocol, *, n=5, seeds=(0, 1), d=3, sigma=1.0, noise=0.01, seed=0):
    """The simulator's stationary.csv for an n x n grid: theory columns exact, measured columns
    theory * (1 + noise N(0, 1)), one row per grid point and seed."""
    rng = np.random.default_rng(seed)
    rate, second = np.meshgrid(np.geomspace(1e-3, 1e-1, n), np.geomspace(1e-3, 1e-1, n))
    rate, second = np.tile(rate.ravel(), len(seeds)), np.tile(second.ravel(), len(seeds))
    s2, nan = sigma**2, np.full(rate.shape, np.nan)
    if protocol == "fixed-sphere":
        wd, radius_target = nan, second * 100  # r in [0.1, 10]
        t = theory.temperature_fixed_sphere(rate, s2)
        r_theory = radius_target
        lambda_eff_theory = theory.effective_pressure_sphere(rate, r_theory, s2, d)
    else:
        wd, radius_target, lambda_eff_theory = second, nan, nan
        if protocol == "fixed-lr":
            t = theory.temperature_fixed_lr(rate, wd, s2, d)
            r_theory = theory.stationary_radius_fixed_lr(rate, wd, s2, d)
        else:
            t = theory.temperature_fixed_elr(rate, s2)
            r_theory = theory.stationary_radius_fixed_elr(rate, wd, s2, d)

    def noisy(values):
        return values * (1 + noise * rng.standard_normal(values.shape))

    s_sphere_theory = theory.vmf_sphere_entropy(t, d)
    radius = r_theory if protocol == "fixed-sphere" else noisy(r_theory)
    s_sphere = s_sphere_theory + noise * rng.standard_normal(t.shape)
    lambda_eff = noisy(lambda_eff_theory)
    return pd.DataFrame({
        "protocol": protocol, "d": d, "sigma": sigma,
        "seed": np.repeat(seeds, n * n), "diverged": False,
        "lr": rate, "wd": wd, "radius_target": radius_target,
        "radius": radius, "U": noisy(theory.vmf_mean_loss(t, d)),
        "entropy_sphere": s_sphere, "entropy": theory.total_entropy(s_sphere, radius, d),
        "temperature": t, "pressure": lambda_eff if protocol == "fixed-sphere" else wd,
        "volume": theory.volume(radius), "lambda_eff": lambda_eff,
        "radius_theory": r_theory, "U_theory": theory.vmf_mean_loss(t, d),
        "entropy_sphere_theory": s_sphere_theory,
        "entropy_theory": theory.total_entropy(s_sphere_theory, r_theory, d),
        "lambda_eff_theory": lambda_eff_theory,
    })


def _points(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_energy_entropy_panel(protocol):
    ax = plots.fig_energy_entropy(synthetic_table(protocol))
    (twin,) = [other for other in ax.figure.axes if other is not ax and other.bbox.bounds == ax.bbox.bounds]
    # exact + asymptotic theory lines and one point cloud (all grid points) on each y axis
    assert len(ax.lines) == 2 and len(twin.lines) == 2
    assert len(_points(ax)) == 1 and len(_points(twin)) == 1
    assert len(_points(ax)[0].get_offsets()) == 25
    assert "temperature" in ax.get_xlabel()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("panel", [plots.fig_ideal_gas, plots.fig_entropy_vs_lr, plots.fig_entropy_vs_wd])
def test_curve_panels_have_one_line_and_points_per_level(protocol, panel):
    ax = panel(synthetic_table(protocol))
    # 5 levels: one theory line and one set of 5 seed-averaged points each, plus a colorbar
    assert len(ax.lines) == 5
    assert [len(points.get_offsets()) for points in _points(ax)] == [5] * 5
    assert len(ax.figure.axes) == 2  # the panel and its colorbar
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_ideal_gas_slopes_match_theory():
    # theory r* ~ (eta / lambda)^(1/4) for fixed LR; 1 % noise moves the fitted slope < 0.01
    ax = plots.fig_ideal_gas(synthetic_table("fixed-lr"))
    title = ax.get_title()
    assert "theory 0.250" in title
    measured = float(title.split("measured ")[-1])
    assert abs(measured - 0.25) < 0.01


@pytest.mark.parametrize("protocol, images", [("fixed-lr", 9), ("fixed-elr", 9), ("fixed-sphere", 4)])
def test_potential_panel(protocol, images):
    ax = plots.fig_potential_minimum(synthetic_table(protocol))
    heatmaps = [child for child in ax.child_axes if child.images]
    assert len(heatmaps) == images
    assert all(isinstance(h.images[0], AxesImage) for h in heatmaps)
    assert all(h.images[0].get_array().shape == (5, 5) for h in heatmaps)


def test_potential_minimum_sits_on_the_chosen_point_without_noise():
    # With exact theory values G is minimized at the chosen point (eq. 22): square == circle.
    ax = plots.fig_potential_minimum(synthetic_table("fixed-elr", noise=0.0, seeds=(0,)))
    for heatmap in ax.child_axes:
        square, circle = heatmap.lines
        assert np.allclose(square.get_xydata(), circle.get_xydata())


def test_diverged_points_become_holes():
    table = synthetic_table("fixed-lr")
    table.loc[table["lr"] == table["lr"].max(), "diverged"] = True
    ax = plots.fig_potential_minimum(table)
    data = ax.child_axes[0].images[0].get_array()
    assert np.ma.getmaskarray(data)[:, -1].all() or np.isnan(np.ma.filled(data, np.nan)[:, -1]).all()


def test_mixed_protocols_are_refused():
    table = pd.concat([synthetic_table("fixed-lr"), synthetic_table("fixed-elr")])
    with pytest.raises(ValueError, match="one protocol"):
        plots.fig_ideal_gas(table)


@pytest.mark.parametrize("protocol", ["fixed-lr", "fixed-sphere"])  # ELR's layout is LR's
def test_figure_isotropic_writes_png(tmp_path, protocol):
    table = synthetic_table(protocol)
    table.loc[table["lr"] == table["lr"].min(), "diverged"] = True  # holes must draw silently
    path = plots.figure_isotropic(table, tmp_path / protocol / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["figure.png"]  # no temp file left behind
