"""What every figure shares: a protocol's axis names, the seed-averaged grid (the rule of
:func:`thermosgd.analysis.tables.seed_average`), log ticks, colour maps and the atomic writer.
Only the object-oriented Figure API is used (no pyplot): no display, no global registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from thermosgd.analysis.tables import seed_average
from thermosgd.results import io
from thermosgd.results.compat import upgrade_stationary
from thermosgd.results.schema import grid_axes

__all__ = ["Stationary", "log_norm", "log_ticks", "pivot", "save_figure", "stationary"]


@dataclass(frozen=True)
class Names:
    """How a protocol's axes are labelled (symbols are mathtext)."""

    title: str
    rate: str  # eta or eta_eff
    other: str  # column of the second hyperparameter: weight_decay or sphere_radius
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
PROTOCOLS = {
    "fixed-lr": Names("fixed LR", r"\eta", "weight_decay", r"\lambda", "weight decay",
                       r"T=\sqrt{\eta\lambda\sigma^2/(2(d-1))}"),
    "fixed-elr": Names("fixed ELR", _ETA_EFF, "weight_decay", r"\lambda", "weight decay", _T_EFF),
    "fixed-sphere": Names("fixed sphere", _ETA_EFF, "sphere_radius", "r", "sphere radius", _T_EFF),
}
# Measured by the simulator; grid, T and theory columns are known even where a run diverged.
CMAP_OTHER = colors.ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.88, 256)))
CMAP_RATE = colors.ListedColormap(matplotlib.colormaps["plasma"](np.linspace(0, 0.85, 256)))
CMAP_HEAT = matplotlib.colormaps["magma"].with_extremes(bad="0.8")
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass(frozen=True)
class Stationary:
    protocol: str
    names: Names
    d: int
    sigma: float
    n_seeds: int
    n_diverged: int
    rates: np.ndarray  # every value of the rate axis, diverged points included
    others: np.ndarray  # every value of λ or r
    mean: pd.DataFrame  # one row per usable grid point, averaged over seeds


def stationary(table: pd.DataFrame) -> Stationary:
    """The seed-averaged grid of one protocol's stationary table; points left out by the
    seed-averaging rule are holes (NaN) in :func:`pivot`."""
    if len(table) == 0:
        raise ValueError("the stationary table is empty")
    table = upgrade_stationary(table)  # 0.1's column names
    protocols = pd.unique(table["protocol"])
    if len(protocols) != 1 or protocols[0] not in PROTOCOLS:
        raise ValueError(f"expected one protocol out of {sorted(PROTOCOLS)}, got {list(protocols)}")
    protocol = str(protocols[0])
    for column in ("d", "sigma"):
        if column in table and table[column].nunique() != 1:
            raise ValueError(f"the table mixes several values of {column!r}; filter it first")
    x, y = grid_axes(protocol)
    sigma = float(table["sigma"].iloc[0]) if "sigma" in table else float("nan")
    return Stationary(protocol, PROTOCOLS[protocol], int(table["d"].iloc[0]), sigma,
                      int(table["seed"].nunique()), int((table["status"] == "diverged").sum()),
                      np.sort(table[x].unique()), np.sort(table[y].unique()),
                      seed_average(table))


def pivot(st: Stationary, column: str):
    """(rates, others, values) with values of shape (n_others, n_rates): rows are λ or r."""
    grid = st.mean.pivot(index=st.names.other, columns="learning_rate", values=column)
    grid = grid.reindex(index=st.others, columns=st.rates)
    return st.rates.astype(float), st.others.astype(float), grid.to_numpy(float)


def axes_or_new(ax, size=(5.5, 4.5)):
    return Figure(figsize=size, layout="constrained").add_subplot() if ax is None else ax


def power(value, _=None):
    """Tick label 10⁻² in Unicode, not mathtext: parsing ~100 math labels per figure would be
    most of the drawing time."""
    exponent = np.log10(value) if value > 0 else np.nan
    if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9:
        return "10" + f"{round(exponent)}".translate(_SUPERSCRIPT)
    return f"{value:g}"


def log_ticks(*axes):
    for axis in axes:
        axis.set_major_formatter(ticker.FuncFormatter(power))


def log_norm(levels):
    low, high = float(np.nanmin(levels)), float(np.nanmax(levels))
    return colors.LogNorm(low / 1.5, high * 1.5) if low == high else colors.LogNorm(low, high)



def save_figure(fig: Figure, path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` through the one atomic writer (``results.io``): a reader never
    sees half an image, and the file gets the mode ``open()`` would give it. The format follows
    the suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    io.atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    return path
