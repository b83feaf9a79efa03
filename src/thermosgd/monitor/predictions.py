"""From the monitor's raw group sums to the thermodynamic state of each group (host, NumPy).

Conventions: w is a group's weights at the log step, before that step's update (the point where
the mini-batch gradient g was taken); d its size; the unit sphere quantities use P1,
grad L(w_bar) = |w| grad L(w).

Geometry of one step (u = w1 - w0, r0 = |w0|, r1 = |w1|):
  r1^2 = r0^2 + 2 u.w0 + u.u,  delta = r0 - r1 = -(2 u.w0 + u.u) / (r0 + r1),
  |w1/r1 - w0/r0|^2 = (u.u + 2 (u.w0) delta / r0 + delta^2) / r1^2  (no cancellation),
  angular update = 2 asin(chord / 2); radial share = (u.w0)^2 / (r0^2 u.u).

Gradient noise from the loop's own mini-batches, over a window of K consecutive steps:
E|grad L_B(w_bar)|^2 = r0^2 sum_k |g_k|^2 / K is unbiased whatever the dynamics. Its split into
Tr Sigma and ||grad L||^2 is not a window's sample variance (that assumes grad L(w_k) constant
over the window; under momentum the restoring force oscillates within it and the variance takes
most of ||grad L||^2 for noise). Each optimizer's norm balance instead fixes a discrete-step
Q = Tr Sigma + w ||grad L||^2 that the log step's own update u measures
(``docs/optimizers.md``, "What the monitor measures"):
  SGD: Q = E|g_B|^2 (appendix G, eq. 117-121); the split from the lag-1 autocovariance
       sum_k g_k . g_(k-1) / (K - 1) = -||grad L||^2 (the stationarity of E[L] on a quadratic);
  heavy ball: Q = (1 - beta^2) |v_g|^2, v_g = -u / eta - lambda w0 / (1 - beta) the gradient
       part of the step, w = (1 - beta) / (1 + beta);
  Nesterov: Q = 2 (1 - beta) ((1 + beta)/2 |v_g|^2 - beta v_g . g), its friction term;
       rho from Q / E|g_B|^2 = (1 + w rho) / (1 + rho) on the single-mode solution
       (:mod:`thermosgd.theory.modes`);
  AdamW: d_eff = (1 + beta1) / (1 - beta1) |a|^2, a = -(u + eta lambda w0) / eta =
       m_hat / (sqrt(v_hat) + eps), against the window's sum_i E g_i^2 / (sqrt(v_hat_i) + eps)^2.
Each log's values come from one step: their means over stationary logs are the estimates.
BatchNorm makes a batch gradient depend on the whole batch: the estimate is that of batch
gradients, not of per-sample ones.

Predictions (:mod:`thermosgd.theory.optimizers`, :mod:`thermosgd.theory.modes`): r* from
Tr Sigma (SDE, eq. 19 with eta -> eta') and from Q (the discrete balance; AdamW
r*^2 = eta d_eff / (2 lambda)); the temperature of the discrete step T = eta' Q / (2 r^2 (d-1))
(appendix G's replacement of Tr Sigma by Q), p = lambda' (AdamW lambda c_eff,
c_eff^2 = sum_i (s_i^2 + w F_i) / d_eff), so that Z = pV / (RT) = (r / r*)^4 ((r / r*)^2 for
AdamW) tests the gas law; the rms angle per step (Nesterov's at the measured rho), and for plain
SGD the exact single-step one: |w1|^2 = (1 - eta lambda)^2 r^2 + eta^2 |g|^2 with g orthogonal
to w, so tan^2(theta) = eta^2 |g|^2 / ((1 - eta lambda)^2 r^2) and at balance E tan^2(theta) =
1 / (1 - eta lambda)^2 - 1, i.e. cos(theta*) = 1 - eta lambda.

A weight that is not scale-invariant (``thermosgd.monitor.columns``) is predicted as if it
were, the rotational equilibrium of its optimizer; its norm balance has one more term, the
gradient's push along w. ``radial_force`` kappa = E[g . w] / (lambda r^2) (AdamW: g / (sqrt(v_hat)
+ eps), the gradient as its step applies it) is that push against weight decay's pull, and the
balance then reads r^4 (1 + kappa) = r*^4 (AdamW r^2 (1 + kappa) = r*^2). kappa = 0 for a
scale-invariant group under SGD and momentum (P2); AdamW's coordinate-wise preconditioner tilts
even an orthogonal gradient, so there kappa also measures the radial term that moves a
scale-invariant group off r* when the noise is anisotropic. Where |kappa| is small the
approximation holds (``docs/optimizers.md``).

Relaxation time: the norm balance per step x = r^2, dx = -2 eta' lambda x + eta'^2 Q / x
(Q = E|grad L_B(w_bar)|^2), linearized at x*^2 = eta' Q / (2 lambda) relaxes at rate
4 eta' lambda (SGD, momentum, Nesterov); for AdamW the step's size is set by the preconditioner,
dx = -2 eta lambda x + eta^2 d (eps -> 0), which relaxes at rate 2 eta lambda.
"""

