"""Discrete steps of each optimizer on one quadratic mode: how the full-batch gradient enters.

Appendix G (eq. 117-121) corrects SGD's stationary radius for the finite step: the norm balance
2 eta lambda E|w|^2 = eta^2 E|g_B|^2 holds per step, so Q = Tr Sigma + E||grad L||^2 replaces
Tr Sigma. Under momentum the full-batch gradient is a restoring force, correlated over the
buffer's memory, and its weight in Q is no longer 1. This module computes that weight exactly
for a transverse direction of curvature h with gradient g_t = h x_t + xi_t (white noise xi of
variance s^2), the model appendix G and ``docs/optimizers.md`` use:

    heavy ball   b_t = beta b_(t-1) + g_t,            u_t = -eta b_t
    Nesterov     b_t = beta b_(t-1) + g_t,            u_t = -eta (g_t + beta b_t)
    x_(t+1) = x_t + u_t.

The stationary second moments of this linear system solve a discrete Lyapunov equation. With
F = E (h x)^2 the mode's squared full-batch gradient and rho = F / s^2 its share:

* heavy ball: (1 - beta^2) E u^2 / eta^2 = s^2 + w F, w = (1 - beta) / (1 + beta) at *every*
  eta h (exact; SGD is beta = 0, w = 1);
* Nesterov: the norm balance carries the friction term E[-u g] (``docs/optimizers.md``),
  2 (1 - beta) [(1 + beta)/2 E u^2 / eta^2 - beta E[-u g] / eta] = s^2 + w F, and E u^2 / eta^2
  = k s^2 + k_F F. For eta h -> 0: w = (1 + beta - 2 beta^2 - 4 beta^3) / (1 + beta) (-1.387 at
  beta = 0.9), k_F = (1 + 3 beta - 8 beta^3 - 4 beta^4 + 4 beta^5) / ((1 - beta)(1 + beta)^2);
  both drift with eta h (w = -1.11 at eta h = 0.1, beta = 0.9), so the weight depends on the
  curvature. A mode's rho rises monotonically with eta h, so the measured rho names an
  effective eta h: :func:`nesterov_weights` reads (w, k_F) there, exact for one curvature and
  the curvature-aware estimate otherwise.
* AdamW with a slowly varying v (beta2 -> 1): per coordinate m is heavy ball at beta1 with the
  gradient scaled by (1 - beta1) / sqrt(v), so w = (1 - beta1) / (1 + beta1) exactly, and
  E (m_hat / sqrt(v))^2 = (1 - beta1)/(1 + beta1) (s^2 + w F) / v (see
  :func:`adamw_effective_dimension`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "mode_moments",
    "nesterov_weights",
    "nesterov_small_step_weights",
    "nesterov_share_from_balance",
    "adamw_effective_dimension",
    "adamw_radius_from_statistics",
    "adamw_effective_preconditioner",
]


def _system(name: str, beta, eta_h):
    """(A, B, c_u, d_u, c_g) of the state (x_t, b_(t-1)) at eta = 1 (eta h is the only scale):
    s_(t+1) = A s_t + B xi_t, u_t = c_u . s_t + d_u xi_t, g_t = c_g . s_t + xi_t."""
    beta, h = np.broadcast_arrays(np.asarray(beta, float), np.asarray(eta_h, float))
    a = 1.0 + beta if name == "nesterov" else np.ones_like(beta)  # weight of g_t in u_t
    m = beta * beta if name == "nesterov" else beta  # weight of b_(t-1) in u_t
    zero, one = np.zeros_like(h), np.ones_like(h)
    c_u = np.stack([-a * h, -m], -1)  # (..., 2)
    A = np.stack([np.stack([1.0 - a * h, -m], -1), np.stack([h, beta], -1)], -2)  # (..., 2, 2)
    B = np.stack([-a, one], -1)
    return A, B, c_u, -a, np.stack([h, zero], -1)


def mode_moments(name: str, beta, eta_h):
    """Stationary moments of one mode at unit noise variance s^2 = 1 and eta = 1.

    ``name``: "sgd", "momentum" or "nesterov". Returns (E u^2 / eta^2, F = E (h x)^2,
    E[-u g] / eta), arrays over the broadcast of ``beta`` and ``eta_h``; NaN where the step
    is unstable (a root of the recursion outside the unit circle).
    """
    if name == "sgd":
        beta = np.zeros_like(np.asarray(eta_h, float))
    A, B, c_u, d_u, c_g = _system(name, beta, eta_h)
    # at the stability edge I - A (x) A is singular: solve a stable stand-in there, then NaN
    stable = np.abs(np.linalg.eigvals(A)).max(-1) < 1.0 - 1e-9
    A = np.where(stable[..., None, None], A, 0.0)
    # vec(P) = (I - A (x) A)^-1 vec(B B^T): the discrete Lyapunov equation P = A P A^T + B B^T
    kron = np.einsum("...ij,...kl->...ikjl", A, A).reshape(*A.shape[:-2], 4, 4)
    rhs = (B[..., :, None] * B[..., None, :]).reshape(*B.shape[:-1], 4)
    P = np.linalg.solve(np.eye(4) - kron, rhs[..., None])[..., 0].reshape(*B.shape[:-1], 2, 2)
    u2 = np.einsum("...i,...ij,...j->...", c_u, P, c_u) + d_u**2
    f = c_g[..., 0] ** 2 * P[..., 0, 0]
    minus_ug = -(np.einsum("...i,...ij,...j->...", c_u, P, c_g) + d_u)
    return tuple(np.where(stable, v, np.nan) for v in (u2, f, minus_ug))


def nesterov_small_step_weights(beta):
    """Nesterov's (w, k, k_F) for eta h -> 0 (module doc): Q = s^2 + w F in the norm balance,
    E u^2 / eta^2 = k s^2 + k_F F."""
    b = np.asarray(beta, float)
    w = (1 + b - 2 * b**2 - 4 * b**3) / (1 + b)
    k = (1 + b) ** 2 + b**4 / (1 - b * b)
    k_f = (1 + 3 * b - 8 * b**3 - 4 * b**4 + 4 * b**5) / ((1 - b) * (1 + b) ** 2)
    return w, k, k_f


@lru_cache(maxsize=32)
def _nesterov_table(beta: float):
    """(rho, w, k_F) along eta h from 1e-7 to the stability edge, rho increasing."""
    eta_h = np.geomspace(1e-7, 2.0 * (1 + beta) / (1 + 2 * beta), 4000)[:-1]
    u2, f, minus_ug = mode_moments("nesterov", beta, eta_h)
    ok = np.isfinite(u2) & (f > 0)
    u2, f, minus_ug = u2[ok], f[ok], minus_ug[ok]
    _, k, _ = nesterov_small_step_weights(beta)
    q = 2 * (1 - beta) * ((1 + beta) / 2 * u2 - beta * minus_ug)
    rho, w, k_f = f, (q - 1) / f, (u2 - k) / f
    order = np.argsort(rho)
    return rho[order], w[order], k_f[order]


def nesterov_weights(beta: float, full_grad_share):
    """Nesterov's (w, k_F) at the measured share rho = E||grad L||^2 / Tr Sigma (module doc).

    Reads the single-mode solution at the eta h whose stationary rho equals the measured one:
    exact for one curvature; beyond the largest rho a stable mode reaches, NaN.
    """
    rho_grid, w_grid, kf_grid = _nesterov_table(float(beta))
    rho = np.asarray(full_grad_share, float)
    w0, _, kf0 = nesterov_small_step_weights(beta)
    inside = (rho >= 0) & (rho <= rho_grid[-1])
    clipped = np.clip(np.where(np.isfinite(rho), rho, 0.0), rho_grid[0], rho_grid[-1])
    w = np.where(rho < rho_grid[0], w0, np.interp(clipped, rho_grid, w_grid))
    k_f = np.where(rho < rho_grid[0], kf0, np.interp(clipped, rho_grid, kf_grid))
    return np.where(inside, w, np.nan), np.where(inside, k_f, np.nan)


def nesterov_share_from_balance(beta: float, ratio):
    """The share rho at which Nesterov's balance Q / E|g_B|^2 = (1 + w rho) / (1 + rho) equals
    ``ratio`` (:func:`nesterov_weights`' single mode; the ratio falls monotonically from 1 at
    rho = 0). A ratio outside the range a stable mode reaches is clipped to its ends."""
    rho_grid, w_grid, _ = _nesterov_table(float(beta))
    rho = np.concatenate([[0.0], rho_grid])
    q = (1.0 + np.concatenate([[nesterov_small_step_weights(beta)[0]], w_grid]) * rho) / (1 + rho)
    ratio = np.asarray(ratio, float)
    return np.where(np.isfinite(ratio), np.interp(-ratio, -q, rho), np.nan)


def adamw_effective_dimension(noise_variance, full_grad_squared, second_moment, beta1=0.9,
                              eps=0.0, axis=-1):
    """AdamW's d_eff = sum_i (s_i^2 + w F_i) / (sqrt(v_i) + eps)^2, w = (1 - beta1) / (1 + beta1).

    Per coordinate: noise variance s_i^2, squared full-batch gradient F_i, second moment v_i
    (v_hat, about s_i^2 + F_i). d_eff = d for white noise of one scale; the full-batch
    gradient, which m cancels as heavy ball's buffer does, counts with weight w (module doc).
    """
    w = (1 - beta1) / (1 + beta1)
    s2, f = np.asarray(noise_variance, float), np.asarray(full_grad_squared, float)
    root = np.sqrt(np.asarray(second_moment, float)) + eps
    return ((s2 + w * f) / root**2).sum(axis=axis)


def adamw_radius_from_statistics(learning_rate, weight_decay, effective_dimension):
    """AdamW's stationary radius r*^2 = eta d_eff / (2 lambda) (``docs/optimizers.md``).

    The norm balance lambda (2 - eta lambda) E|w|^2 = eta E|a|^2 - 2 (1 - eta lambda) E[w.a],
    a = m_hat / (sqrt(v_hat) + eps), with E[w.a] from m's recursion, gives
    2 lambda E|w|^2 = eta (1 + beta1)/(1 - beta1) E|a|^2 = eta d_eff to first order in
    eta lambda; Kosson et al. (2024)'s r*^2 = eta d / (2 lambda) is d_eff = d.
    """
    return np.sqrt(np.asarray(learning_rate, float) * np.asarray(effective_dimension, float)
                   / (2.0 * np.asarray(weight_decay, float)))


def adamw_effective_preconditioner(trace, effective_dimension):
    """c_eff = sqrt(Tr / d_eff): the preconditioner that makes AdamW SGD at eta / c_eff.

    ``trace``: the raw (not unit-sphere) sum_i (s_i^2 + w F_i), so that eta'^2 Tr / (2 lambda')
    balances: r*^2 = eta d_eff / (2 lambda) again. For noise of one scale it is the rms
    sqrt(mean v), not the mean sqrt(v): the mean makes Z = pV / (RT) an identity of the spread.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.asarray(trace, float) / np.asarray(effective_dimension, float))
