"""The entropy fits: a plane and the quadratic of eq. 34 / 108 in the log hyperparameters, the
Maxwell relation read off the quadratic (eq. 109), Table 4's normalized coefficients, and a
residual bootstrap of all of them.

x = log of the rate (η or η_eff), y = log of the grid's other axis (λ, or r on the sphere). One design
matrix serves every fit: (1, x, y) for the plane, (1, x, y, x², y², x y) for the quadratic
S = a0 + a1 x + a2 y + a3 x² + a4 y² + a5 x y.
"""

from __future__ import annotations

import numpy as np

from thermosgd import theory

__all__ = ["MIN_FIT_POINTS", "PAPER_TABLE4", "entropy_plane", "quadratic_entropy_fit",
           "quadratic_surface", "table4"]

MIN_FIT_POINTS = 6  # the quadratic of eq. 34 has six coefficients
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


def _design(x, y, quadratic: bool) -> np.ndarray:
    cols = [np.ones_like(x), x, y] + ([x * x, y * y, x * y] if quadratic else [])
    return np.stack(cols, axis=1)  # (m, 3) or (m, 6)


def quadratic_surface(coef, log_x, log_y) -> np.ndarray:
    """The fitted quadratic S(log_x, log_y) of eq. 34 at the given points."""
    x, y = np.asarray(log_x, float), np.asarray(log_y, float)
    return _design(x, y, quadratic=True) @ np.asarray(coef, float)


def _fit(log_x, log_y, entropy, quadratic):
    """Least squares of S on the design over the finite entries: (coef, resid, S, design)."""
    x, y, s = (np.asarray(a, float) for a in (log_x, log_y, entropy))
    ok = np.isfinite(s)
    x, y, s = x[ok], y[ok], s[ok]
    design = _design(x, y, quadratic)
    coef, *_ = np.linalg.lstsq(design, s, rcond=None)
    return coef, s - design @ coef, s, design


def entropy_plane(log_x, log_y, entropy) -> dict:
    """Least-squares plane S = a0 + a1 x + a2 y: slopes a1, a2 with standard errors."""
    coef, resid, s, design = _fit(log_x, log_y, entropy, quadratic=False)
    dof = max(s.size - 3, 1)
    stderr = np.sqrt(np.diag(np.linalg.pinv(design.T @ design)) * (resid @ resid) / dof)
    return {"a1": float(coef[1]), "a2": float(coef[2]),
            "a1_stderr": float(stderr[1]), "a2_stderr": float(stderr[2])}


def quadratic_entropy_fit(log_x, log_y, entropy) -> dict:
    """The quadratic of eq. 34 / 108: coefficients a0..a5 and R²."""
    coef, resid, s, _ = _fit(log_x, log_y, entropy, quadratic=True)
    total = s - s.mean()
    r2 = 1.0 - (resid @ resid) / (total @ total) if total @ total > 0 else float("nan")
    return {f"a{k}": float(c) for k, c in enumerate(coef)} | {"r2": float(r2)}


def _maxwell(coef, log_x, log_y, protocol, d, target=None):
    """The Maxwell relation's left side at (log_x, log_y) from the quadratic (eq. 109), and its
    target: fixed LR dS/dlog η - dS/dlog λ = (d-1)/2 (eq. 110); fixed ELR dS/dlog λ = -(d-1)/2
    (eq. 85); ``target`` where an optimizer moves it. ``coef`` is (6,) or (6, n) for n fits."""
    a = coef
    if protocol == "fixed-lr":
        lhs = (a[1] - a[2]) + (2 * a[3] - a[5]) * log_x + (a[5] - 2 * a[4]) * log_y
        return lhs, float(theory.maxwell_target_fixed_lr(d)) if target is None else target
    lhs = a[2] + 2 * a[4] * log_y + a[5] * log_x
    return lhs, float(theory.maxwell_target_fixed_elr(d)) if target is None else target


def _normalized(coef, r, protocol) -> dict:
    """Table 4's coefficients over R = (d-1)/2: fixed LR (a1-a2)/R = 1 and (2a3-a5)/R =
    (2a4-a5)/R = 0 (eq. 110 at every point); fixed ELR a2/R = -1, 2a4/R = a5/R = 0 (eq. 85)."""
    a = coef
    if protocol == "fixed-lr":
        return {"(a1-a2)/R": (a[1] - a[2]) / r, "(2a3-a5)/R": (2 * a[3] - a[5]) / r,
                "(2a4-a5)/R": (2 * a[4] - a[5]) / r}
    return {"a2/R": a[2] / r, "2a4/R": 2 * a[4] / r, "a5/R": a[5] / r}


