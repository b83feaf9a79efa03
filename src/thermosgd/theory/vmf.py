"""Von Mises-Fisher statistics of the isotropic model's stationary direction (appendix E).

The loss L(w) = 1 + mu^T w / ||w|| gives a stationary density proportional to
exp(-mu^T w_bar / T) on the unit sphere (eq. 7, 102): U and S are exact through Bessel-function
ratios (eq. 103), with the low-temperature limits of eq. 106-107.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from thermosgd.theory.gas import gas_constant

__all__ = [
    "sphere_log_area",
    "vmf_mean_resultant",
    "vmf_mean_loss",
    "vmf_sphere_entropy",
    "vmf_mean_loss_asymptotic",
    "vmf_sphere_entropy_asymptotic",
    "vmf_heat_capacity",
]


def sphere_log_area(d):
    """Log area of the unit sphere S^(d-1): log(2 pi^(d/2) / Gamma(d/2)).

    This is the entropy of the uniform distribution on the sphere (the T -> infinity limit).
    """
    d = np.asarray(d, dtype=float)
    return np.log(2.0) + d / 2.0 * np.log(np.pi) - special.gammaln(d / 2.0)


def _log_bessel_i(nu, kappa):
    """log I_nu(kappa) for nu >= 0, kappa > 0, without overflow or underflow.

    SciPy's exponentially scaled ``ive`` gives log I = log(ive) + kappa; where ``ive`` under- or
    overflows (large order with moderate kappa) the uniform asymptotic expansion in the order
    (DLMF 10.41.3, two correction terms; relative error O(nu^-3)) takes over.
    """
    nu, kappa = np.broadcast_arrays(np.asarray(nu, dtype=float), np.asarray(kappa, dtype=float))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        scaled = special.ive(nu, kappa)
        # np.asarray: with 0-d inputs the sum is a NumPy scalar, which item assignment rejects.
        out = np.asarray(np.log(scaled) + kappa)
        bad = ~np.isfinite(out) | (scaled <= 0)
        if np.any(bad):
            n, z = nu[bad], kappa[bad] / nu[bad]
            root = np.sqrt(1.0 + z * z)
            eta = root + np.log(z / (1.0 + root))
            p = 1.0 / root
            u1 = (3.0 * p - 5.0 * p**3) / 24.0
            u2 = (81.0 * p**2 - 462.0 * p**4 + 385.0 * p**6) / 1152.0
            out[bad] = (
                n * eta
                - 0.5 * np.log(2.0 * np.pi * n)
                - 0.5 * np.log(root)
                + np.log1p(u1 / n + u2 / n**2)
            )
    return out[()] if out.ndim == 0 else out


def _positive_temperature(temperature):
    temperature = np.asarray(temperature, dtype=float)
    if not np.all(np.isfinite(temperature) & (temperature > 0)):
        raise ValueError("temperature must be positive and finite")
    return temperature


def _kappa(temperature, mu_norm):
    temperature = _positive_temperature(temperature)
    mu_norm = np.asarray(mu_norm, dtype=float)
    if not np.all(np.isfinite(mu_norm) & (mu_norm > 0)):
        raise ValueError("|mu| (mu_norm) must be positive and finite")
    return mu_norm / temperature


def vmf_mean_resultant(kappa, d):
    """Mean resultant length A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) (eq. 103)."""
    nu, kappa = np.broadcast_arrays(np.asarray(d, dtype=float) / 2.0, np.asarray(kappa, dtype=float))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        # The direct ratio of scaled Bessel functions keeps full relative precision; the log
        # difference is the fallback where ive under- or overflows (large d).
        ratio = special.ive(nu, kappa) / special.ive(nu - 1.0, kappa)
    bad = ~np.isfinite(ratio) | (ratio <= 0)
    if np.any(bad):
        ratio = np.where(
            bad, np.exp(_log_bessel_i(nu, kappa) - _log_bessel_i(nu - 1.0, kappa)), ratio
        )
    return ratio[()] if ratio.ndim == 0 else ratio


def vmf_mean_loss(temperature, d, mu_norm=1.0):
    """Exact mean loss of the isotropic model at stationarity, U = 1 - |mu| A_d(|mu| / T) (eq. 103).

    The loss is L(w) = 1 + mu^T w / ||w||; its stationary direction distribution is VMF with
    density proportional to exp(-mu^T w_bar / T) (eq. 7, 102).
    """
    kappa = _kappa(temperature, mu_norm)
    return 1.0 - np.asarray(mu_norm, dtype=float) * vmf_mean_resultant(kappa, d)


def vmf_sphere_entropy(temperature, d, mu_norm=1.0):
    """Exact entropy on the unit sphere of the stationary VMF, S = -log C_d(kappa) - kappa A_d(kappa).

    Eq. 102-103 with kappa = |mu| / T, C_d(kappa) = kappa^(d/2-1) / ((2 pi)^(d/2) I_{d/2-1}(kappa)).
    Written as (d/2) log 2 pi - (d/2 - 1) log kappa + log I_{d/2-1}(kappa) - kappa A_d(kappa), with
    log I from the exponentially scaled Bessel function so that large 1/T does not overflow.
    """
    kappa = _kappa(temperature, mu_norm)
    d = np.asarray(d, dtype=float)
    nu = d / 2.0
    log_i = _log_bessel_i(nu - 1.0, kappa)
    ratio = vmf_mean_resultant(kappa, d)
    # log I - kappa A = (log ive) + kappa (1 - A): keeps the O(kappa) terms from cancelling late.
    return nu * np.log(2.0 * np.pi) - (nu - 1.0) * np.log(kappa) + (log_i - kappa) + kappa * (1.0 - ratio)


def vmf_mean_loss_asymptotic(temperature, d):
    """Low-temperature mean loss U = (d - 1) T / 2 (eq. 106)."""
    return gas_constant(d) * _positive_temperature(temperature)


def vmf_sphere_entropy_asymptotic(temperature, d):
    """Low-temperature sphere entropy S = (d - 1) / 2 log(2 pi e T) (eq. 107)."""
    return gas_constant(d) * np.log(2.0 * np.pi * np.e * _positive_temperature(temperature))


def vmf_heat_capacity(temperature, d, mu_norm=1.0):
    """Exact isochoric heat capacity C_V = dU/dT of the stationary VMF (eq. 30 without asymptotics).

    With U = 1 - m A_d(kappa), kappa = m / T and A' = 1 - A^2 - (d - 1) A / kappa:
    dU/dT = -m A'(kappa) dkappa/dT = m^2 A' / T^2 = kappa^2 A'(kappa). Tends to (d - 1)/2 as
    T -> 0.
    """
    kappa = _kappa(temperature, mu_norm)
    a = vmf_mean_resultant(kappa, d)
    derivative = 1.0 - a * a - (np.asarray(d, dtype=float) - 1.0) * a / kappa
    return kappa**2 * derivative
