"""Checks of the thermodynamic predictions on a stationary table (section 4: V1-V4).

The table has one row per grid point and seed (see :func:`thermosgd.isotropic.simulate`); seeds
are averaged first. Every function here reads results; none trains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thermosgd import theory

__all__ = [
    "grid_axes",
    "seed_average",
    "interior_mask",
    "error_summary",
    "check_radius",
    "check_potential_minimum",
    "entropy_slopes",
    "quadratic_entropy_fit",
    "check_adiabats",
    "isotropic_checks",
]

_MEASURED = ["radius", "U", "entropy_sphere", "entropy", "pressure", "volume", "lambda_eff"]


def grid_axes(table: pd.DataFrame) -> tuple[str, str]:
    """The two hyperparameter columns of a protocol's grid: (lr, wd) or (lr, radius_target)."""
    protocol = table["protocol"].iloc[0]
    return ("lr", "radius_target") if protocol == "fixed-sphere" else ("lr", "wd")


def seed_average(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every numeric column, one row per grid point, sorted by the axes.

    A grid point is dropped if any of its seeds diverged; ``n_seeds`` says how many averaged.
    """
    x, y = grid_axes(table)
    ok = table[~table["diverged"].astype(bool)]
    numeric = ok.select_dtypes("number").drop(columns=[c for c in (x, y, "seed") if c in ok])
    grouped = numeric.groupby([ok[x], ok[y]])
    out = grouped.mean()
    out["n_seeds"] = grouped.size()
    out = out.reset_index()
    out.insert(0, "protocol", table["protocol"].iloc[0])
    return out.sort_values([x, y], ignore_index=True)


def _indices(table):
    """Integer grid positions (i along the rate axis, j along the second axis)."""
    x, y = grid_axes(table)
    i = np.searchsorted(np.unique(table[x]), table[x])
    j = np.searchsorted(np.unique(table[y]), table[y])
    return i, j


def interior_mask(table: pd.DataFrame) -> np.ndarray:
    """True for grid points not on the first or last value of either axis."""
    i, j = _indices(table)
    return (i > 0) & (i < i.max()) & (j > 0) & (j < j.max())


def error_summary(measured, predicted, interior=None, relative=True) -> dict:
    """Median and max (relative or absolute) error, over the grid and over its interior."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    err = np.abs(measured - predicted)
    if relative:
        err = err / np.abs(predicted)
    kind = "rel" if relative else "abs"
    out = {f"median_{kind}_error": _nanstat(np.median, err), f"max_{kind}_error": _nanstat(np.max, err)}
    if interior is not None:
        out[f"interior_median_{kind}_error"] = _nanstat(np.median, err[interior])
        out[f"interior_max_{kind}_error"] = _nanstat(np.max, err[interior])
    return out


def _nanstat(fn, values):
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else float("nan")


def check_radius(table: pd.DataFrame) -> dict:
    """V1: measured r* against eq. 12 / 19, or lambda_eff against eq. 84 on the fixed sphere."""
    sphere = table["protocol"].iloc[0] == "fixed-sphere"
    quantity = "lambda_eff" if sphere else "radius"
    theory_col = "lambda_eff_theory" if sphere else "radius_theory"
    out = {"quantity": quantity}
    out.update(error_summary(table[quantity], table[theory_col], interior_mask(table)))
    return out


def check_potential_minimum(table: pd.DataFrame) -> dict:
    """V2 (eq. 22): does each point's own stationary state minimize its G (or F) among all states?

    For point i with (T_i, p_i), G_ij = U_j - T_i S_j + p_i V_j over all states j (fixed LR/ELR).
    On the fixed sphere, F_ij = U_j - T_i S_j over the states on the same sphere (Figure 3e).
    Reports the fraction of points that are their own minimizer, and that are within one grid
    step of it (both axes).
    """
    sphere = table["protocol"].iloc[0] == "fixed-sphere"
    i_idx, j_idx = _indices(table)
    u, s, v = (table[c].to_numpy(float) for c in ("U", "entropy", "volume"))
    t, p = table["temperature"].to_numpy(float), table["pressure"].to_numpy(float)
    # (point i, state j) potentials: rows are the (T*, p*) of point i, columns the states
    potential = u[None, :] - t[:, None] * s[None, :]
    if sphere:
        same_sphere = j_idx[:, None] == j_idx[None, :]
        potential = np.where(same_sphere, potential, np.inf)
    else:
        potential = potential + p[:, None] * v[None, :]
    potential = np.where(np.isfinite(potential), potential, np.inf)
    best = np.argmin(potential, axis=1)
    exact = best == np.arange(len(table))
    near = (np.abs(i_idx[best] - i_idx) <= 1) & (np.abs(j_idx[best] - j_idx) <= 1)
    return {
        "potential": "F" if sphere else "G",
        "exact_fraction": float(exact.mean()),
        "within_one_step_fraction": float(near.mean()),
        "n_points": int(len(table)),
    }


def _fit(log_x, log_y, entropy, quadratic):
    """Least squares of S on (1, x, y[, x^2, y^2, x y]) over finite entries: (coef, design, rows)."""
    x, y, s = (np.asarray(a, float) for a in (log_x, log_y, entropy))
    ok = np.isfinite(s)
    x, y, s = x[ok], y[ok], s[ok]
    cols = [np.ones_like(x), x, y] + ([x * x, y * y, x * y] if quadratic else [])
    design = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(design, s, rcond=None)
    return coef, s - design @ coef, s, design


def entropy_slopes(log_x, log_y, entropy) -> dict:
    """Least-squares plane S = a0 + a1 log x + a2 log y: slopes a1, a2 with standard errors."""
    coef, resid, s, design = _fit(log_x, log_y, entropy, quadratic=False)
    dof = max(s.size - 3, 1)
    stderr = np.sqrt(np.diag(np.linalg.pinv(design.T @ design)) * (resid @ resid) / dof)
    return {"a1": float(coef[1]), "a2": float(coef[2]),
            "a1_stderr": float(stderr[1]), "a2_stderr": float(stderr[2])}


def quadratic_entropy_fit(log_x, log_y, entropy) -> dict:
    """Quadratic fit of eq. 34 / 108, S = a0 + a1 x + a2 y + a3 x^2 + a4 y^2 + a5 x y, with R^2."""
    coef, resid, s, _ = _fit(log_x, log_y, entropy, quadratic=True)
    total = s - s.mean()
    r2 = 1.0 - (resid @ resid) / (total @ total) if total @ total > 0 else float("nan")
    return {f"a{k}": float(c) for k, c in enumerate(coef)} | {"r2": float(r2)}


def _slope_entry(value, target):
    entry = {"value": value, "target": target}
    if target == 0:
        entry["abs_error"] = abs(value)
    else:
        entry["rel_error"] = abs(value - target) / abs(target)
    return entry


def check_entropy_slopes(table: pd.DataFrame) -> dict:
    """V3: entropy slopes in log hyperparameters against the isotropic model's targets.

    Fixed LR: (dS/dlog eta)_lambda = (d-1)/2 and (dS/dlog lambda)_eta = 0 (eq. 29), their
    difference being the Maxwell relation (eq. 23). Fixed ELR: (dS/dlog lambda)_eta_eff =
    -(d-1)/2 (eq. 85) and, from S = (d-1)/2 log T + (d-1) log r*, (dS/dlog eta_eff)_lambda = d-1.
    Fixed sphere: from eq. 1 and 107, (dS/dlog eta_eff)_r = (d-1)/2, (dS/dlog r)_eta_eff = d-1;
    its Maxwell relation proper is lambda_eff = T(d-1)/(2V) (eq. 84), checked by V1.
    Slopes come from a plane fit over the whole grid (S is exactly linear in the logs at low T).
    """
    protocol = table["protocol"].iloc[0]
    x, y = grid_axes(table)
    d = float(table["d"].iloc[0])
    r = float(theory.gas_constant(d))
    fit = entropy_slopes(np.log(table[x]), np.log(table[y]), table["entropy"])
    quad = quadratic_entropy_fit(np.log(table[x]), np.log(table[y]), table["entropy"])
    if protocol == "fixed-lr":
        target_lr, target_wd = theory.entropy_slopes_fixed_lr_isotropic(d)
        out = {
            "dS/dlog_lr": _slope_entry(fit["a1"], float(target_lr)),
            "dS/dlog_wd": _slope_entry(fit["a2"], float(target_wd)),
            "maxwell_difference": _slope_entry(fit["a1"] - fit["a2"], float(theory.maxwell_target_fixed_lr(d))),
            "table4": {"r2": quad["r2"], "(a1-a2)/R": (quad["a1"] - quad["a2"]) / r,
                       "(2a3-a5)/R": (2 * quad["a3"] - quad["a5"]) / r,
                       "(2a4-a5)/R": (2 * quad["a4"] - quad["a5"]) / r},
        }
    elif protocol == "fixed-elr":
        out = {
            "dS/dlog_wd": _slope_entry(fit["a2"], float(theory.maxwell_target_fixed_elr(d))),
            "dS/dlog_lr": _slope_entry(fit["a1"], 2.0 * r),
            "table4": {"r2": quad["r2"], "a2/R": quad["a2"] / r, "2a4/R": 2 * quad["a4"] / r,
                       "a5/R": quad["a5"] / r},
        }
    else:
        out = {
            "dS/dlog_lr": _slope_entry(fit["a1"], r),
            "dS/dlog_radius": _slope_entry(fit["a2"], 2.0 * r),
        }
    out["stderr"] = {"a1": fit["a1_stderr"], "a2": fit["a2_stderr"]}
    return out


def check_adiabats(table: pd.DataFrame) -> dict:
    """V4: entropy should be constant along adiabats p V^gamma = const (eq. 31, 99).

    Adiabats are grid points sharing the theoretical p V^gamma (gamma = C_p/C_V = 2, eq. 97);
    on a log grid they are lines (fixed LR: constant eta; fixed ELR: lambda ~ eta_eff^2; sphere:
    eta_eff r^2 constant). Reports the spread (max - min) of the measured total entropy along
    each adiabat with at least three points, beside the entropy's range over the whole grid.
    """
    d = float(table["d"].iloc[0])
    gamma = float(theory.adiabatic_index(d))
    sphere = table["protocol"].iloc[0] == "fixed-sphere"
    p = table["lambda_eff_theory" if sphere else "pressure"].to_numpy(float)
    v = theory.volume(table["radius_theory"].to_numpy(float))
    key = np.round(np.log(theory.adiabatic_invariant(p, v, gamma)), 6)
    spreads = []
    for value in np.unique(key):
        s = table["entropy"].to_numpy(float)[key == value]
        s = s[np.isfinite(s)]
        if s.size >= 3:
            spreads.append(float(s.max() - s.min()))
    s_all = table["entropy"].to_numpy(float)
    return {
        "gamma": gamma,
        "n_adiabats": len(spreads),
        "median_spread": float(np.median(spreads)) if spreads else float("nan"),
        "max_spread": float(np.max(spreads)) if spreads else float("nan"),
        "entropy_range": _nanstat(np.max, s_all) - _nanstat(np.min, s_all),
    }


def isotropic_checks(table: pd.DataFrame) -> dict:
    """All V1-V4 numbers of section 4 for one protocol's stationary table (seeds averaged)."""
    avg = seed_average(table)
    interior = interior_mask(avg)
    return {
        "n_points": int(len(avg)),
        "n_diverged": int(table["diverged"].astype(bool).sum()),
        "V1": check_radius(avg),
        "U": error_summary(avg["U"], avg["U_theory"], interior),
        "entropy_sphere": error_summary(avg["entropy_sphere"], avg["entropy_sphere_theory"], interior, relative=False)
        | error_summary(avg["entropy_sphere"], avg["entropy_sphere_theory"]),
        "V2": check_potential_minimum(avg),
        "V3": check_entropy_slopes(avg),
        "V4": check_adiabats(avg),
    }