def table4(learning_rate, weight_decay, entropy, *, protocol: str, d: int, interior=None,
           bootstrap: int = 1000, seed: int = 0, maxwell_target: float | None = None) -> dict:
    """V3 as the paper's Table 4, from the quadratic S(log η, log λ) of eq. 34/108: R², the normalized coefficients (R = (d-1)/2), the relation's
    left side (eq. 109) at the grid's centre over R ("centre/R": 1 for fixed LR, -1 for fixed
    ELR), its max and mean relative error over the points (and over ``interior``), and 95 %
    percentile intervals of R² and the coefficients from a residual ``bootstrap`` of the fit
    drawn with ``seed`` (see :func:`_bootstrap`). ``maxwell_target``: the relation's target
    where the optimizer moves it from SGD's (AdamW); the coefficients are then normalized by
    |target| in place of R, so that 1 (fixed LR) stays the value to expect, and the target is
    reported."""
    if protocol not in ("fixed-lr", "fixed-elr"):
        raise ValueError(f"Table 4 covers fixed-lr and fixed-elr, not {protocol}")
    lx, ly = np.log(np.asarray(learning_rate, float)), np.log(np.asarray(weight_decay, float))
    s = np.asarray(entropy, float)
    if np.isfinite(s).sum() < MIN_FIT_POINTS:
        raise ValueError(f"the quadratic entropy fit needs at least {MIN_FIT_POINTS} "
                         f"configurations with an entropy, got {int(np.isfinite(s).sum())}")
    r = float(theory.gas_constant(d)) if maxwell_target is None else abs(maxwell_target)
    fit = quadratic_entropy_fit(lx, ly, s)
    coef = np.array([fit[f"a{k}"] for k in range(6)])
    lhs, target = _maxwell(coef, lx, ly, protocol, d, maxwell_target)
    err = np.abs(lhs - target) / abs(target)
    centre = lx[np.isfinite(s)].mean(), ly[np.isfinite(s)].mean()
    out = {"r2": fit["r2"], **_normalized(coef, r, protocol),
           "centre/R": float(_maxwell(coef, *centre, protocol, d, maxwell_target)[0] / r),
           "max_rel_error": float(err.max()), "mean_rel_error": float(err.mean()),
           "coefficients": coef.tolist(), "n_points": int(np.isfinite(s).sum())}
    if maxwell_target is not None:
        out["maxwell_target"] = float(maxwell_target)
    if interior is not None and np.any(interior):
        out["interior_max_rel_error"] = float(err[interior].max())
        out["interior_mean_rel_error"] = float(err[interior].mean())
    out["ci95"] = (_bootstrap(lx, ly, s, protocol, d, r, bootstrap, seed, maxwell_target)
                   if bootstrap else {})
    return out


def _bootstrap(lx, ly, s, protocol, d, r, n, seed, target=None) -> dict:
    """Residual bootstrap: the grid is a fixed design (the hyperparameters are chosen, not
    sampled), so each draw refits the fitted surface plus residuals drawn with replacement,
    centred and inflated by sqrt(m / (m - 6)) for the six fitted coefficients. A pairs bootstrap
    drops whole grid rows: on a 5 x 3 grid it leaves the quadratic barely identified and its
    intervals span several units. No interval without a residual degree of freedom (m <= 6)."""
    ok = np.isfinite(s)
    x, y, values = lx[ok], ly[ok], s[ok]
    design = _design(x, y, quadratic=True)  # (m, 6)
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
    # The Maxwell relation's left side at the grid's centre (mean log rate, mean log λ) is well
    # determined; the coefficients are slopes at η = λ = 1, often far outside the grid, where
    # the curvature terms extrapolate. No interval for the Maxwell errors: replicates of an
    # absolute error are biased upward (noise only adds to |error|), so their percentile
    # interval can miss the estimate itself.
    stats = {"r2": 1 - (res * res).sum(axis=0) / (centred * centred).sum(axis=0),
             **_normalized(coefs, r, protocol),
             "centre/R": _maxwell(coefs, x.mean(), y.mean(), protocol, d, target)[0] / r}
    return {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]
            for k, v in stats.items()}
