"""The numbers of every check, computed on one protocol's stationary table.

:func:`stationary_checks` chooses the checks by the protocol and by the columns the table
carries, never by which engine wrote it:

- V1 (ideal gas law pV = RT): the measured r* against ``radius_theory`` (eq. 12, 19), or on the
  fixed sphere λ_eff against ``lambda_eff_theory`` (eq. 84); against the appendix-G prediction
  too where a ``*_theory_corrected`` column exists (eq. 119).
- U and S_sphere against the exact VMF values (eq. 103) where ``U_theory`` and
  ``entropy_sphere_theory`` exist (the isotropic model).
- V2 (eq. 22), the V3 slope targets and V4 (eq. 31) where the closed-form entropy
  ``entropy_theory`` exists: they test the isotropic model's own predictions.
- V3 as Table 4 (eq. 34/108-110, with bootstrap intervals) for fixed LR and fixed ELR wherever
  an entropy was measured on at least six grid points, against the Maxwell target of the
  optimizer the table's ``optimizer``, ``momentum``, ``beta2`` and ``eps`` columns name (plain
  SGD without them): momentum keeps SGD's (d-1)/2, AdamW's is d-1 at eps = 0
  (``thermosgd.theory.optimizers``).

Seeds are averaged first, by the one rule of :func:`thermosgd.analysis.tables.seed_average`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thermosgd import theory
from thermosgd.analysis.fits import MIN_FIT_POINTS, entropy_plane, table4
from thermosgd.analysis.tables import error_summary, grid_indices, interior_mask, seed_average
from thermosgd.results.compat import upgrade_stationary
from thermosgd.results.schema import grid_axes

__all__ = ["check_adiabats", "check_entropy_slopes", "check_potential_minimum", "check_radius",
           "isotropic_checks", "stationary_checks", "table_optimizer"]


def _has(table: pd.DataFrame, column: str) -> bool:
    return column in table and bool(np.isfinite(table[column].to_numpy(float)).any())


def check_radius(table: pd.DataFrame) -> dict:
    """V1: measured r* against eq. 12 / 19, or λ_eff against eq. 84 on the fixed sphere; against
    the appendix-G corrected prediction too where the table has it (``corrected``)."""
    sphere = table["protocol"].iloc[0] == "fixed-sphere"
    quantity = "lambda_eff" if sphere else "radius"
    interior = interior_mask(table)
    out = {"quantity": quantity}
    out.update(error_summary(table[quantity], table[f"{quantity}_theory"], interior))
    if _has(table, f"{quantity}_theory_corrected"):
        out["corrected"] = error_summary(table[quantity], table[f"{quantity}_theory_corrected"],
                                         interior)
    return out


def check_potential_minimum(table: pd.DataFrame) -> dict:
    """V2 (eq. 22): does each point's own stationary state minimize its G (or F) among all states?

    For point i with (T_i, p_i), G_ij = U_j - T_i S_j + p_i V_j over all states j (fixed LR/ELR).
    On the fixed sphere, F_ij = U_j - T_i S_j over the states on the same sphere (Figure 3e).
    Reports the fraction of points that are their own minimizer, and that are within one grid
    step of it (both axes).
    """
    sphere = table["protocol"].iloc[0] == "fixed-sphere"
    i_idx, j_idx = grid_indices(table)
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
        "n_points": len(table),
    }


def _slope_entry(value, target):
    entry = {"value": value, "target": target}
    if target == 0:
        entry["abs_error"] = abs(value)
    else:
        entry["rel_error"] = abs(value - target) / abs(target)
    return entry


def check_entropy_slopes(table: pd.DataFrame) -> dict:
    """V3: entropy slopes in log hyperparameters against the isotropic model's targets.

    Fixed LR: (dS/dlog η)_λ = (d-1)/2 and (dS/dlog λ)_η = 0 (eq. 29), their difference being the
    Maxwell relation (eq. 23). Fixed ELR: (dS/dlog λ)_η_eff = -(d-1)/2 (eq. 85) and, from
    S = (d-1)/2 log T + (d-1) log r*, (dS/dlog η_eff)_λ = d-1. Fixed sphere: from eq. 1 and 107,
    (dS/dlog η_eff)_r = (d-1)/2, (dS/dlog r)_η_eff = d-1; its Maxwell relation proper is
    λ_eff = T(d-1)/(2V) (eq. 84), checked by V1. Slopes come from a plane fit over the whole
    grid (S is exactly linear in the logs at low T).
    """
    protocol = table["protocol"].iloc[0]
    x, y = grid_axes(protocol)
    d = float(table["d"].iloc[0])
    r = float(theory.gas_constant(d))
    fit = entropy_plane(np.log(table[x]), np.log(table[y]), table["entropy"])
    if protocol == "fixed-lr":
        target_lr, target_wd = theory.entropy_slopes_fixed_lr_isotropic(d)
        out = {
            "dS/dlog_lr": _slope_entry(fit["a1"], float(target_lr)),
            "dS/dlog_wd": _slope_entry(fit["a2"], float(target_wd)),
            "maxwell_difference": _slope_entry(fit["a1"] - fit["a2"],
                                               float(theory.maxwell_target_fixed_lr(d))),
        }
    elif protocol == "fixed-elr":
        out = {
            "dS/dlog_wd": _slope_entry(fit["a2"], float(theory.maxwell_target_fixed_elr(d))),
            "dS/dlog_lr": _slope_entry(fit["a1"], 2.0 * r),
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
    on a log grid they are lines (fixed LR: constant η; fixed ELR: λ ~ η_eff²; sphere: η_eff r²
    constant). Reports the spread (max - min) of the measured total entropy along each adiabat
    with at least three points, beside the entropy's range over the whole grid, and the median
    spread as a fraction of that range.
    """
    d = float(table["d"].iloc[0])
    gamma = float(theory.adiabatic_index(d))
    sphere = table["protocol"].iloc[0] == "fixed-sphere"
    p = table["lambda_eff_theory" if sphere else "pressure"].to_numpy(float)
    v = theory.volume(table["radius_theory"].to_numpy(float))
    key = np.round(np.log(theory.adiabatic_invariant(p, v, gamma)), 6)
    entropy = table["entropy"].to_numpy(float)
    spreads = []
    for value in np.unique(key):
        s = entropy[key == value]
        s = s[np.isfinite(s)]
        if s.size >= 3:
            spreads.append(float(s.max() - s.min()))
    finite = entropy[np.isfinite(entropy)]
    median = float(np.median(spreads)) if spreads else float("nan")
    span = float(finite.max() - finite.min()) if finite.size else float("nan")
    return {
        "gamma": gamma,
        "n_adiabats": len(spreads),
        "median_spread": median,
        "max_spread": float(np.max(spreads)) if spreads else float("nan"),
        "entropy_range": span,
        # the spread means little on its own: S moves by (d-1)/2 per e-fold of T
        "median_spread_over_range": median / span if span > 0 else float("nan"),
    }