from __future__ import annotations

import warnings

import numpy as np

from thermosgd import theory
from thermosgd.theory.modes import (
    adamw_effective_preconditioner,
    adamw_radius_from_statistics,
    nesterov_share_from_balance,
)
from thermosgd.theory.optimizers import (
    compressibility,
    discrete_gradient_weight,
    optimizer_angular_update,
    optimizer_pressure,
    optimizer_radius_fixed_lr,
    optimizer_temperature,
    sgd_equivalent,
)

__all__ = ["REGIMES", "classify", "state_table"]

REGIMES = ("equilibrium", "scheduled", "relaxing", "converging", "collapsing", "idle")
# At the norm balance the angle follows the norm: theta^2 = eta'^2 E|g|^2 / r^2 with |g| ~ 1 / r
# (scale invariance), so (theta / theta*)^2 = (r* / r)^4 for SGD and momentum, (r* / r)^2 for
# AdamW. The angle band is the norm band seen through that balance (twice as wide in the log);
# a narrower one would refuse groups whose norm is within its band, and the angle, one step's
# gradient per log, is also the noisier of the two.
NORM_BAND = 0.1  # |log(r / r*)| below this: the norm at its prediction (10 %)
ANGLE_BAND = 2 * NORM_BAND  # |log(rms angle / rms predicted angle)| below this (22 %)
# The norm relaxes at its own time tau (``relaxation_steps``): logs older than that describe a
# state the group has left, so only the last tau is judged (early, hotter logs with a larger
# r*^4 would otherwise set the mean r*^4); at least MIN_LOGS logs, since one log's r* comes
# from a few steps' noise.
JUDGED_RELAXATIONS = 1.0
MIN_LOGS = 3
# After a step change of eta or lambda the distance decays as exp(-t / tau): a lag seen within
# 3 tau of a change (5 % left of it) is the schedule's. A relative change of 5 % moves r*
# (proportional to (eta / lambda)^(1/4), AdamW's to (eta / lambda)^(1/2)) by 2.5 % at most, a
# quarter of the norm band: smaller changes (and float jitter) are not a schedule.
SCHEDULE_RELAXATIONS = 3.0
SCHEDULE_TOLERANCE = 0.05
# One log's own r* comes from one noise window and scatters (heavy-tailed on small groups); a
# log whose own |log(r / r*)| exceeds 5 norm bands is not called equilibrium whatever its span
# says: the row would contradict its label.
ROW_BAND = 5 * NORM_BAND
TREND_T = -3.0  # a fall is significant when its regression slope's t-statistic is below this
TREND_FALL = 0.1  # ... and it amounts to more than 10 % across the window


def _ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def _balance(raw: dict, optimizer, lr, wd):
    """What the optimizer's own step says of the gradient, per log and group (raw units).

    Returns (q, g2, share): q the discrete-step noise the norm balance feels (Q / r^2, module
    doc; AdamW: d_eff, a count), g2 its counterpart without the optimizer's weighting
    (E|g_B|^2; AdamW: sum_i E g_i^2 / v_i), and the full-batch share rho = E||grad L||^2 /
    Tr Sigma that splits them."""
    n, b = raw["n"], optimizer.momentum
    g2 = raw["s2"] / n
    if optimizer.name == "sgd":  # appendix G's Q is E|g_B|^2; the lag-1 covariance is -F
        full = -raw["lag"] / (n - 1)
        return g2, g2, _ratio(full, g2 - full)
    # the gradient part of the step: u = -eta (v_g + c w0 / eta), c the decay it carries
    c = lr * wd / (1.0 if optimizer.adaptive else 1.0 - b)
    vg2 = (raw["uu"] + 2 * c * raw["uw"] + c * c * raw["r0sq"]) / lr**2
    if optimizer.adaptive:
        g2 = raw["g2v"]
        q = (1 + b) / (1 - b) * vg2
    elif optimizer.name == "momentum":
        q = (1 - b * b) * vg2
    else:  # Nesterov's balance carries the friction term E[v_g . g]
        vg_g = -(raw["ug"] + c * raw["gw"]) / lr
        q = 2 * (1 - b) * ((1 + b) / 2 * vg2 - b * vg_g)
    if optimizer.name == "nesterov":
        share = nesterov_share_from_balance(b, _ratio(q, g2))
    else:
        w = discrete_gradient_weight(optimizer)
        full = (g2 - q) / (1 - w)
        share = _ratio(full, g2 - full)
    return q, g2, share


