"""From the monitor's raw group sums to the thermodynamic state of each group (host, NumPy).

Conventions: w is a group's weights at the log step, before that step's update (the point where
the mini-batch gradient g was taken); d its size; the unit sphere quantities use P1,
grad L(w_bar) = |w| grad L(w).

Geometry of one step (u = w1 - w0, r0 = |w0|, r1 = |w1|):
  r1^2 = r0^2 + 2 u.w0 + u.u,  delta = r0 - r1 = -(2 u.w0 + u.u) / (r0 + r1),
  |w1/r1 - w0/r0|^2 = (u.u + 2 (u.w0) delta / r0 + delta^2) / r1^2  (no cancellation),
  angular update = 2 asin(chord / 2); radial share = (u.w0)^2 / (r0^2 u.u).

Gradient noise from the loop's own mini-batches. Over a window of K consecutive steps,
  Tr Sigma_w = (sum_k |g_k|^2 - |sum_k g_k|^2 / K) / (K - 1),   Tr Sigma = r0^2 Tr Sigma_w,
unbiased when the full gradient grad L(w_k) stays put over the window; its drift along the
trajectory adds the spread of grad L(w_k) over the window (an upward bias, small when
K * eta_eff is small). E|grad L_B(w_bar)|^2 = r0^2 sum_k |g_k|^2 / K is unbiased and is what
appendix G's correction needs (eq. 117-119); |grad L(w_bar)|^2 is the difference. BatchNorm makes
a batch gradient depend on the whole batch: the estimate is that of batch gradients, not of
per-sample ones. The rescaling by r0^2 uses the norm at the log step: the norm drifts by a
relative 2 K eta lambda |distance| over the window at most.

Predictions (:mod:`thermosgd.theory.optimizers`): T = eta' sigma^2 / (2 r^2), p = lambda' and
Z = pV / (RT) = (r / r*_SDE)^4; r* from Tr Sigma (SDE, eq. 19 with eta -> eta') and from
E|grad L_B|^2 (appendix G, eq. 119); the angle per step from the SDE balance, and for plain SGD
the exact discrete one: |w1|^2 = (1 - eta lambda)^2 r^2 + eta^2 |g|^2 with g orthogonal to w, so
tan^2(theta) = eta^2 |g|^2 / ((1 - eta lambda)^2 r^2) and at balance E tan^2(theta) =
1 / (1 - eta lambda)^2 - 1, i.e. cos(theta*) = 1 - eta lambda.

Relaxation time: the norm balance per step x = r^2, dx = -2 eta' lambda x + eta'^2 Q / x
(Q = E|grad L_B(w_bar)|^2), linearized at x*^2 = eta' Q / (2 lambda) relaxes at rate
4 eta' lambda (SGD, momentum, Nesterov); for AdamW the step's size is set by the preconditioner,
dx = -2 eta lambda x + eta^2 d (eps -> 0), which relaxes at rate 2 eta lambda.
"""

from __future__ import annotations

import warnings

import numpy as np

from thermosgd import theory
from thermosgd.theory.optimizers import (
    compressibility,
    optimizer_angular_update,
    optimizer_pressure,
    optimizer_radius_fixed_lr,
    optimizer_temperature,
    sgd_equivalent,
)

__all__ = ["REGIMES", "classify", "state_table"]

REGIMES = ("equilibrium", "relaxing", "converging", "collapsing", "idle")
EQUILIBRIUM_BAND = 0.1  # |log(r / r*)| below this: at equilibrium (10 % in norm)
TREND_T = -3.0  # a fall is significant when its regression slope's t-statistic is below this
TREND_FALL = 0.1  # ... and it amounts to more than 10 % across the window


