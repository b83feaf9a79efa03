"""Panel e of the isotropic figures, V2 (eq. 22): stationary states minimize the Gibbs energy
G = U - T S + p V (fixed LR/ELR) or the Helmholtz energy F = U - T S (fixed sphere)."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib import colors, ticker
from matplotlib.cm import ScalarMappable
from matplotlib.lines import Line2D

from thermosgd.report.plotting import CMAP_HEAT, axes_or_new, pivot, power, stationary

__all__ = ["panel_potential_minimum"]

_SQUARE = {"marker": "s", "ms": 5, "mfc": "none", "mec": "white", "mew": 1.3, "ls": "none"}


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
    inset.imshow(values, origin="lower", aspect="auto", cmap=CMAP_HEAT, norm=norm,
                 interpolation="nearest",
                 extent=(lx[0] - half_x, lx[-1] + half_x, ly[0] - half_y, ly[-1] + half_y))
    inset.set_box_aspect(1)
    decades = ticker.FuncFormatter(lambda v, _: power(10.0**v))  # the axes are in log10 units
    for axis in (inset.xaxis, inset.yaxis):
        axis.set_major_locator(ticker.MultipleLocator(1))
        axis.set_major_formatter(decades)
    inset.tick_params(labelsize=8, labelbottom=last_row, labelleft=first_col, length=2)


def _gibbs_heatmaps(ax, st, n_picks, norm):
    """Fixed LR/ELR: per chosen (eta*, lambda*), G_i - min G over all states i of the grid."""
    rate, other = st.names.rate, st.names.other_symbol
    rates, others, energy = pivot(st, "U")  # (n_lambda, n_eta)
    entropy, volume_ = pivot(st, "entropy")[2], pivot(st, "volume")[2]
    temperature, pressure = pivot(st, "temperature")[2], pivot(st, "pressure")[2]
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
    rates, radii, energy = pivot(st, "U")  # (n_r, n_eta)
    entropy, temperature = pivot(st, "entropy")[2], pivot(st, "temperature")[2]
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


def panel_potential_minimum(table, *, ax=None, n_picks: int | None = None):
    """Panel e, V2: stationary states minimize G (fixed LR/ELR) or F (fixed sphere), eq. 22.

    Fixed LR/ELR: an n_picks x n_picks grid (default 3 x 3) of heatmaps, one per chosen
    (eta*, lambda*) (red circle), of G_i - min_i G_i over the (eta_i, lambda_i) grid with
    G_i = U_i - T* S_i + p* V_i; the white square is the argmin. Fixed sphere: one heatmap per
    picked radius r (default 4) of F_ij - min_i F_ij with F_ij = U_i - T*_j S_i (x: eta*_j that
    sets T*, y: state eta_i); white squares are the argmin per column and should lie on the
    diagonal. Each heatmap is scaled by its own maximum. The heatmaps are ``ax.child_axes``.
    """
    st, ax = stationary(table), axes_or_new(ax, (9.5, 9))
    norm = colors.PowerNorm(0.5, vmin=0.0, vmax=1.0)
    if st.protocol == "fixed-sphere":
        label, legend = _helmholtz_heatmaps(ax, st, n_picks or 4, norm)
    else:
        label, legend = _gibbs_heatmaps(ax, st, n_picks or 3, norm)
    ax.figure.colorbar(ScalarMappable(norm, CMAP_HEAT), ax=ax, label=f"{label} (sqrt scale)",
                       shrink=0.7, pad=0.01)
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2,
              fontsize="small", frameon=False)
    return ax