def state_table(raw: dict, *, d, optimizer, learning_rate, weight_decay) -> dict:
    """Columns for arrays of logs x groups. ``raw``: the RAW sums of
    :mod:`thermosgd.monitor.stats` (each (L, G)); ``d`` (G,); ``optimizer`` a
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
    names = ("radial_force", "effective_learning_rate", "temperature", "pressure", "compressibility",
             "radius_theory", "radius_theory_corrected", "angular_update_theory",
             "angular_update_theory_corrected", "distance", "relaxation_steps")
    cols |= {k: np.full_like(r0, np.nan) for k in names}
    if optimizer is None:
        return cols
    lr, wd = np.asarray(learning_rate, float), np.asarray(weight_decay, float)
    ok = wd > 0
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a log without a closed window
        q, g2, share = _balance(raw, optimizer, lr, np.where(ok, wd, np.nan))
        share = np.maximum(share, 0.0)
        trace = stoch / (1 + share)  # the split of E|g_B|^2 = Tr Sigma (1 + rho)
        cols |= {"trace_cov": trace, "sigma2": _ratio(trace, d - 1),
                 "full_grad_norm2": stoch - trace}
        lam = np.where(ok, wd, np.nan)
        if optimizer.adaptive:
            w = discrete_gradient_weight(optimizer)
            noise_count = g2 / (1 + share)  # sum_i s_i^2 / v_i
            q_raw = raw["s2"] / n * (1 + w * share) / (1 + share)  # sum_i (s_i^2 + w F_i)
            c = adamw_effective_preconditioner(q_raw, q)
            cols["preconditioner"] = c
            r_sde = adamw_radius_from_statistics(lr, lam, noise_count)
            r_g = adamw_radius_from_statistics(lr, lam, q)
            q_eff = r0sq * q_raw  # unit-sphere Q of the discrete step
        else:
            c = None
            q_eff = r0sq * q
            r_sde = optimizer_radius_fixed_lr(optimizer, lr, lam, trace, d)
            r_g = optimizer_radius_fixed_lr(optimizer, lr, lam, q_eff, d)
        rate, pressure = sgd_equivalent(optimizer, lr, wd, c)
        temperature = optimizer_temperature(optimizer, lr, r0, _ratio(q_eff, d - 1), c)
        rate_of_relaxation = (2.0 if optimizer.adaptive else 4.0) * rate * pressure
        cols |= {
            "effective_learning_rate": rate / r0sq,
            "temperature": temperature,
            "pressure": optimizer_pressure(optimizer, wd, c) * np.ones_like(r0),
            "compressibility": compressibility(pressure, cols["volume"], temperature, d),
            "radius_theory": r_sde,
            "radius_theory_corrected": r_g,
            "angular_update_theory": np.where(
                ok, optimizer_angular_update(optimizer, lr, wd, share), np.nan)
            * np.ones_like(r0),
            "distance": np.log(r0 / r_g),
            "relaxation_steps": np.where(ok, 1.0 / rate_of_relaxation, np.inf),
        }
        # the gradient's mean push on the norm against weight decay's pull (0 for a
        # scale-invariant group under SGD, P2); AdamW's gradient as its step applies it,
        # g / (sqrt(v_hat) + eps), which its preconditioner tilts off the sphere's tangent
        push = raw.get("gvw", np.full_like(r0, np.nan)) if optimizer.adaptive else raw["gw"]
        cols["radial_force"] = _ratio(push, lam * r0sq)
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


def _mean(values, mask):
    """Mean of ``values`` (W, G) over the rows of ``mask`` where finite; NaN where none."""
    ok = mask & np.isfinite(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, values, 0.0).sum(0) / ok.sum(0)


def _norm_off(norm, distance, mask):
    """log(sqrt(E r^2) / (E r*^4)^(1/4)) over the logs of ``mask``: the balance holds in
    expectation and r*^4 is linear in the noise (eq. 116-118)."""
    ok = mask & np.isfinite(distance)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (0.5 * np.log(_mean(norm**2, ok))
                - 0.25 * np.log(_mean((norm * np.exp(-distance)) ** 4, ok)))


def _spread(values, mask):
    """The relative spread (max - min) / max of ``values`` (W, G) over ``mask``: (G,)."""
    hi = np.where(mask, values, -np.inf).max(0)
    lo = np.where(mask, values, np.inf).min(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hi > 0, (hi - lo) / np.where(hi > 0, hi, 1.0), 0.0)


def _moved(values, mask):
    """Whether ``values`` (W, G) spread by more than SCHEDULE_TOLERANCE over ``mask``."""
    return _spread(values, mask) > SCHEDULE_TOLERANCE


def classify(steps, *, norm, trace_cov, distance, angular_update, angular_update_theory,
             learning_rate, weight_decay, relaxation_steps) -> list[str]:
    """The regime of each group (the columns of the (W, G) arrays, the monitor's columns of
    the same names) at the last of its W logs; "" when it has no prediction.

    The judged span is the logs within the last relaxation time tau of the norm (at least 3,
    at most W); the schedule span the last 3 tau.

    - equilibrium: the norm within NORM_BAND of r* (appendix G) in each half of the judged
      span, so that a drift of r* inside it cannot average out, and the norm-weighted rms
      angle per step within ANGLE_BAND of its rms prediction, sqrt(E|u|^2 / E|w|^2), over it,
      and the last log's own distance within ROW_BAND. Whatever the schedule: a slow one that
      the group follows within the bands is quasi-static and the predictions hold log by log;
    - collapsing: the norm falls significantly over the window (t < -3, by > 10 %) while the
      rms angle exceeds its band above equilibrium: the effective learning rate eta / r^2
      grows, the road to the loss spikes of scale-invariant nets (Lobacheva et al., 2021);
    - scheduled: outside the bands after the learning rate or weight decay moved by more than
      5 % over the schedule span (or to 0): the group lags its schedule;
    - converging: Tr Sigma falls significantly over the window while the norm sits above its
      band: the noise dies out and SGD converges like full-batch GD (appendix H); it takes
      precedence over "scheduled" when Tr Sigma's fall over the window is at least twice, in
      log terms, the spread of the learning rate and weight decay (r*^4 ~ eta Tr Sigma: the
      noise, not the schedule, moved the prediction);
    - relaxing: outside the bands with constant hyperparameters otherwise (a transient, at the
      relaxation time of the norm balance);
    - idle: no gradient reached the group in the last noise window while the learning rate is
      positive (r* = 0: a dead channel that weight decay alone shrinks).
    """
    steps = np.asarray(steps, float)  # (W,)
    norm, distance, lr, wd, tau, angle, predicted = (np.asarray(a, float) for a in (
        norm, distance, learning_rate, weight_decay, relaxation_steps, angular_update,
        angular_update_theory))  # each (W, G)
    w = len(steps)
    age = (steps[-1] - steps)[:, None]  # (W, 1)
    row = np.arange(w)[:, None]
    with np.errstate(invalid="ignore"):
        judged = (age <= JUDGED_RELAXATIONS * tau[-1]) | (row >= w - MIN_LOGS)  # (W, G)
        span = (age <= SCHEDULE_RELAXATIONS * tau[-1]) | (row >= w - 2)
    newer = judged & (row >= w - (judged.sum(0) + 1) // 2)  # the newer half of the span
    off_old, off_new = _norm_off(norm, distance, judged & ~newer), _norm_off(norm, distance, newer)
    r2 = norm**2  # the norm-weighted rms angle: E|u|^2 / E|w|^2 with theta^2 ~ |u|^2 / r^2
    ok = judged & np.isfinite(angle) & np.isfinite(predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        off_angle = 0.5 * np.log(_mean(r2 * angle**2, ok) / _mean(r2 * predicted**2, ok))
    moved = _moved(lr, span) | _moved(wd, span)
    t_norm, fall_norm = _trend(steps, np.log(np.maximum(norm, 1e-300)))
    # with every < noise_window one noise window serves several logs: count its value once
    trace = np.asarray(trace_cov, float)
    fresh = np.vstack([np.ones_like(trace[:1], bool), trace[1:] != trace[:-1]])
    t_noise, fall_noise = _trend(steps, np.where(fresh, np.log(np.maximum(trace, 1e-300)),
                                                 np.nan))
    last, lr_now = distance[-1], lr[-1]
    with np.errstate(invalid="ignore"):
        near = ((np.abs(off_old) < NORM_BAND) & (np.abs(off_new) < NORM_BAND)
                & (np.abs(off_angle) < ANGLE_BAND) & (np.abs(last) < ROW_BAND))
        collapsing = (t_norm < TREND_T) & (fall_norm > TREND_FALL) & (off_angle > ANGLE_BAND)
        converging = ((t_noise < TREND_T) & (fall_noise > TREND_FALL)
                      & (off_new > NORM_BAND))
        # r*^4 ~ eta Tr Sigma: the noise's fall is at least twice the schedule's in log
        # terms (the schedule explains at most a third of the fall of r*^4)
        kept = 1.0 - np.maximum(_spread(lr, judged), _spread(wd, judged))
        noise_first = converging & (1.0 - fall_noise < kept**2)
        frozen = lr_now == 0  # r* = 0 too: nothing moves, nothing to predict
    out = np.select(
        [np.isnan(last), frozen & moved, frozen, last == np.inf, collapsing, near, noise_first,
         moved, converging],
        ["", "scheduled", "", "idle", "collapsing", "equilibrium", "converging", "scheduled",
         "converging"],
        "relaxing")
    return out.tolist()
