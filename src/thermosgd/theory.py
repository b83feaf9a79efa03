"""Closed forms of the thermodynamic framework, as pure functions.

Every function takes floats or NumPy arrays (broadcasting) and returns the same. Symbols follow
the paper: eta (learning rate), eta_eff (effective learning rate), lambda (weight decay), sigma^2
(per-direction gradient-noise variance, sigma^2 = Tr Sigma / (d-1)), d (number of scale-invariant
weights), T, p, V, U, S (temperature, pressure, volume, internal energy, entropy).

Protocols (section 3.2):

- fixed sphere, radius r, ELR eta_eff:  T = eta_eff sigma^2 / 2, V = r^2 / 2, F = U - TS (eq. 7)
- fixed ELR eta_eff, WD lambda:         T = eta_eff sigma^2 / 2, p = lambda, r* from eq. 12
- fixed LR eta, WD lambda:              T = sqrt(eta lambda sigma^2 / (2 (d-1))), p = lambda (eq. 20)
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = [
    "gas_constant",
    "temperature_fixed_lr",
    "temperature_fixed_elr",
    "temperature_fixed_sphere",
    "stationary_radius_fixed_lr",
    "stationary_radius_fixed_elr",
    "stationary_radius_from_trace",
    "corrected_radius_fixed_lr",
    "corrected_radius_fixed_elr",
    "volume",
    "radius_from_volume",
    "effective_pressure_sphere",
    "effective_pressure_from_trace",
    "corrected_effective_pressure",
    "ideal_gas_pressure",
    "total_entropy",
    "helmholtz_energy",
    "gibbs_energy",
    "sphere_log_area",
    "vmf_mean_resultant",
    "vmf_mean_loss",
    "vmf_sphere_entropy",
    "vmf_mean_loss_asymptotic",
    "vmf_sphere_entropy_asymptotic",
    "vmf_heat_capacity",
    "heat_capacity_v",
    "heat_capacity_p",
    "adiabatic_index",
    "adiabatic_invariant",
    "maxwell_target_fixed_lr",
    "maxwell_target_fixed_elr",
    "entropy_slopes_fixed_lr_isotropic",
]


def gas_constant(d):
    """Gas constant R = (d - 1) / 2 (eq. 13, 21): the ideal gas law reads pV = RT."""
    return (np.asarray(d, dtype=float) - 1.0) / 2.0


# --- temperature ------------------------------------------------------------------------------


def temperature_fixed_lr(learning_rate, weight_decay, sigma2, d):
    """Fixed-LR temperature T = sqrt(eta lambda sigma^2 / (2 (d - 1))) (eq. 20)."""
    return np.sqrt(learning_rate * weight_decay * sigma2 / (2.0 * (np.asarray(d) - 1.0)))


def temperature_fixed_elr(effective_learning_rate, sigma2):
    """Fixed-ELR temperature T = tau_eff = eta_eff sigma^2 / 2 (eq. 7, 13)."""
    return effective_learning_rate * sigma2 / 2.0


def temperature_fixed_sphere(effective_learning_rate, sigma2):
    """Fixed-sphere temperature T = eta_eff sigma^2 / 2 (eq. 7); the same as for fixed ELR."""
    return temperature_fixed_elr(effective_learning_rate, sigma2)


# --- stationary radius and volume ------------------------------------------------------------


def stationary_radius_fixed_lr(learning_rate, weight_decay, sigma2, d):
    """Fixed-LR stationary radius r* = (eta sigma^2 (d - 1) / (2 lambda))^(1/4) (eq. 19, 21)."""
    return (learning_rate * sigma2 * (np.asarray(d) - 1.0) / (2.0 * weight_decay)) ** 0.25


def stationary_radius_fixed_elr(effective_learning_rate, weight_decay, sigma2, d):
    """Fixed-ELR stationary radius r* = sqrt(eta_eff sigma^2 (d - 1) / (2 lambda)) (eq. 12)."""
    return np.sqrt(effective_learning_rate * sigma2 * (np.asarray(d) - 1.0) / (2.0 * weight_decay))


def stationary_radius_from_trace(protocol, rate, weight_decay, trace_cov):
    """SDE radius written with Tr Sigma of the unit-sphere gradients (eq. 63, 72, 119-120).

    ``protocol`` is "fixed-lr" (r* = (eta Tr Sigma / (2 lambda))^(1/4), ``rate`` = eta) or
    "fixed-elr" (r* = sqrt(eta_eff Tr Sigma / (2 lambda)), ``rate`` = eta_eff).
    """
    base = rate * trace_cov / (2.0 * weight_decay)
    if protocol == "fixed-lr":
        return base**0.25
    if protocol == "fixed-elr":
        return np.sqrt(base)
    raise ValueError(f"protocol must be 'fixed-lr' or 'fixed-elr', got {protocol!r}")


def corrected_radius_fixed_lr(learning_rate, weight_decay, trace_cov, full_grad_norm2):
    """Appendix-G radius r*_discr = (eta / (2 lambda) (Tr Sigma + E||grad L(w_bar)||^2))^(1/4).

    Eq. 119: the discrete step adds the mean-gradient norm to the centrifugal force.
    """
    return (learning_rate / (2.0 * weight_decay) * (trace_cov + full_grad_norm2)) ** 0.25


def corrected_radius_fixed_elr(effective_learning_rate, weight_decay, trace_cov, full_grad_norm2):
    """Appendix-G radius r*_discr = sqrt(eta_eff / (2 lambda) (Tr Sigma + E||grad L||^2)) (eq. 120)."""
    return np.sqrt(effective_learning_rate / (2.0 * weight_decay) * (trace_cov + full_grad_norm2))


def volume(radius):
    """Volume V = r^2 / 2 (section 3.1)."""
    return np.asarray(radius) ** 2 / 2.0


def radius_from_volume(volume_):
    """Radius r = sqrt(2 V), the inverse of :func:`volume`."""
    return np.sqrt(2.0 * np.asarray(volume_))


# --- pressure ---------------------------------------------------------------------------------


def ideal_gas_pressure(temperature, volume_, d):
    """Ideal-gas pressure p = R T / V = T (d - 1) / (2 V) (eq. 13, 21, 84)."""
    return gas_constant(d) * temperature / volume_


def effective_pressure_sphere(effective_learning_rate, radius, sigma2, d):
    """Fixed-sphere effective weight decay lambda_eff = eta_eff sigma^2 (d - 1) / (2 r^2) (eq. 84).

    This is T (d - 1) / (2 V) with T = eta_eff sigma^2 / 2 and V = r^2 / 2.
    """
    return effective_learning_rate * sigma2 * (np.asarray(d) - 1.0) / (2.0 * np.asarray(radius) ** 2)


def effective_pressure_from_trace(effective_learning_rate, radius, trace_cov):
    """SDE effective weight decay lambda_eff,SDE = eta_eff Tr Sigma / (2 r^2) (eq. 121)."""
    return effective_learning_rate * trace_cov / (2.0 * np.asarray(radius) ** 2)


def corrected_effective_pressure(effective_learning_rate, radius, trace_cov, full_grad_norm2):
    """Appendix-G lambda_eff,discr = eta_eff / (2 r^2) (Tr Sigma + E||grad L(w_bar)||^2) (eq. 121)."""
    return effective_learning_rate * (trace_cov + full_grad_norm2) / (2.0 * np.asarray(radius) ** 2)


# --- entropy and potentials -------------------------------------------------------------------


def total_entropy(sphere_entropy, radius, d):
    """Entropy on the radius-r sphere S = S(rho_w_bar) + (d - 1) log r (eq. 1, 28)."""
    return sphere_entropy + (np.asarray(d) - 1.0) * np.log(radius)


def helmholtz_energy(energy, temperature, entropy):
    """Helmholtz energy F = U - T S (T4, eq. 33), minimized at fixed T and V."""
    return energy - temperature * entropy


def gibbs_energy(energy, temperature, entropy, pressure, volume_):
    """Gibbs energy G = U - T S + p V (T5, eq. 14, 22), minimized at fixed T and p."""
    return energy - temperature * entropy + pressure * volume_


def sphere_log_area(d):
    """Log area of the unit sphere S^(d-1): log(2 pi^(d/2) / Gamma(d/2)).

    This is the entropy of the uniform distribution on the sphere (the T -> infinity limit).
    """
    d = np.asarray(d, dtype=float)
    return np.log(2.0) + d / 2.0 * np.log(np.pi) - special.gammaln(d / 2.0)


# --- von Mises-Fisher statistics (appendix E) ---------------------------------------------------


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


def heat_capacity_v(d):
    """Isochoric heat capacity of the low-temperature VMF gas, C_V = (d - 1) / 2 (eq. 30)."""
    return gas_constant(d)


def heat_capacity_p(d, heat_capacity_v_=None):
    """Isobaric heat capacity C_p = C_V + R (eq. 97); C_V defaults to the low-temperature (d - 1)/2.

    Pass an exact C_V (:func:`vmf_heat_capacity`) to get C_p away from the T -> 0 limit.
    """
    cv = gas_constant(d) if heat_capacity_v_ is None else np.asarray(heat_capacity_v_, dtype=float)
    return cv + gas_constant(d)


def adiabatic_index(d, heat_capacity_v_=None):
    """Adiabatic index gamma = C_p / C_V = (C_V + R) / C_V (T7, eq. 97-99).

    With the low-temperature C_V = R this is 2 for every d (for d = 3: C_V = 1, gamma = 2).
    """
    cv = gas_constant(d) if heat_capacity_v_ is None else np.asarray(heat_capacity_v_, dtype=float)
    return heat_capacity_p(d, cv) / cv


def adiabatic_invariant(pressure, volume_, gamma):
    """p V^gamma, constant along an adiabat (eq. 99)."""
    return pressure * np.asarray(volume_, dtype=float) ** gamma


def maxwell_target_fixed_lr(d):
    """(dS/dlog eta)_lambda - (dS/dlog lambda)_eta = (d - 1) / 2 (eq. 23, 96)."""
    return gas_constant(d)


def maxwell_target_fixed_elr(d):
    """(dS/dlog lambda)_eta_eff = -(d - 1) / 2 (eq. 85)."""
    return -gas_constant(d)


def entropy_slopes_fixed_lr_isotropic(d):
    """Isotropic fixed-LR slopes ((dS/dlog eta)_lambda, (dS/dlog lambda)_eta) = ((d-1)/2, 0) (eq. 29)."""
    return gas_constant(d), 0.0 * gas_constant(d)
