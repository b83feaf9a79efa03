"""Checks of a network sweep (section 6.3, appendices F-H): V1 radii, V3 Table 4, appendix H.

Reads a sweep directory (``thermosgd sweep run``) or a directory holding several; trains
nothing. Per protocol: the stationary table (sigma^2, T, p, V, U = mean train loss, entropies),
V1 (measured r* against the SDE radius, eq. 12/20, and the appendix-G corrected one, eq. 119;
on the sphere lambda_eff against T(d-1)/(2V), eq. 84, and its correction), and V3: the quadratic
entropy fit of eq. 34/108 with Table 4's normalized coefficients, the Maxwell relation's error
over the grid (eq. 110 for fixed LR, eq. 85 for fixed ELR) and bootstrap confidence intervals.
Configurations still converging (appendix H: loss and Tr Sigma still falling over the last
logs) are flagged and left out of the fits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd import theory
from thermosgd.analysis import isotropic as analysis
from thermosgd.results import io as _io
from thermosgd.sweeps import directory as sweep

__all__ = ["MIN_FIT_POINTS", "PAPER_TABLE4", "analyze_sweep", "converging", "table4",
           "write_analysis"]

MIN_FIT_POINTS = 6  # the quadratic of eq. 34 has six coefficients
REQUIRED = ("train_loss", "radius", "sigma2", "temperature", "pressure", "volume",
            "entropy_sphere", "entropy", "radius_theory", "radius_theory_corrected", "lambda_eff",
            "lambda_eff_theory", "lambda_eff_theory_corrected", "trace_cov", "d")
# Table 4 of the paper: (model, k, dataset) -> {protocol: {coefficient: value}}
PAPER_TABLE4 = {
    ("resnet18", 4, "cifar10"): {
        "fixed-elr": {"r2": 0.9926, "a2/R": -1.029, "2a4/R": -0.008, "a5/R": 0.0002,
                      "max_rel_error": 0.025},
        "fixed-lr": {"r2": 0.9939, "(a1-a2)/R": 0.993, "(2a3-a5)/R": 0.005, "(2a4-a5)/R": 0.005,
                     "max_rel_error": 0.030}},
    ("resnet18", 4, "cifar100"): {
        "fixed-elr": {"r2": 0.9949, "a2/R": -1.022, "2a4/R": -0.006, "a5/R": 0.0005,
                      "max_rel_error": 0.019},
        "fixed-lr": {"r2": 0.9894, "(a1-a2)/R": 1.075, "(2a3-a5)/R": 0.00008,
                     "(2a4-a5)/R": -0.008, "max_rel_error": 0.056}},
    ("convnet", 8, "cifar10"): {
        "fixed-elr": {"r2": 0.9975, "a2/R": -1.128, "2a4/R": -0.016, "a5/R": -0.006,
                      "max_rel_error": 0.065},
        "fixed-lr": {"r2": 0.9926, "(a1-a2)/R": 0.989, "(2a3-a5)/R": -0.038,
                     "(2a4-a5)/R": -0.033, "max_rel_error": 0.176, "mean_rel_error": 0.061}},
    ("convnet", 16, "cifar100"): {
        "fixed-elr": {"r2": 0.9791, "a2/R": -0.930, "2a4/R": -0.0015, "a5/R": 0.009,
                      "max_rel_error": 0.040},
        "fixed-lr": {"r2": 0.8412, "(a1-a2)/R": 0.659, "(2a3-a5)/R": -0.047,
                     "(2a4-a5)/R": 0.0007, "max_rel_error": 0.233, "mean_rel_error": 0.123}},
}


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


def _maxwell(coef, log_x, log_y, protocol, d):
    """The Maxwell relation's left side at each grid point, from the fitted quadratic (eq. 109),
    and its target: fixed LR dS/dlog eta - dS/dlog lambda = (d-1)/2 (eq. 110); fixed ELR
    dS/dlog lambda = -(d-1)/2 (eq. 85)."""
    a = coef
    if protocol == "fixed-lr":
        lhs = (a[1] - a[2]) + (2 * a[3] - a[5]) * log_x + (a[5] - 2 * a[4]) * log_y
        return lhs, float(theory.maxwell_target_fixed_lr(d))
    lhs = a[2] + 2 * a[4] * log_y + a[5] * log_x
    return lhs, float(theory.maxwell_target_fixed_elr(d))


def _normalized(coef, r, protocol) -> dict:
    a = coef
    if protocol == "fixed-lr":
        return {"(a1-a2)/R": (a[1] - a[2]) / r, "(2a3-a5)/R": (2 * a[3] - a[5]) / r,
                "(2a4-a5)/R": (2 * a[4] - a[5]) / r}
    return {"a2/R": a[2] / r, "2a4/R": 2 * a[4] / r, "a5/R": a[5] / r}


def table4(rate, second, entropy, *, protocol: str, d: int, interior=None,
           bootstrap: int = 1000, seed: int = 0) -> dict:
    """V3 as the paper's Table 4: the quadratic fit S(log rate, log second) of eq. 34/108, its
    R^2, the normalized coefficients (R = (d-1)/2), the relation's left side (eq. 109) at the
    grid's centre over R ("centre/R": 1 for fixed LR, -1 for fixed ELR), its max and mean relative
    error over the points (and over ``interior``), and 95 % percentile intervals of R^2 and the
    coefficients from a residual ``bootstrap`` of the fit (see :func:`_bootstrap`)."""
    if protocol not in ("fixed-lr", "fixed-elr"):
        raise ValueError(f"Table 4 covers fixed-lr and fixed-elr, not {protocol}")
    lx, ly = np.log(np.asarray(rate, float)), np.log(np.asarray(second, float))
    s = np.asarray(entropy, float)
    if np.isfinite(s).sum() < MIN_FIT_POINTS:
        raise ValueError(f"the quadratic entropy fit needs at least {MIN_FIT_POINTS} "
                         f"configurations with an entropy, got {int(np.isfinite(s).sum())}")
    r = float(theory.gas_constant(d))
    fit = analysis.quadratic_entropy_fit(lx, ly, s)
    coef = np.array([fit[f"a{k}"] for k in range(6)])
    lhs, target = _maxwell(coef, lx, ly, protocol, d)
    err = np.abs(lhs - target) / abs(target)
    centre = lx[np.isfinite(s)].mean(), ly[np.isfinite(s)].mean()
    out = {"r2": fit["r2"], **_normalized(coef, r, protocol),
           "centre/R": float(_maxwell(coef, *centre, protocol, d)[0] / r),
           "max_rel_error": float(err.max()), "mean_rel_error": float(err.mean()),
           "coefficients": coef.tolist(), "n_points": int(np.isfinite(s).sum())}
    if interior is not None and np.any(interior):
        out["interior_max_rel_error"] = float(err[interior].max())
        out["interior_mean_rel_error"] = float(err[interior].mean())
    out["ci95"] = _bootstrap(lx, ly, s, protocol, d, r, bootstrap, seed) if bootstrap else {}
    return out


def _bootstrap(lx, ly, s, protocol, d, r, n, seed) -> dict:
    """Residual bootstrap: the grid is a fixed design (the hyperparameters are chosen, not
    sampled), so each draw refits the fitted surface plus residuals drawn with replacement,
    centred and inflated by sqrt(m / (m - 6)) for the six fitted coefficients. A pairs bootstrap
    drops whole grid rows: on a 5 x 3 grid it leaves the quadratic barely identified and its
    intervals span several units. No interval without a residual degree of freedom (m <= 6)."""
    ok = np.isfinite(s)
    x, y, values = lx[ok], ly[ok], s[ok]
    design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)  # (m, 6)
    m, p = design.shape
    if m <= p:
        return {}
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    fitted = design @ coef
    resid = (values - fitted - (values - fitted).mean()) * np.sqrt(m / (m - p))
    rng = np.random.default_rng(seed)
    draws = fitted[:, None] + rng.choice(resid, size=(m, n), replace=True)  # (m, n)
    coefs, *_ = np.linalg.lstsq(design, draws, rcond=None)  # (6, n): every draw in one solve
    res, centred = draws - design @ coefs, draws - draws.mean(axis=0)
    # The Maxwell relation's left side at the grid's centre (mean log rate, mean log second)
    # is well determined; the coefficients are slopes at rate = second = 1, often far outside
    # the grid, where the curvature terms extrapolate. No interval for the Maxwell errors: replicates of an absolute error are biased upward
    # (noise only adds to |error|), so their percentile interval can miss the estimate itself.
    stats = {"r2": 1 - (res * res).sum(axis=0) / (centred * centred).sum(axis=0),
             **_normalized(coefs, r, protocol),
             "centre/R": _maxwell(coefs, x.mean(), y.mean(), protocol, d)[0] / r}
    return {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]
            for k, v in stats.items()}


def _radius_rows(table: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """V1 per configuration: measured against the SDE and the corrected prediction."""
    if protocol == "fixed-sphere":
        measured, sde, corrected = "lambda_eff", "lambda_eff_theory", "lambda_eff_theory_corrected"
    else:
        measured, sde, corrected = "radius", "radius_theory", "radius_theory_corrected"
    out = table[["rate", "second", measured, sde, corrected]].copy()
    out["sde_rel_error"] = (out[measured] - out[sde]) / out[sde]
    out["corrected_rel_error"] = (out[measured] - out[corrected]) / out[corrected]
    return out


def analyze_sweep(path, *, stationary_logs: int | None = None, bootstrap: int = 1000) -> dict:
    """Every check of one sweep directory: {"setup", "table", "radius", "metrics", "V1", "V3",
    ...}."""
    spec, _ = sweep.read_sweep_dir(path)
    metrics, raw = sweep.gather(path)
    missing_runs = raw.loc[~raw["status"].isin(["finished", "diverged"]), "run"].tolist()
    done = raw[raw["status"] == "finished"].copy()
    if done.empty:
        diverged = int((raw["status"] == "diverged").sum())
        raise ValueError(f"{path}: no finished run to analyse ({diverged} diverged, "
                         f"{len(missing_runs)} not finished)")
    absent = [c for c in REQUIRED if c not in done.columns]
    if absent:
        raise ValueError(f"{path}: the runs lack the column(s) {', '.join(absent)}; were they "
                         "written by `thermosgd train` / `sweep run`?")
    logs = stationary_logs or int(spec.train.get("stationary_logs", 30))
    flags = {run: converging(m, logs=logs) for run, m in metrics.groupby("run")}
    done["converging"] = done["run"].map(flags).fillna(False).astype(bool)
    second = "sphere_radius" if spec.protocol == "fixed-sphere" else "weight_decay"
    done = done.rename(columns={"learning_rate": "rate", second: "second",
                                "train_loss": "U"})
    keep = ["run", "rate", "second", "seed", "converging", "U", "sigma2", "temperature",
            "pressure", "volume", "radius", "entropy_sphere", "entropy", "radius_theory",
            "radius_theory_corrected", "lambda_eff", "lambda_eff_theory",
            "lambda_eff_theory_corrected", "trace_cov", "test_acc", "d"]
    table = done[[c for c in keep if c in done.columns]].sort_values(["rate", "second"])
    stationary = table[~table["converging"]]
    d = int(table["d"].iloc[0]) if len(table) else 0
    result = {
        "setup": {"sweep": spec.name, "protocol": spec.protocol, "model": spec.model,
                  "width": spec.width, "dataset": spec.dataset, "d": d,
                  "iterations": spec.iterations, "configurations": spec.size},
        "missing_runs": missing_runs,
        "diverged_runs": raw.loc[raw["status"] == "diverged", "run"].tolist(),
        "converging_runs": table.loc[table["converging"], "run"].tolist(),
        "table": table,
        "metrics": metrics,  # every log of every run, for the learning curves
    }
    radius = _radius_rows(stationary, spec.protocol)
    result["radius"] = radius
    result["V1"] = {
        "quantity": "lambda_eff" if spec.protocol == "fixed-sphere" else "radius",
        "sde": _errors(radius["sde_rel_error"]),
        "corrected": _errors(radius["corrected_rel_error"])}
    if spec.protocol in ("fixed-lr", "fixed-elr"):
        usable = int(np.isfinite(stationary["entropy"].to_numpy(float)).sum())
        if usable < MIN_FIT_POINTS:
            raise ValueError(
                f"{path}: the quadratic entropy fit needs at least {MIN_FIT_POINTS} "
                f"configurations with an entropy, got {usable}: "
                f"{len(result['converging_runs'])} still converging (appendix H), "
                f"{len(missing_runs)} not finished, {len(result['diverged_runs'])} diverged")
        grid = stationary.assign(lr=stationary["rate"], wd=stationary["second"],
                                 protocol=spec.protocol)
        interior = analysis.interior_mask(grid) if len(grid) else None
        result["V3"] = table4(stationary["rate"], stationary["second"], stationary["entropy"],
                              protocol=spec.protocol, d=d, interior=interior,
                              bootstrap=bootstrap)
        paper = PAPER_TABLE4.get((spec.model, spec.width, spec.dataset), {})
        result["V3"]["paper"] = paper.get(spec.protocol)
    return result


def write_analysis(path, result: dict) -> list:
    """``path/analysis.json`` (every number, with provenance), ``analysis_table.csv`` (the
    stationary table) and ``analysis_radius.csv`` (V1 per configuration), written atomically."""
    path = Path(path)
    _io.write_csv(path / "analysis_table.csv", result["table"])
    _io.write_csv(path / "analysis_radius.csv", result["radius"])
    record = {k: v for k, v in result.items() if k not in ("table", "radius", "metrics")}
    _io.write_json(path / "analysis.json", record | _io.provenance())
    return [path / "analysis.json", path / "analysis_table.csv", path / "analysis_radius.csv"]


def _errors(rel) -> dict:
    rel = np.abs(np.asarray(rel, float))
    rel = rel[np.isfinite(rel)]
    if not rel.size:
        return {"median_rel_error": None, "max_rel_error": None, "n": 0}
    return {"median_rel_error": float(np.median(rel)), "max_rel_error": float(rel.max()),
            "n": int(rel.size)}
