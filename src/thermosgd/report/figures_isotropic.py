"""Figures of the isotropic noise model: the panels of the paper's Figures 1, 3 and 4.

Every panel is ``fig_<name>(table, ax=None)``: it takes the stationary table of one protocol
(``DIR/<protocol>/stationary.csv``, one row per grid point and seed) and returns the Axes it drew
on. Seeds are averaged per grid point; diverged runs drop out of the measured columns (holes).

- a :func:`fig_energy_entropy`     U and S_sphere vs T: exact VMF (eq. 103), low T (eq. 106-107)
- b :func:`fig_ideal_gas`          V1: r* vs eta per lambda; fixed sphere: lambda_eff vs eta_eff
                                   per r (eq. 12, 19, 84)
- c :func:`fig_entropy_vs_lr`      total entropy S vs eta (eta_eff), one curve per lambda (r)
- d :func:`fig_entropy_vs_wd`      S vs lambda (fixed sphere: vs r), one curve per eta (eta_eff)
- e :func:`fig_potential_minimum`  V2: G = U - T*S + p*V (sphere: F = U - T*S) is minimal at
                                   the state whose own hyperparameters set T*, p* (eq. 22)

:func:`figure_isotropic` composes a-e into one PNG per protocol. Only the object-oriented Figure
API is used (no pyplot): no display, no global figure registry to leak into.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors, ticker
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from thermosgd import theory

__all__ = ["draw_isotropic", "fig_energy_entropy", "fig_entropy_vs_lr", "fig_entropy_vs_wd",
           "fig_ideal_gas", "fig_potential_minimum", "figure_isotropic", "save_figure"]


@dataclass(frozen=True)
class _Names:
    """How a protocol's axes are labelled (symbols are mathtext)."""

    title: str
    rate: str  # eta or eta_eff
    other: str  # column of the second hyperparameter: "wd" or "radius_target"
    other_symbol: str  # lambda or r
    other_name: str
    temperature: str  # the protocol's T

    @property
    def rate_label(self):
        return f"{'effective ' if 'eff' in self.rate else ''}learning rate ${self.rate}$"

    @property
    def other_label(self):
        return f"{self.other_name} ${self.other_symbol}$"


_ETA_EFF, _T_EFF = r"\eta_\mathrm{eff}", r"T=\eta_\mathrm{eff}\sigma^2/2"
_PROTOCOLS = {
    "fixed-lr": _Names("fixed LR", r"\eta", "wd", r"\lambda", "weight decay",
                       r"T=\sqrt{\eta\lambda\sigma^2/(2(d-1))}"),
    "fixed-elr": _Names("fixed ELR", _ETA_EFF, "wd", r"\lambda", "weight decay", _T_EFF),
    "fixed-sphere": _Names("fixed sphere", _ETA_EFF, "radius_target", "r", "sphere radius", _T_EFF),
}
# Measured by the simulator; grid, T and theory columns are known even where a run diverged.
_MEASURED = ["radius", "U", "entropy_sphere", "entropy", "volume", "lambda_eff"]
# Truncated maps: their bright yellow ends vanish on a white background.
_CMAP_OTHER = colors.ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.88, 256)))
_CMAP_RATE = colors.ListedColormap(matplotlib.colormaps["plasma"](np.linspace(0, 0.85, 256)))
_CMAP_HEAT = matplotlib.colormaps["magma"].with_extremes(bad="0.8")
_C_U, _C_S = "tab:blue", "tab:red"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_SQUARE = {"marker": "s", "ms": 5, "mfc": "none", "mec": "white", "mew": 1.3, "ls": "none"}


@dataclass(frozen=True)
class _Stationary:
    protocol: str
    names: _Names
    d: int
    sigma: float
    n_seeds: int
    n_diverged: int
    mean: pd.DataFrame  # one row per grid point, averaged over seeds


