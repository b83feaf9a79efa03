"""Figures of a network sweep: the content of the paper's Figures 2, 5-10, 12 and 13.

- :func:`fig_stationary` (Figures 2, 5-10): sigma^2, U = mean loss, T, V1 (r* measured against
  the SDE and the corrected prediction; on the sphere lambda_eff) over the rate, one curve per
  lambda (r), and the entropy over both axes with the quadratic fit of eq. 34 dashed.
- :func:`fig_radius_theories` (Figure 12): measured r* (lambda_eff) against the SDE and the
  appendix-G corrected predictions.
- :func:`fig_learning_curves` (Figure 13): train loss, radius, ||grad L||^2 and Tr Sigma over
  the iterations, one line per configuration.
Each is ``fig_<name>(analysis, *, fig=None) -> Figure`` on an
:class:`~thermosgd.analysis.sources.Analysis`; seeds are averaged by the one rule.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps, ticker
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from thermosgd.analysis.fits import quadratic_surface
from thermosgd.analysis.tables import seed_average
from thermosgd.report.plotting import log_norm, log_ticks
from thermosgd.results.schema import grid_axes

__all__ = ["fig_learning_curves", "fig_radius_theories", "fig_stationary"]

_CMAP = colormaps["viridis"]


def _names(protocol):
    rate = r"\eta" if protocol == "fixed-lr" else r"\eta_{\mathrm{eff}}"
    other = "r" if protocol == "fixed-sphere" else r"\lambda"
    return rate, other


def _by_level(ax, table, x, y, level, *, fit=None, log_y=True, line="-o", label=None):
    """One curve per value of ``level`` over ``x``, colored by it; ``fit`` dashed beside;
    a colorbar labelled ``label`` unless it is None."""
    levels = np.sort(table[level].unique())
    norm = log_norm(levels)
    for value in levels:
        rows = table[table[level] == value].sort_values(x)
        color = _CMAP(norm(value))
        ax.plot(rows[x], rows[y], line, color=color, ms=4, lw=1)
        if fit is not None:
            ax.plot(rows[x], fit(rows), "--", color=color, lw=1)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    if label is not None:
        ax.figure.colorbar(ScalarMappable(norm, _CMAP), ax=ax, pad=0.01, label=label)
    _grid_ticks(ax.xaxis, table[x].unique())
    return ax


def _grid_ticks(axis, values):
    """A short grid (the CPU-scale ones) gets a labelled tick per value: within a decade the
    default log ticks label overlapping minor ticks, or none. Long grids keep decade ticks."""
    values = np.sort(np.asarray(values, float))
    axis.set_minor_formatter(ticker.NullFormatter())
    if len(values) <= 8:
        axis.set_major_locator(ticker.FixedLocator(values))
        axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    else:
        log_ticks(axis)


def _title(analysis) -> str:
    setup = analysis.setup
    return (f"{analysis.name}: {setup.get('model')} k={setup.get('width')}, "
            f"{setup.get('dataset')}, {analysis.protocol}, d={setup.get('d')}")


def fig_stationary(analysis, *, fig: Figure | None = None) -> Figure:
    """Six panels of a sweep's stationary values (the layout of the paper's Figure 2)."""
    protocol = analysis.protocol
    table = seed_average(analysis.table)
    rate_col, other_col = grid_axes(protocol)
    rate, other = _names(protocol)
    if fig is None:
        fig = Figure(figsize=(17, 9.5), layout="constrained")
        fig.get_layout_engine().set(wspace=0.08)  # room between a colorbar and the next panel
    axes = fig.subplots(2, 3)
    coef = analysis.checks.get("V3", {}).get("table4", {}).get("coefficients")

    def smooth(rows, _coef=coef):
        return quadratic_surface(_coef, np.log(rows[rate_col].to_numpy(float)),
                                 np.log(rows[other_col].to_numpy(float)))

    fit = smooth if coef is not None else None
    panels = [("sigma2", r"$\sigma^2$", True), ("U", "U = mean train loss", True),
              ("temperature", "T", True)]
    for ax, (col, label, log_y) in zip(axes[0], panels):
        _by_level(ax, table, rate_col, col, other_col, log_y=log_y, label=f"${other}$")
        ax.set(xlabel=f"${rate}$", ylabel=label, title=label)
    ax = axes[1, 0]
    measured, sde, corrected = (("lambda_eff", "lambda_eff_theory", "lambda_eff_theory_corrected")
                                if protocol == "fixed-sphere"
                                else ("radius", "radius_theory", "radius_theory_corrected"))
    _by_level(ax, table, rate_col, measured, other_col, line="o", label=f"${other}$")
    _by_level(ax, table, rate_col, sde, other_col, line="-")
    _by_level(ax, table, rate_col, corrected, other_col, line=":")
    ax.legend(handles=[Line2D([], [], marker="o", ls="none", color="0.3", label="measured"),
                       Line2D([], [], color="0.3", label="SDE (eq. 12/20/84)"),
                       Line2D([], [], ls=":", color="0.3", label="corrected (app. G)")],
              fontsize="small")
    symbol = r"\lambda_{\mathrm{eff}}" if protocol == "fixed-sphere" else "r^*"
    ax.set(xlabel=f"${rate}$", ylabel=f"${symbol}$", title=f"V1: ${symbol}$, theory vs measured")
    ax = axes[1, 1]
    _by_level(ax, table, rate_col, "entropy", other_col, fit=fit, log_y=False, label=f"${other}$")
    ax.set(xlabel=f"${rate}$", ylabel="S", title=f"entropy over ${rate}$ (dashed: eq. 34 fit)")
    ax = axes[1, 2]
    _by_level(ax, table, other_col, "entropy", rate_col, fit=fit, log_y=False, label=f"${rate}$")
    ax.set(xlabel=f"${other}$", ylabel="S", title=f"entropy over ${other}$ (dashed: eq. 34 fit)")
    fig.suptitle(f"{_title(analysis)}; {len(table)} stationary grid points, "
                 f"{len(analysis.runs.get('converging', []))} runs still converging (left out)")
    return fig


def fig_radius_theories(analysis, *, fig: Figure | None = None) -> Figure:
    """Figure 12: measured against the SDE and the corrected prediction, one point per grid
    point."""
    table = seed_average(analysis.table)
    quantity = analysis.checks["V1"]["quantity"]
    measured = table[quantity]
    fig = fig or Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.add_subplot()
    sde, corrected = table[f"{quantity}_theory"], table[f"{quantity}_theory_corrected"]
    ax.scatter(sde, measured, s=22, label="SDE prediction", edgecolors="k",
               linewidths=0.3)
    ax.scatter(corrected, measured, s=22, marker="s",
               label="corrected prediction (appendix G)", edgecolors="k", linewidths=0.3)
    values = np.concatenate([measured, sde, corrected]).astype(float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size:
        span = [values.min() / 1.2, values.max() * 1.2]
        ax.plot(span, span, color="0.4", lw=1, label="equal")
    ax.set(xscale="log", yscale="log", xlabel="predicted", ylabel="measured",
           title=f"{analysis.name}: {quantity}, SDE against corrected")
    ax.legend(fontsize="small")
    return fig


def fig_learning_curves(analysis, *, fig: Figure | None = None) -> Figure:
    """Figure 13: learning curves of every run, colored by the rate."""
    metrics = analysis.metrics
    fig = fig or Figure(figsize=(15, 9), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    rate, _ = _names(analysis.protocol)
    rates = np.sort(metrics["learning_rate"].unique())
    norm = log_norm(rates)
    columns = [("train_loss", "train loss"), ("radius", "radius ||w||"),
               ("full_grad_norm2", r"$\|\nabla L(\bar w)\|^2$"),
               ("trace_cov", r"Tr $\Sigma_{\bar w}$")]
    for ax, (col, label) in zip(axes, columns):
        for _, run in metrics.groupby("run"):
            ax.plot(run["iteration"], run[col], color=_CMAP(norm(run["learning_rate"].iloc[0])),
                    lw=0.8, alpha=0.8)
        ax.set(xscale="log", yscale="log", xlabel="iteration", ylabel=label)
        # labels at 1, 2, 5 per decade only: short runs span under two decades, where the
        # default labels every minor tick and the labels overlap
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        log_ticks(ax.xaxis)
    fig.colorbar(ScalarMappable(norm, _CMAP), ax=axes.tolist(), label=f"${rate}$", pad=0.01)
    fig.suptitle(f"{analysis.name}: learning curves")
    return fig
