"""Stationary tables (schema: :mod:`thermosgd.results.schema`): averaging over seeds, the grid's
interior, one error summary, and appendix H's test for runs that are still converging.

The seed-averaging rule, used by every check and every figure: a grid point enters only when
every one of its seeds finished (and, for network runs, is stationary); it is then the mean over
its seeds of every numeric column. A point with a diverged, unfinished or still-converging seed
is left out (a hole in the figures): averaging its remaining seeds would keep only the lucky
ones, and the divergence says the state is not stationary at that point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thermosgd.results.schema import OPTIMIZER_COLUMNS, grid_axes
from thermosgd.theory.optimizers import Optimizer

__all__ = ["by_optimizer", "converging", "error_summary", "grid_indices", "interior_mask",
           "optimizer_of", "seed_average", "usable"]


def usable(table: pd.DataFrame) -> pd.Series:
    """Rows that may enter a seed average: finished and, where flagged, not still converging."""
    ok = table["status"] == "finished"
    if "converging" in table:
        ok &= ~table["converging"].astype(bool)
    return ok


def optimizer_of(table: pd.DataFrame) -> Optimizer:
    """The optimizer a stationary table records (its ``optimizer``, ``momentum``, ``beta2`` and
    ``eps`` columns); plain SGD for tables written before optimizers were recorded. Raises
    ValueError for a table that mixes optimizers: each has its own theory, analyse them apart."""
    if "optimizer" not in table or table.empty:
        return Optimizer()
    present = [c for c in OPTIMIZER_COLUMNS if c in table]
    records = table[present].drop_duplicates()
    if len(records) > 1:
        labels = sorted({Optimizer.from_dict(_record(r)).label for _, r in records.iterrows()})
        raise ValueError(f"the table mixes optimizers ({', '.join(labels)}); give one result "
                         "per optimizer")
    return Optimizer.from_dict(_record(records.iloc[0]))


def by_optimizer(table: pd.DataFrame) -> list[tuple[Optimizer, pd.DataFrame]]:
    """The table cut into one part per optimizer it records (a grid over beta gives one part per
    beta), in the order of first appearance; a table of one optimizer is one part."""
    if "optimizer" not in table or table.empty:
        return [(optimizer_of(table), table)]
    present = [c for c in OPTIMIZER_COLUMNS if c in table]
    key = pd.Series(["|".join(map(str, row)) for row in table[present].itertuples(index=False)],
                    index=table.index)
    return [(optimizer_of(part), part.reset_index(drop=True))
            for _, part in table.groupby(key, sort=False)]


def _record(row) -> dict:
    """An optimizer record from a table row; unused fields (NaN) keep their defaults."""
    record = {"name": row["optimizer"]}
    for column in ("momentum", "beta2", "eps"):
        if column in row and pd.notna(row[column]):
            record[column] = float(row[column])
    return record


def seed_average(table: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point, sorted by the axes: the mean over seeds of every numeric column,
    for points whose seeds are all usable (:func:`usable`); ``n_seeds`` says how many averaged."""
    protocol = table["protocol"].iloc[0]
    x, y = grid_axes(protocol)
    ok = usable(table)
    complete = ok.groupby([table[x], table[y]]).transform("all")
    kept = table[complete]
    drop = [c for c in (x, y, "seed", "converging") if c in kept]
    numeric = kept.select_dtypes("number").drop(columns=drop, errors="ignore")
    grouped = numeric.groupby([kept[x], kept[y]])
    out = grouped.mean()
    out["n_seeds"] = grouped.size()
    out = out.reset_index()
    out.insert(0, "protocol", protocol)
    return out.sort_values([x, y], ignore_index=True)


def grid_indices(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Integer grid positions (i along the rate axis, j along λ or r)."""
    x, y = grid_axes(table["protocol"].iloc[0])
    i = np.searchsorted(np.unique(table[x]), table[x])
    j = np.searchsorted(np.unique(table[y]), table[y])
    return i, j


def interior_mask(table: pd.DataFrame) -> np.ndarray:
    """True for grid points not on the first or last value of either axis."""
    i, j = grid_indices(table)
    return (i > 0) & (i < i.max()) & (j > 0) & (j < j.max())


def error_summary(measured, predicted, interior=None, relative=True) -> dict:
    """Median and max (relative or absolute) error over the finite entries, over the grid and
    over its ``interior``."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    err = np.abs(measured - predicted)
    if relative:
        err = err / np.abs(predicted)
    kind = "rel" if relative else "abs"
    out = {f"median_{kind}_error": _nanstat(np.median, err),
           f"max_{kind}_error": _nanstat(np.max, err)}
    if interior is not None:
        out[f"interior_median_{kind}_error"] = _nanstat(np.median, err[interior])
        out[f"interior_max_{kind}_error"] = _nanstat(np.max, err[interior])
    return out


def _nanstat(fn, values):
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else float("nan")


def converging(metrics: pd.DataFrame, *, logs: int = 30, t_stat: float = -3.0,
               min_fall: float = 0.1) -> bool:
    """Appendix H: is the run still converging rather than stationary?

    Over the last ``logs`` logs, log(train loss) and log(Tr Sigma) are regressed on
    log(iteration). Still converging when both fall, each significantly (slope t-statistic below
    ``t_stat``) and by more than ``min_fall`` (relative) across the window.
    """
    tail = metrics.tail(logs)
    if len(tail) < 4:
        return False
    x = np.log(tail["iteration"].to_numpy(float))
    verdicts = []
    for column in ("train_loss", "trace_cov"):
        y = np.log(np.clip(tail[column].to_numpy(float), 1e-300, None))
        ok = np.isfinite(y)
        if ok.sum() < 4:
            return False
        slope, t = _slope(x[ok], y[ok])
        fall = 1.0 - np.exp(slope * (x[ok].max() - x[ok].min()))
        verdicts.append(t < t_stat and fall > min_fall)
    return all(verdicts)


def _slope(x, y):
    xc = x - x.mean()
    slope = (xc @ (y - y.mean())) / (xc @ xc)
    resid = y - y.mean() - slope * xc
    se = np.sqrt((resid @ resid) / max(len(x) - 2, 1) / (xc @ xc))
    if se == 0:  # an exact power law
        return float(slope), float(np.copysign(np.inf, slope))
    return float(slope), float(slope / se)
