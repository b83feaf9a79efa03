"""Figures of the isotropic noise model: the panels of the paper's Figures 1, 3 and 4.

:func:`fig_isotropic` draws panels a-e of one protocol into one figure; each panel is also
``panel_<name>(table, *, ax=None) -> Axes`` on the stationary table of one protocol (one row
per grid point and seed; seeds averaged by the one rule, points left out are holes).

- a :func:`panel_energy_entropy`     U and S_sphere vs T: exact VMF (eq. 103), low T (eq. 106-107)
- b :func:`panel_ideal_gas`          V1: r* vs eta per lambda; fixed sphere: lambda_eff vs eta_eff
                                     per r (eq. 12, 19, 84)
- c :func:`panel_entropy_vs_lr`      total entropy S vs eta (eta_eff), one curve per lambda (r)
- d :func:`panel_entropy_vs_wd`      S vs lambda (fixed sphere: vs r), one curve per eta (eta_eff)
- e :func:`thermosgd.report.figures_potential.panel_potential_minimum`  V2 (eq. 22)
"""

from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from thermosgd import theory
from thermosgd.report.figures_potential import panel_potential_minimum
from thermosgd.report.plotting import (
    CMAP_OTHER,
    CMAP_RATE,
    axes_or_new,
    log_norm,
    log_ticks,
    pivot,
    stationary,
)

__all__ = ["fig_isotropic", "panel_energy_entropy", "panel_entropy_vs_lr", "panel_entropy_vs_wd",
           "panel_ideal_gas", "panel_potential_minimum"]

_C_U, _C_S = "tab:blue", "tab:red"

def _slope(x, y):
    """Median over curves (rows of y) of the least-squares slope dy/dx; NaN if none fits."""
    slopes = []
    for ys in y:
        ok = np.isfinite(x) & np.isfinite(ys)
        if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
            dx = x[ok] - x[ok].mean()
            slopes.append(float(dx @ (ys[ok] - ys[ok].mean()) / (dx @ dx)))
    return float(np.median(slopes)) if slopes else float("nan")


def _slope_text(value):
    return "n/a" if not np.isfinite(value) else f"{round(value, 3) + 0.0:.3f}"  # no "-0.000"


def _stretch(ax, below, above, *, log):
    """Widen the y range by ``below`` and ``above`` times its span: room for legends."""
    low, high = np.log10(ax.get_ylim()) if log else ax.get_ylim()
    low, high = low - below * (high - low), high + above * (high - low)
    ax.set_ylim((10**low, 10**high) if log else (low, high))