def _stationary(table: pd.DataFrame) -> _Stationary:
    if len(table) == 0:
        raise ValueError("the stationary table is empty")
    protocols = pd.unique(table["protocol"])
    if len(protocols) != 1 or protocols[0] not in _PROTOCOLS:
        raise ValueError(f"expected one protocol out of {sorted(_PROTOCOLS)}, got {list(protocols)}")
    protocol = str(protocols[0])
    keys = ["lr", _PROTOCOLS[protocol].other]
    for column in ("d", "sigma"):
        if table[column].nunique() != 1:
            raise ValueError(f"the table mixes several values of {column!r}; filter it first")
    # bool from the simulator, "True"/"False" strings or 0/1 from a CSV written elsewhere
    diverged = table.get("diverged", pd.Series(False, index=table.index))
    diverged = diverged.astype(str).str.strip().str.lower().isin({"true", "1", "1.0"})
    numeric = table.drop(columns=["protocol", "diverged", "seed"], errors="ignore")
    numeric = numeric.select_dtypes("number")
    mean = numeric.groupby(keys).mean()
    measured = [c for c in _MEASURED + ["pressure"] * (protocol == "fixed-sphere") if c in numeric]
    converged = numeric.loc[~diverged.to_numpy()].groupby(keys)[measured].mean()
    mean[measured] = converged.reindex(mean.index)
    return _Stationary(protocol, _PROTOCOLS[protocol], int(table["d"].iloc[0]),
                       float(table["sigma"].iloc[0]), int(table.get("seed", pd.Series([0])).nunique()),
                       int(diverged.sum()), mean.reset_index())


def _pivot(st: _Stationary, column: str):
    """(rates, others, values) with values of shape (n_others, n_rates): rows are lambda or r."""
    grid = st.mean.pivot(index=st.names.other, columns="lr", values=column)
    grid = grid.sort_index().sort_index(axis=1)
    return grid.columns.to_numpy(float), grid.index.to_numpy(float), grid.to_numpy(float)


def _axes(ax, size=(5.5, 4.5)):
    return Figure(figsize=size, layout="constrained").add_subplot() if ax is None else ax


def _power(value, _=None):
    """Tick label 10⁻² in Unicode, not mathtext: parsing ~100 math labels per figure would be
    most of the drawing time."""
    exponent = np.log10(value) if value > 0 else np.nan
    if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9:
        return "10" + f"{round(exponent)}".translate(_SUPERSCRIPT)
    return f"{value:g}"


def _log_ticks(*axes):
    for axis in axes:
        axis.set_major_formatter(ticker.FuncFormatter(_power))