def _ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def state_table(raw: dict, *, d, optimizer, learning_rate, weight_decay) -> dict:
    """Columns for arrays of logs x groups. ``raw``: the RAW sums of
    :mod:`thermosgd.nn._monitor_stats` (each (L, G)); ``d`` (G,); ``optimizer`` a
    theory ``Optimizer`` or None (no prediction); ``learning_rate``, ``weight_decay`` (L, G)."""
    r0sq, uu, uw = raw["r0sq"], raw["uu"], raw["uw"]
    d = np.asarray(d, dtype=float)
    r0 = np.sqrt(r0sq)
    r1 = np.sqrt(np.maximum(r0sq + 2 * uw + uu, 0.0))
    delta = -_ratio(2 * uw + uu, r0 + r1)
    chord2 = np.maximum(_ratio(uu + 2 * uw * _ratio(delta, r0) + delta**2, r1**2), 0.0)
    n = raw["n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        trace_w = np.where(n >= 2, (raw["s2"] - raw["s1s1"] / n) / (n - 1), np.nan)
        stoch = r0sq * raw["s2"] / n
    trace = np.maximum(r0sq * trace_w, 0.0)
    cols = {
        "norm": r0,
        "volume": theory.volume(r0),
        "angular_update": 2 * np.arcsin(np.minimum(np.sqrt(chord2) / 2, 1.0)),
        "radial_share": _ratio(_ratio(uw**2, r0sq), uu),
        "grad_cosine": _ratio(raw["gw"], np.sqrt(raw["gg"] * r0sq)),
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "trace_cov": trace,
        "sigma2": _ratio(trace, d - 1),
        "stoch_grad_norm2": stoch,
        "full_grad_norm2": np.maximum(stoch - trace, 0.0),
        "noise_steps": n,
        "preconditioner": np.full_like(r0, np.nan),
    }
    names = ("effective_learning_rate", "temperature", "pressure", "compressibility",
             "radius_theory", "radius_theory_corrected", "angular_update_theory",
             "angular_update_theory_corrected", "distance", "relaxation_steps")
    cols |= {k: np.full_like(r0, np.nan) for k in names}
    if optimizer is None:
        return cols
    c = None
    if optimizer.adaptive:
        c = raw["csum"] / d + optimizer.eps  # mean sqrt(v_hat) + eps over the group
        cols["preconditioner"] = c
    lr, wd = np.asarray(learning_rate, float), np.asarray(weight_decay, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate, pressure = sgd_equivalent(optimizer, lr, wd, c)
        temperature = optimizer_temperature(optimizer, lr, r0, cols["sigma2"], c)
        ok = wd > 0
        r_sde = optimizer_radius_fixed_lr(optimizer, lr, np.where(ok, wd, np.nan), trace, d)
        r_g = optimizer_radius_fixed_lr(optimizer, lr, np.where(ok, wd, np.nan), stoch, d)
        rate_of_relaxation = (2.0 if optimizer.adaptive else 4.0) * rate * pressure
        cols |= {
            "effective_learning_rate": rate / r0sq,
            "temperature": temperature,
            "pressure": optimizer_pressure(optimizer, wd, c) * np.ones_like(r0),
            "compressibility": compressibility(pressure, cols["volume"], temperature, d),
            "radius_theory": r_sde,
            "radius_theory_corrected": r_g,
            "angular_update_theory": np.where(
                ok, optimizer_angular_update(optimizer, lr, wd), np.nan) * np.ones_like(r0),
            "distance": np.log(r0 / r_g),
            "relaxation_steps": np.where(ok, 1.0 / rate_of_relaxation, np.inf),
        }
        if optimizer.name == "sgd":
            cols["angular_update_theory_corrected"] = np.where(
                ok & (lr * wd < 1), np.arccos(1.0 - lr * wd), np.nan) * np.ones_like(r0)
    return cols


def _trend(steps, values):
    """Per column of ``values`` (W, G) over ``steps`` (W,): the slope's t-statistic and the
    relative change across the window (NaN with fewer than 4 finite logs)."""
    y = np.asarray(values, float)
    ok = np.isfinite(y)
    x = np.broadcast_to(np.asarray(steps, float)[:, None], y.shape)
    count = ok.sum(0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xm = np.where(ok, x, 0).sum(0) / count
        ym = np.where(ok, y, 0).sum(0) / count
        xc, yc = np.where(ok, x - xm, 0), np.where(ok, y - ym, 0)
        sxx = (xc * xc).sum(0)
        slope = (xc * yc).sum(0) / sxx
        resid = np.where(ok, yc - slope * xc, 0)
        se = np.sqrt((resid * resid).sum(0) / (count - 2) / sxx)
        t = np.where(se > 0, slope / se, np.copysign(np.inf, slope))
        span = np.where(ok, x, -np.inf).max(0) - np.where(ok, x, np.inf).min(0)
        fall = 1.0 - np.exp(slope * span)
    few = (count < 4) | ~(sxx > 0)
    return np.where(few, np.nan, t), np.where(few, np.nan, fall)


def classify(steps, norm, trace_cov, distance, angle_ratio) -> list[str]:
    """The regime of each group (columns of the (W, G) arrays) over its last W logs; "" when
    it has no prediction.

    - collapsing: the norm falls significantly (t < -3, by > 10 %) while the angle per step
      exceeds its equilibrium value: the effective learning rate eta / r^2 grows, the road to
      the loss spikes of scale-invariant nets (Lobacheva et al., 2021);
    - converging: Tr Sigma falls significantly while the norm sits above its prediction: the
      noise dies out and SGD converges like full-batch GD (appendix H);
    - equilibrium: |log(r / r*)| < 0.1 against the appendix-G radius, over the window;
    - relaxing: none of these (on its way, at the relaxation time of the norm balance);
    - idle: no gradient reached the group in the last noise window (r* = 0: a dead channel
      that weight decay alone shrinks).
    """
    norm, distance = np.asarray(norm, float), np.asarray(distance, float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group with no prediction yet
        # one log's r* comes from a few steps' noise: the window's balance decides (eq. 116-118),
        # sqrt(mean r^2) against (mean r*^4)^(1/4)
        r_star4 = np.nanmean((norm * np.exp(-distance)) ** 4, axis=0)
        last = 0.5 * np.log(np.nanmean(norm**2, axis=0)) - 0.25 * np.log(r_star4)
    last = np.where(distance[-1] == np.inf, np.inf, np.where(np.isfinite(distance[-1]), last,
                                                             np.nan))
    t_norm, fall_norm = _trend(steps, np.log(np.maximum(norm, 1e-300)))
    t_noise, fall_noise = _trend(steps, np.log(np.maximum(trace_cov, 1e-300)))
    ratio = np.asarray(angle_ratio, float)[-1]
    with np.errstate(invalid="ignore"):
        collapsing = (t_norm < TREND_T) & (fall_norm > TREND_FALL) & (ratio > 1.0)
        converging = (t_noise < TREND_T) & (fall_noise > TREND_FALL) & (last > EQUILIBRIUM_BAND)
        near = np.abs(last) < EQUILIBRIUM_BAND
    out = np.where(collapsing, "collapsing", np.where(
        converging, "converging", np.where(near, "equilibrium", "relaxing")))
    out = np.where(last == np.inf, "idle", np.where(np.isfinite(last), out, ""))
    return out.tolist()