def _curves(ax, x, levels, measured, predicted, *, cmap, level_label, log_y):
    """One theory line and one set of measured points per level, colored by the level.

    Returns the median fitted slopes (theory, measured) in the axes' coordinates: dy/dlog x, or
    dlog y/dlog x on a log y axis.
    """
    norm = log_norm(levels)
    for level, y_measured, y_theory in zip(levels, measured, predicted):
        color = cmap(norm(level))
        ax.plot(x, y_theory, color=color, lw=1.2, alpha=0.9)
        ax.scatter(x, y_measured, color=color, s=16, zorder=3, edgecolors="k", linewidths=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log" if log_y else "linear")
    colorbar = ax.figure.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"color: {level_label}",
                                  pad=0.01)
    log_ticks(ax.xaxis, colorbar.ax.yaxis, *[ax.yaxis] * log_y)
    _stretch(ax, 0.0, 0.14, log=log_y)  # a band on top where the legend hides no data
    ax.legend(handles=[
        Line2D([], [], color="0.35", marker="o", ls="none", mec="k", ms=5,
               label="measured (mean over seeds)"),
        Line2D([], [], color="0.35", lw=1.2, label="theory"),
    ], fontsize="small", loc="upper center", ncol=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        coords = [np.log(np.where(y > 0, y, np.nan)) if log_y else y for y in (predicted, measured)]
    return _slope(np.log(x), coords[0]), _slope(np.log(x), coords[1])


def panel_energy_entropy(table, *, ax=None):
    """Panel a: mean loss U (left axis) and unit-sphere entropy S_sphere (right, twin axis) vs T.

    Points are measured; solid lines the exact VMF U = 1 - A_d(1/T), S = -log C_d(1/T) -
    A_d(1/T)/T (eq. 103); dashed the low-temperature U = (d-1)T/2, S = (d-1)/2 log(2 pi e T)
    (eq. 106-107).
    """
    st, ax = stationary(table), axes_or_new(ax)
    t = st.mean["temperature"].to_numpy(float)
    positive = t[np.isfinite(t) & (t > 0)]
    if positive.size == 0:
        raise ValueError("the table has no positive temperature to plot against")
    grid = np.geomspace(positive.min(), positive.max(), 200)
    ax.scatter(t, st.mean["U"], s=12, color=_C_U, alpha=0.6, label="$U$ measured")
    ax.plot(grid, theory.vmf_mean_loss(grid, st.d), color=_C_U, label="$U$ exact VMF")
    ax.plot(grid, theory.vmf_mean_loss_asymptotic(grid, st.d), "--", color=_C_U,
            label="$U=(d-1)T/2$")
    ax.set(xscale="log", yscale="log", xlabel=f"temperature ${st.names.temperature}$ (log scale)")
    log_ticks(ax.xaxis, ax.yaxis)
    ax.set_ylabel(r"mean loss $U=\mathbb{E}[L]$ (log scale)", color=_C_U)
    twin = ax.twinx()
    twin.scatter(t, st.mean["entropy_sphere"], s=12, marker="^", color=_C_S, alpha=0.6,
                 label=r"$S_\mathrm{sphere}$ measured")
    twin.plot(grid, theory.vmf_sphere_entropy(grid, st.d), color=_C_S,
              label=r"$S_\mathrm{sphere}$ exact VMF")
    twin.plot(grid, theory.vmf_sphere_entropy_asymptotic(grid, st.d), "--", color=_C_S,
              label=r"$S=\frac{d-1}{2}\log(2\pi eT)$")
    twin.set_ylabel(r"entropy on the unit sphere $S_\mathrm{sphere}$ [nats]", color=_C_S)
    # Both are linear in log T: on shared limits the curves would coincide. U gets the upper
    # half of the panel, S_sphere the lower half.
    _stretch(ax, 1.1, 0.0, log=True)
    _stretch(twin, 0.0, 1.1, log=False)
    ax.legend(fontsize="small", loc="upper left")
    twin.legend(fontsize="small", loc="lower right")
    ax.set_title("Energy and sphere entropy vs temperature:\nstationary state is VMF")
    return ax


def panel_ideal_gas(table, *, ax=None):
    """Panel b, V1: the ideal gas law pV = RT, R = (d-1)/2.

    Fixed LR/ELR: stationary radius r* vs eta (eta_eff), one curve per lambda; theory r* =
    sqrt(T (d-1) / lambda) (eq. 12, 19). Fixed sphere: effective weight decay lambda_eff vs
    eta_eff, one curve per r; theory lambda_eff = T (d-1) / (2V) (eq. 84).
    """
    st, ax = stationary(table), axes_or_new(ax)
    sphere = st.protocol == "fixed-sphere"
    quantity = "lambda_eff" if sphere else "radius"
    rates, others, measured = pivot(st, quantity)
    slopes = _curves(ax, rates, others, measured, pivot(st, f"{quantity}_theory")[2],
                     cmap=CMAP_OTHER, level_label=st.names.other_label, log_y=True)
    symbol = r"\lambda_\mathrm{eff}" if sphere else "r^*"
    slope = (rf"slope $d\log {symbol}/d\log {st.names.rate}$: "
             f"theory {_slope_text(slopes[0])}, measured {_slope_text(slopes[1])}")
    ax.set_xlabel(f"{st.names.rate_label} (log scale)")
    if sphere:
        ax.set_ylabel(r"effective weight decay $\lambda_\mathrm{eff}$ (log scale)")
        ax.set_title(r"V1: pressure $\lambda_\mathrm{eff}=T(d-1)/(2V)$, $V=r^2/2$" + f"\n{slope}")
    else:
        ax.set_ylabel(r"stationary radius $r^*=\|w\|$ (log scale)")
        ax.set_title(r"V1: stationary radius $r^*=\sqrt{T(d-1)/\lambda}$" + f"\n{slope}")
    return ax


def _entropy_panel(table, ax, *, along_rate: bool):
    st, ax = stationary(table), axes_or_new(ax)
    names = st.names
    rates, others, measured = pivot(st, "entropy")
    predicted = pivot(st, "entropy_theory")[2]
    if along_rate:  # x: the rate; one curve per lambda (r)
        x, levels, cmap = rates, others, CMAP_OTHER
        x_label, level_label, x_symbol, fixed = (names.rate_label, names.other_label, names.rate,
                                                 names.other_symbol)
    else:  # x: lambda (r); one curve per rate
        x, levels, cmap, measured, predicted = others, rates, CMAP_RATE, measured.T, predicted.T
        x_label, level_label, x_symbol, fixed = (names.other_label, names.rate_label,
                                                 names.other_symbol, names.rate)
    slopes = _curves(ax, x, levels, measured, predicted, cmap=cmap, level_label=level_label,
                     log_y=False)
    ax.set_xlabel(f"{x_label} (log scale)")
    ax.set_ylabel(r"total entropy $S=S_\mathrm{sphere}+(d-1)\log r$ [nats]")
    ax.set_title(f"Total entropy vs ${x_symbol}$ at fixed ${fixed}$\n"
                 rf"slope $(\partial S/\partial\log {x_symbol})_{{{fixed}}}$: "
                 f"theory {_slope_text(slopes[0])}, measured {_slope_text(slopes[1])}")
    return ax


def panel_entropy_vs_lr(table, *, ax=None):
    """Panel c: total entropy S = S_sphere + (d-1) log r (eq. 28) vs eta (eta_eff), one curve per
    lambda (fixed sphere: per r). Low-T theory slopes: fixed LR (d-1)/2 (eq. 29), fixed ELR
    d-1, fixed sphere (d-1)/2."""
    return _entropy_panel(table, ax, along_rate=True)


def panel_entropy_vs_wd(table, *, ax=None):
    """Panel d: total entropy S vs lambda (fixed sphere: vs r), one curve per eta (eta_eff).
    Theory slopes: fixed LR 0, so fixed eta is an adiabat (eq. 29, 31); fixed ELR -(d-1)/2
    (eq. 85); fixed sphere d-1."""
    return _entropy_panel(table, ax, along_rate=False)



def fig_isotropic(analysis, *, fig: Figure | None = None) -> Figure:
    """Panels a-e of the paper's Figure 1, 3 or 4 (by the protocol) of an
    :class:`~thermosgd.analysis.sources.Analysis` (or its stationary table) as one figure."""
    table = getattr(analysis, "table", analysis)
    st = stationary(table)
    # Fixed margins, not constrained layout (its bounding-box passes took 2/3 of the drawing
    # time): a 2 x 2 block of curve panels and, right of it, a square-ish slot for the heatmaps.
    fig = fig if fig is not None else Figure(figsize=(22, 10.5))
    curves = fig.add_gridspec(2, 2, left=0.045, right=0.555, bottom=0.06, top=0.9, wspace=0.42,
                              hspace=0.36)
    heatmaps = fig.add_gridspec(1, 1, left=0.585, right=0.99, bottom=0.12, top=0.9)
    panels = [(panel_energy_entropy, curves[0, 0]), (panel_ideal_gas, curves[0, 1]),
              (panel_entropy_vs_lr, curves[1, 0]), (panel_entropy_vs_wd, curves[1, 1]),
              (panel_potential_minimum, heatmaps[0, 0])]
    for letter, (panel, spec) in zip("abcde", panels):
        ax = panel(table, ax=fig.add_subplot(spec))
        ax.set_title(f"({letter}) {ax.get_title()}", fontsize="medium")
    names = st.names
    fig.suptitle(
        f"Isotropic noise model, {names.title} (${names.rate}$, ${names.other_symbol}$): "
        f"$d={st.d}$, $\\sigma={st.sigma:g}$, {len(st.rates)} x {len(st.others)} grid"
        f", {st.n_seeds} seed(s), {st.n_diverged} diverged "
        "run(s). Points: measured; lines: theory.", fontsize="large")
    return fig