def table_optimizer(table: pd.DataFrame):
    """The optimizer named by the table's columns (``optimizer``, ``momentum``, ``beta2``,
    ``eps``; plain SGD without them). Raises ValueError for a table mixing optimizers."""
    from thermosgd.theory.optimizers import make_optimizer

    if "optimizer" not in table:
        return make_optimizer("sgd")
    kinds = table[[c for c in ("optimizer", "momentum", "beta2", "eps") if c in table]]
    kinds = kinds.drop_duplicates()
    if len(kinds) > 1:
        raise ValueError("the table mixes optimizers; analyse one optimizer (and momentum) at a "
                         "time")
    row = kinds.iloc[0]
    name = str(row["optimizer"])

    def option(key):
        value = row.get(key)
        return None if value is None or not np.isfinite(float(value)) else float(value)
    return make_optimizer(name, option("momentum") if name != "sgd" else None,
                          option("beta2") if name == "adamw" else None,
                          option("eps") if name == "adamw" else None)


def _maxwell_target(table: pd.DataFrame, avg: pd.DataFrame, protocol: str, d: int):
    """The Maxwell relation's target when the optimizer moves it from SGD's (AdamW: d - 1 at
    eps = 0, the grid's median state otherwise), else None (SGD's, as the fit computes it)."""
    opt = table_optimizer(table)
    if not opt.adaptive or protocol != "fixed-lr":
        return None
    state = {k: float(np.nanmedian(avg[c].to_numpy(float))) for k, c in
             (("learning_rate", "learning_rate"), ("weight_decay", "weight_decay"),
              ("trace_cov", "trace_cov")) if c in avg}
    return float(theory.optimizer_maxwell_target_fixed_lr(opt, d, **state))


def stationary_checks(table: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every check the table's protocol and columns allow (see the module's docstring), on the
    seed average of one protocol's stationary table. ``bootstrap`` draws (seeded by ``seed``)
    give Table 4's 95 % intervals. A table in 0.1's column names is read as it is."""
    table = upgrade_stationary(table)
    avg = seed_average(table)
    protocol = table["protocol"].iloc[0]
    interior = interior_mask(avg)
    out = {"n_points": len(avg), "n_diverged": int((table["status"] == "diverged").sum()),
           "V1": check_radius(avg)}
    if _has(avg, "U_theory"):
        out["U"] = error_summary(avg["U"], avg["U_theory"], interior)
    if _has(avg, "entropy_sphere_theory"):
        out["entropy_sphere"] = (
            error_summary(avg["entropy_sphere"], avg["entropy_sphere_theory"], interior,
                          relative=False)
            | error_summary(avg["entropy_sphere"], avg["entropy_sphere_theory"]))
    model = _has(avg, "entropy_theory")  # the closed forms of the isotropic model
    if model:
        out["V2"] = check_potential_minimum(avg)
    v3 = check_entropy_slopes(avg) if model else {}
    if protocol in ("fixed-lr", "fixed-elr"):
        usable = int(np.isfinite(avg["entropy"].to_numpy(float)).sum())
        x, y = grid_axes(protocol)
        d = int(avg["d"].iloc[0])
        v3["table4"] = (table4(avg[x], avg[y], avg["entropy"], protocol=protocol, d=d,
                               interior=interior, bootstrap=bootstrap, seed=seed,
                               maxwell_target=_maxwell_target(table, avg, protocol, d))
                        if usable >= MIN_FIT_POINTS else
                        {"skipped": f"the quadratic entropy fit needs at least {MIN_FIT_POINTS} "
                                    f"grid points with an entropy, got {usable}"})
    if v3:
        out["V3"] = v3
    if model:
        out["V4"] = check_adiabats(avg)
    return out


def isotropic_checks(table: pd.DataFrame, *, bootstrap: int = 1000) -> dict:
    """All V1-V4 numbers of section 5 for one protocol's isotropic-model table."""
    return stationary_checks(table, bootstrap=bootstrap)