def _log_norm(levels):
    low, high = float(np.nanmin(levels)), float(np.nanmax(levels))
    return colors.LogNorm(low / 1.5, high * 1.5) if low == high else colors.LogNorm(low, high)


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
    norm = _log_norm(levels)
    for level, y_measured, y_theory in zip(levels, measured, predicted):
        color = cmap(norm(level))
        ax.plot(x, y_theory, color=color, lw=1.2, alpha=0.9)
        ax.scatter(x, y_measured, color=color, s=16, zorder=3, edgecolors="k", linewidths=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log" if log_y else "linear")
    colorbar = ax.figure.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"color: {level_label}",
                                  pad=0.01)
    _log_ticks(ax.xaxis, colorbar.ax.yaxis, *[ax.yaxis] * log_y)
    _stretch(ax, 0.0, 0.14, log=log_y)  # a band on top where the legend hides no data
    ax.legend(handles=[
        Line2D([], [], color="0.35", marker="o", ls="none", mec="k", ms=5,
               label="measured (mean over seeds)"),
        Line2D([], [], color="0.35", lw=1.2, label="theory"),
    ], fontsize="small", loc="upper center", ncol=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        coords = [np.log(np.where(y > 0, y, np.nan)) if log_y else y for y in (predicted, measured)]
    return _slope(np.log(x), coords[0]), _slope(np.log(x), coords[1])


def fig_energy_entropy(table: pd.DataFrame, ax=None):
    """Panel a: mean loss U (left axis) and unit-sphere entropy S_sphere (right, twin axis) vs T.

    Points are measured; solid lines the exact VMF U = 1 - A_d(1/T), S = -log C_d(1/T) -
    A_d(1/T)/T (eq. 103); dashed the low-temperature U = (d-1)T/2, S = (d-1)/2 log(2 pi e T)
    (eq. 106-107).
    """
    st, ax = _stationary(table), _axes(ax)
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
    _log_ticks(ax.xaxis, ax.yaxis)
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


def fig_ideal_gas(table: pd.DataFrame, ax=None):
    """Panel b, V1: the ideal gas law pV = RT, R = (d-1)/2.

    Fixed LR/ELR: stationary radius r* vs eta (eta_eff), one curve per lambda; theory r* =
    sqrt(T (d-1) / lambda) (eq. 12, 19). Fixed sphere: effective weight decay lambda_eff vs
    eta_eff, one curve per r; theory lambda_eff = T (d-1) / (2V) (eq. 84).
    """
    st, ax = _stationary(table), _axes(ax)
    sphere = st.protocol == "fixed-sphere"
    quantity = "lambda_eff" if sphere else "radius"
    rates, others, measured = _pivot(st, quantity)
    slopes = _curves(ax, rates, others, measured, _pivot(st, f"{quantity}_theory")[2],
                     cmap=_CMAP_OTHER, level_label=st.names.other_label, log_y=True)
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
    st, ax = _stationary(table), _axes(ax)
    names = st.names
    rates, others, measured = _pivot(st, "entropy")
    predicted = _pivot(st, "entropy_theory")[2]
    if along_rate:  # x: the rate; one curve per lambda (r)
        x, levels, cmap = rates, others, _CMAP_OTHER
        x_label, level_label, x_symbol, fixed = (names.rate_label, names.other_label, names.rate,
                                                 names.other_symbol)
    else:  # x: lambda (r); one curve per rate
        x, levels, cmap, measured, predicted = others, rates, _CMAP_RATE, measured.T, predicted.T
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


def fig_entropy_vs_lr(table: pd.DataFrame, ax=None):
    """Panel c: total entropy S = S_sphere + (d-1) log r (eq. 28) vs eta (eta_eff), one curve per
    lambda (fixed sphere: per r). Low-T theory slopes: fixed LR (d-1)/2 (eq. 29), fixed ELR
    d-1, fixed sphere (d-1)/2."""
    return _entropy_panel(table, ax, along_rate=True)


def fig_entropy_vs_wd(table: pd.DataFrame, ax=None):
    """Panel d: total entropy S vs lambda (fixed sphere: vs r), one curve per eta (eta_eff).
    Theory slopes: fixed LR 0, so fixed eta is an adiabat (eq. 29, 31); fixed ELR -(d-1)/2
    (eq. 85); fixed sphere d-1."""
    return _entropy_panel(table, ax, along_rate=False)


def _indexed(symbol):
    """eta -> eta_i, eta_eff -> eta_{eff,i} (mathtext has no double subscripts)."""
    return symbol.replace(r"_\mathrm{eff}", r"_{\mathrm{eff},i}") if "eff" in symbol else symbol + "_i"


def _interior_picks(n, k):
    return np.unique(np.round(np.linspace(0, n - 1, k + 2)[1:-1]).astype(int)) if n > k else np.arange(n)


def _shifted(values, axis=None):
    """(values - min, argmin, all-NaN mask) along axis, ignoring NaN without All-NaN warnings,
    then scaled by the largest shifted value so that every heatmap spans [0, 1]."""
    filled = np.where(np.isnan(values), np.inf, values)
    low = filled.min(axis=axis, keepdims=axis is not None)
    empty = np.isinf(low)
    shifted = values - np.where(empty, np.nan, low)
    top = np.nanmax(shifted) if np.isfinite(shifted).any() else 0.0
    return (shifted / top if top > 0 else shifted), filled.argmin(axis=axis), empty


def _insets(ax, n, n_cols):
    """``n`` square heatmap Axes inside ``ax`` (whose frame is hidden), row by row.

    Yields (inset, first_col, last_row): only the outer insets get tick labels.
    """
    ax.set_frame_on(False)
    ax.set(xticks=[], yticks=[])
    n_rows = -(-n // n_cols)
    left, bottom, gap = 0.07, 0.04, 0.05
    width, height = (1 - left - gap * (n_cols - 1)) / n_cols, (1 - bottom - gap * n_rows) / n_rows
    for k in range(n):
        row, col = divmod(k, n_cols)
        box = [left + col * (width + gap), 1 - (row + 1) * (height + gap), width, height]
        inset = ax.inset_axes(box)
        # The margins above leave room for tick labels and titles; keeping the insets out of
        # constrained layout's bounding boxes halves the drawing time.
        inset.set_in_layout(False)
        yield inset, col == 0, k + n_cols >= n


def _heatmap(inset, lx, ly, values, *, first_col, last_row, norm):
    """Draw values (len(ly), len(lx)) on log10 axes, cells centred on the grid points."""
    half_x = (lx[1] - lx[0]) / 2 if len(lx) > 1 else 0.5
    half_y = (ly[1] - ly[0]) / 2 if len(ly) > 1 else 0.5
    inset.imshow(values, origin="lower", aspect="auto", cmap=_CMAP_HEAT, norm=norm,
                 interpolation="nearest",
                 extent=(lx[0] - half_x, lx[-1] + half_x, ly[0] - half_y, ly[-1] + half_y))
    inset.set_box_aspect(1)
    power = ticker.FuncFormatter(lambda v, _: _power(10.0**v))  # the axes are in log10 units
    for axis in (inset.xaxis, inset.yaxis):
        axis.set_major_locator(ticker.MultipleLocator(1))
        axis.set_major_formatter(power)
    inset.tick_params(labelsize=8, labelbottom=last_row, labelleft=first_col, length=2)


def _gibbs_heatmaps(ax, st, n_picks, norm):
    """Fixed LR/ELR: per chosen (eta*, lambda*), G_i - min G over all states i of the grid."""
    rate, other = st.names.rate, st.names.other_symbol
    rates, others, energy = _pivot(st, "U")  # (n_lambda, n_eta)
    entropy, volume_ = _pivot(st, "entropy")[2], _pivot(st, "volume")[2]
    temperature, pressure = _pivot(st, "temperature")[2], _pivot(st, "pressure")[2]
    lx, ly = np.log10(rates), np.log10(others)
    cols = _interior_picks(len(rates), n_picks)
    rows = _interior_picks(len(others), n_picks)[::-1]  # top row: the largest lambda
    insets = _insets(ax, len(rows) * len(cols), len(cols))
    for (inset, first_col, last_row), (b, a) in zip(insets, itertools.product(rows, cols)):
        # every stationary state judged at the chosen point's T* and p* (eq. 22)
        values, best, empty = _shifted(energy - temperature[b, a] * entropy + pressure[b, a] * volume_)
        _heatmap(inset, lx, ly, values, first_col=first_col, last_row=last_row, norm=norm)
        if not empty:
            i, j = np.unravel_index(best, values.shape)
            inset.plot(lx[j], ly[i], **_SQUARE)
        inset.plot(lx[a], ly[b], "o", ms=9, mfc="none", mec="red", mew=1.6)
        inset.set_title(f"${rate}^*={rates[a]:.2g}$, ${other}^*={others[b]:.2g}$", fontsize=7, pad=2)
    ax.set_xlabel(rf"state $i$: ${_indexed(rate)}$ (log scale)", labelpad=2)
    ax.set_ylabel(rf"state $i$: ${_indexed(other)}$ (log scale)", labelpad=2)
    ax.set_title(r"Gibbs energy $G_i=U_i-T^*S_i+p^*V_i$ (V2) is minimal at the observed state"
                 "\n(grey cells: missing or diverged)", fontsize="medium")
    return r"$(G_i-\min_i G_i)$ / its max", [
        Line2D([], [], color="w", marker="o", ms=8, mfc="none", mec="red", mew=1.6, ls="none",
               label=rf"chosen $({rate}^*,{other}^*)$: sets $T^*$, $p^*={other}^*$"),
        Line2D([], [], color="0.3", label=r"$\arg\min_i G_i$", **{**_SQUARE, "mec": "k"}),
    ]


def _helmholtz_heatmaps(ax, st, n_picks, norm):
    """Fixed sphere: per picked radius, F_ij - min_i F_ij for state i at the T*_j of column j."""
    rate = st.names.rate
    rates, radii, energy = _pivot(st, "U")  # (n_r, n_eta)
    entropy, temperature = _pivot(st, "entropy")[2], _pivot(st, "temperature")[2]
    lx = np.log10(rates)
    picks = np.unique(np.round(np.linspace(0, len(radii) - 1, min(n_picks, len(radii)))))
    insets = _insets(ax, len(picks), int(np.ceil(np.sqrt(len(picks)))))
    for (inset, first_col, last_row), b in zip(insets, picks.astype(int)):
        free = energy[b][:, None] - temperature[b][None, :] * entropy[b][:, None]  # (i, j)
        values, best, empty = _shifted(free, axis=0)
        _heatmap(inset, lx, lx, values, first_col=first_col, last_row=last_row, norm=norm)
        inset.plot(lx[[0, -1]], lx[[0, -1]], color="cyan", lw=1, ls=":")
        keep = ~empty.ravel()
        inset.plot(lx[keep], lx[best[keep]], **_SQUARE)
        inset.set_title(f"$r={radii[b]:.3g}$", fontsize=8)
    ax.set_xlabel(rf"${rate}^*$ that sets $T^*$ (log scale)", labelpad=2)
    ax.set_ylabel(rf"stationary state $i$: its ${_indexed(rate)}$", labelpad=2)
    ax.set_title(r"Helmholtz energy $F_i=U_i-T^*S_i$ (V2) is minimal at the observed state"
                 "\n(grey cells: missing or diverged)", fontsize="medium")
    return r"$(F_i-\min_i F_i)$ per column, / its max", [
        Line2D([], [], color="0.3", label=r"$\arg\min_i F_i$ per column", **{**_SQUARE, "mec": "k"}),
        Line2D([], [], color="cyan", ls=":", label="ideal: the diagonal (state at its own $T^*$)"),
    ]


def fig_potential_minimum(table: pd.DataFrame, ax=None, *, n_picks: int | None = None):
    """Panel e, V2: stationary states minimize G (fixed LR/ELR) or F (fixed sphere), eq. 22.

    Fixed LR/ELR: an n_picks x n_picks grid (default 3 x 3) of heatmaps, one per chosen
    (eta*, lambda*) (red circle), of G_i - min_i G_i over the (eta_i, lambda_i) grid with
    G_i = U_i - T* S_i + p* V_i; the white square is the argmin. Fixed sphere: one heatmap per
    picked radius r (default 4) of F_ij - min_i F_ij with F_ij = U_i - T*_j S_i (x: eta*_j that
    sets T*, y: state eta_i); white squares are the argmin per column and should lie on the
    diagonal. Each heatmap is scaled by its own maximum. The heatmaps are ``ax.child_axes``.
    """
    st, ax = _stationary(table), _axes(ax, (9.5, 9))
    norm = colors.PowerNorm(0.5, vmin=0.0, vmax=1.0)
    if st.protocol == "fixed-sphere":
        label, legend = _helmholtz_heatmaps(ax, st, n_picks or 4, norm)
    else:
        label, legend = _gibbs_heatmaps(ax, st, n_picks or 3, norm)
    ax.figure.colorbar(ScalarMappable(norm, _CMAP_HEAT), ax=ax, label=f"{label} (sqrt scale)",
                       shrink=0.7, pad=0.01)
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2,
              fontsize="small", frameon=False)
    return ax


def figure_isotropic(table: pd.DataFrame, path) -> Path:
    """Compose panels a-e for one protocol into one PNG at ``path`` (written atomically)."""
    return save_figure(draw_isotropic(table), path)


def draw_isotropic(table: pd.DataFrame) -> Figure:
    """Panels a-e of the paper's Figure 1, 3 or 4 (by the table's protocol) as one figure."""
    st = _stationary(table)
    # Fixed margins, not constrained layout (its bounding-box passes took 2/3 of the drawing
    # time): a 2 x 2 block of curve panels and, right of it, a square-ish slot for the heatmaps.
    fig = Figure(figsize=(22, 10.5))
    curves = fig.add_gridspec(2, 2, left=0.045, right=0.555, bottom=0.06, top=0.9, wspace=0.42,
                              hspace=0.36)
    heatmaps = fig.add_gridspec(1, 1, left=0.585, right=0.99, bottom=0.12, top=0.9)
    panels = [(fig_energy_entropy, curves[0, 0]), (fig_ideal_gas, curves[0, 1]),
              (fig_entropy_vs_lr, curves[1, 0]), (fig_entropy_vs_wd, curves[1, 1]),
              (fig_potential_minimum, heatmaps[0, 0])]
    for letter, (panel, spec) in zip("abcde", panels):
        ax = panel(table, fig.add_subplot(spec))
        ax.set_title(f"({letter}) {ax.get_title()}", fontsize="medium")
    names, mean = st.names, st.mean
    fig.suptitle(
        f"Isotropic noise model, {names.title} (${names.rate}$, ${names.other_symbol}$): "
        f"$d={st.d}$, $\\sigma={st.sigma:g}$, {mean['lr'].nunique()} x "
        f"{mean[names.other].nunique()} grid, {st.n_seeds} seed(s), {st.n_diverged} diverged "
        "run(s). Points: measured; lines: theory.", fontsize="large")
    return fig


def save_figure(fig: Figure, path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file in the same folder, then os.replace),
    so that a reader never sees a half-written image. The format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            fig.savefig(stream, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; figures are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
