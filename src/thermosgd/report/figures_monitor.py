"""Figures of a monitored run, per layer: where each layer's norm and rms angle per step sit
against the predicted equilibrium over training, in which regime it is, and the union of the
scale-invariant groups (the paper's w) against its own prediction.

A ResNet has 20-60 weights and thousands of channel groups: lines per layer tangle beyond ten,
so the layers are the rows of a picture over the steps (a heatmap), coloured by log(r / r*) and
log(theta / theta*), white at equilibrium, red above, blue below. A layer split into channels is
the sum of its groups (:func:`thermosgd.analysis.monitor.with_layers`): its norm
sqrt(sum_g r_g^2), its angle the norm-weighted rms of its groups', the rotation of the layer as
a whole. A weight matrix that is not scale-invariant (marked ~) is predicted approximately.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from thermosgd.analysis.monitor import MIXED, layer_names, with_layers
from thermosgd.monitor.predictions import ANGLE_BAND, NORM_BAND, REGIMES

__all__ = ["SMOOTH", "fig_monitor", "layer_grid"]

SMOOTH = 5  # logs in the centred rolling mean drawn over the steps (one log's noise window
# holds a few steps: its Tr Sigma, hence r*, scatters from log to log)
RATIO_SPAN = 2.0  # the colour scale spans r/r* (and theta/theta*) from 1/2^2 to 2^2
SCATTER_SPAN = 6.0  # the last-state scatter widens to the data, at most 1/2^6 to 2^6
_DIVERGING = colormaps["RdBu_r"].with_extremes(bad="0.85")
REGIME_COLORS = {"equilibrium": "#1a9850", "scheduled": "#fdae61", "relaxing": "#abd9e9",
                 "converging": "#4575b4", "collapsing": "#d73027", "idle": "#762a83",
                 MIXED: "#bbbbbb", "": "#eeeeee"}


def _short(layer: str) -> str:
    return layer.removesuffix(".weight")


def layer_grid(metrics: pd.DataFrame) -> dict:
    """The layers x logs arrays the heatmaps draw: log2(r / r*) (appendix G), log2 of the
    norm-weighted rms angle over its prediction, each smoothed over ``SMOOTH`` logs (the norm
    ratio as the mean of its log, the angle as a rms), and the regime of every layer and log.
    Keys: layers (model order), steps, norm, angle (each (L, S)), regime (L, S), exact (L,)."""
    every = with_layers(metrics)
    rows = every[every["level"] == "layer"]
    layers = [n for n in layer_names(every) if n in set(rows["group"])]  # the model's order
    steps = np.sort(rows["step"].unique())

    def grid(column):
        return rows.pivot_table(index="group", columns="step", values=column, aggfunc="first",
                                dropna=False).reindex(index=layers, columns=steps)

    r, r_star = grid("norm").astype(float), grid("radius_theory_corrected").astype(float)
    theta, theta_star = grid("angular_update").astype(float), grid(
        "angular_update_theory").astype(float)
    def smooth(frame):  # (L, S) -> rolling over the steps
        return frame.T.rolling(SMOOTH, center=True, min_periods=1).mean().T

    with np.errstate(divide="ignore", invalid="ignore"):
        norm = smooth(np.log2(r / r_star))
        angle = 0.5 * np.log2(smooth(r**2 * theta**2) / smooth(r**2 * theta_star**2))
    regime = rows.pivot_table(index="group", columns="step", values="regime", aggfunc="first",
                              dropna=False).reindex(index=layers, columns=steps)
    exact = rows.groupby("group")["scale_invariant"].last().reindex(layers).astype(bool)
    return {"layers": layers, "steps": steps, "norm": norm.to_numpy(float),
            "angle": angle.to_numpy(float), "regime": regime.fillna("").to_numpy(object),
            "exact": exact.to_numpy(bool)}


def _edges(steps: np.ndarray) -> np.ndarray:
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - mid[0]], mid, [2 * steps[-1] - mid[-1]]])


def _labels(ax, grid, show: bool) -> None:
    n = len(grid["layers"])
    ax.set_yticks(np.arange(n))
    if show:
        size = 8 if n <= 25 else 7 if n <= 40 else 6
        ax.set_yticklabels([_short(name) + ("" if exact else " ~")
                            for name, exact in zip(grid["layers"], grid["exact"])],
                           fontsize=size)
    else:
        ax.set_yticklabels([])
    ax.set_ylim(n - 0.5, -0.5)  # the first layer on top, as the model reads
    ax.set_xlabel("step")


def _heatmap(ax, grid, key, title, band, show_labels):
    values = np.ma.masked_invalid(grid[key])
    y = np.arange(len(grid["layers"]) + 1) - 0.5
    mesh = ax.pcolormesh(_edges(grid["steps"].astype(float)), y, values, cmap=_DIVERGING,
                         norm=colors.Normalize(-RATIO_SPAN, RATIO_SPAN), shading="flat")
    _labels(ax, grid, show_labels)
    ax.set_title(f"{title}\n(white: equilibrium band ±{100 * (np.exp(band) - 1):.0f} %; "
                 "grey: no prediction)", fontsize=9)
    return mesh


def _ratio_bar(fig, mesh, ax, symbol, height):
    ticks = np.arange(-RATIO_SPAN, RATIO_SPAN + 1)
    bar = fig.colorbar(mesh, ax=ax, ticks=ticks, shrink=min(0.9, 3.5 / height), pad=0.01)
    bar.ax.set_yticklabels([f"{2.0**t:g}" if t >= 0 else f"1/{2.0**-t:g}" for t in ticks])
    bar.set_label(symbol)


def _regimes(ax, grid, show_labels):
    found = [r for r in (*REGIMES, MIXED, "") if (grid["regime"] == r).any()]
    found += sorted({r for r in grid["regime"].ravel()} - set(found))
    codes = {r: k for k, r in enumerate(found)}
    image = np.vectorize(lambda r: codes[r], otypes=[float])(grid["regime"]) if found else \
        np.zeros(grid["regime"].shape)
    cmap = colors.ListedColormap([REGIME_COLORS.get(r, "#999999") for r in found] or ["#eee"])
    y = np.arange(len(grid["layers"]) + 1) - 0.5
    ax.pcolormesh(_edges(grid["steps"].astype(float)), y, image, cmap=cmap,
                  norm=colors.BoundaryNorm(np.arange(len(found) + 1) - 0.5, max(len(found), 1)),
                  shading="flat")
    _labels(ax, grid, show_labels)
    ax.set_title("regime at each log", fontsize=9)
    ax.legend(handles=[Patch(color=REGIME_COLORS.get(r, "#999999"),
                             label=r or "no prediction") for r in found],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _union(ax, metrics, column, theory, ylabel, rms):
    union = metrics[metrics["group"] == "all"].sort_values("step")
    if union.empty or not np.isfinite(union[column].astype(float)).any():
        ax.text(0.5, 0.5, "no scale-invariant group", ha="center", transform=ax.transAxes)
        return
    window = {"window": SMOOTH, "center": True, "min_periods": 1}
    r2 = union["norm"].astype(float) ** 2 if rms else 1.0
    frame = union[[column, theory]].astype(float) ** (2 if rms else 1)
    smooth = frame.mul(r2, axis=0).rolling(**window).mean()
    if rms:
        smooth = np.sqrt(smooth.div(pd.Series(r2).rolling(**window).mean(), axis=0))
    ax.plot(union["step"], smooth[column], "-", color="k", lw=1.4, label="measured")
    ax.plot(union["step"], smooth[theory], "--", color="C3", lw=1.2, label="predicted")
    values = smooth.to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    wide = values.size and values.max() > 3 * values.min()  # a log axis for a wide range only
    ax.set(xlabel="step", ylabel=ylabel, yscale="log" if wide else "linear")
    if not wide and values.size:
        ax.set_ylim(0, 1.15 * values.max())
    ax.legend(fontsize=8, loc="best")


def _end_state(ax, grid):
    """Each layer's last smoothed (log2 r/r*, log2 theta/theta*), coloured by its regime; the
    box is the equilibrium band. The axes widen to the data (up to 2^SCATTER_SPAN either way);
    a point beyond is drawn on the edge as a triangle and counted in the corner."""
    if not grid["layers"]:
        return
    x, y = grid["norm"][:, -1], grid["angle"][:, -1]
    regime = grid["regime"][:, -1]
    finite = np.abs(np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]]))
    span = float(np.clip(np.ceil(finite.max()) if finite.size else RATIO_SPAN, RATIO_SPAN,
                         SCATTER_SPAN))
    cx, cy = np.clip(x, -span, span), np.clip(y, -span, span)
    beyond = (np.abs(x) > span) | (np.abs(y) > span)
    colors = np.array([REGIME_COLORS.get(r, "#999999") for r in regime], dtype=object)
    for mask, marker in ((~beyond, "o"), (beyond, "^")):
        if mask.any():
            ax.scatter(cx[mask], cy[mask], s=18, c=list(colors[mask]), marker=marker,
                       edgecolors="k", linewidths=0.3, zorder=3)
    if beyond.any():
        ax.text(0.02, 0.98, f"{int(beyond.sum())} beyond the axes (triangles)",
                transform=ax.transAxes, fontsize=7, va="top")
    nb, ab = NORM_BAND / np.log(2), ANGLE_BAND / np.log(2)
    ax.add_patch(Rectangle((-nb, -ab), 2 * nb, 2 * ab, fill=False, ec="#1a9850", lw=1.2))
    named = []  # the farthest few layers by name, one name per crowd of points
    for k in np.argsort(-np.nan_to_num(np.hypot(x, y), nan=-1))[:12]:
        at = np.array([cx[k], cy[k]])
        if (len(named) < 6 and np.isfinite(at).all() and np.hypot(x[k], y[k]) > 2 * nb
                and all(np.hypot(*(at - b)) > 0.15 * span for b in named)):
            named.append(at)
            ax.annotate(_short(grid["layers"][k]), tuple(at), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    step = 1 if span <= 3 else 2
    ticks = np.arange(-span, span + 1, step)
    names = [f"{2.0**t:g}" if t >= 0 else f"1/{2.0**-t:g}" for t in ticks]
    ax.set(xlim=(-span - 0.2, span + 0.2), ylim=(-span - 0.2, span + 0.2),
           xticks=ticks, yticks=ticks, xticklabels=names, yticklabels=names,
           xlabel="r / r* at the last log", ylabel="rms angle / predicted, last log")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)


def fig_monitor(analysis, *, fig: Figure | None = None) -> Figure:
    """Three heatmaps, layers x steps: r / r* (appendix G), rms angle per step over its
    prediction, the regime; below, the union's norm and rms angle against their predictions
    over the steps and every layer's last state against the equilibrium band."""
    metrics = analysis.metrics
    grid = layer_grid(metrics)
    n = max(len(grid["layers"]), 1)
    top = max(2.6, 0.2 * n + 1.2)  # inches: a readable row per layer up to 60 layers
    fig = fig or Figure(figsize=(17, top + 3.6), layout="constrained")
    sub = fig.add_gridspec(2, 3, height_ratios=[top, 3.6], width_ratios=[1.15, 1, 1.05])
    norm_ax, angle_ax, regime_ax = (fig.add_subplot(sub[0, k]) for k in range(3))
    mesh = _heatmap(norm_ax, grid, "norm", "norm over its prediction, r / r* (appendix G)",
                    NORM_BAND, True)
    _ratio_bar(fig, mesh, norm_ax, "r / r*", top)
    mesh = _heatmap(angle_ax, grid, "angle", "rms angle per step over its prediction",
                    ANGLE_BAND, False)
    _ratio_bar(fig, mesh, angle_ax, "θ / θ*", top)
    _regimes(regime_ax, grid, False)
    _union(fig.add_subplot(sub[1, 0]), metrics, "norm", "radius_theory_corrected",
           "union 'all': norm |w| and r*", rms=False)
    _union(fig.add_subplot(sub[1, 1]), metrics, "angular_update", "angular_update_theory",
           "union 'all': rms angle per step (rad)", rms=True)
    _end_state(fig.add_subplot(sub[1, 2]), grid)
    name = Path(analysis.figure_dir).parent.name if analysis.figure_dir else analysis.name
    fig.suptitle(f"{name}: {len(grid['layers'])} layers against their equilibrium (rolling "
                 f"{SMOOTH} logs; ~ a weight matrix that is not scale-invariant, predicted "
                 "approximately)")
    return fig
