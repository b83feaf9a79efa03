"""The ideal gas of stationary SGD: T, p, V, r*, potentials, heat capacities, Maxwell targets.

Protocols (section 3.2):

- fixed sphere, radius r, ELR eta_eff:  T = eta_eff sigma^2 / 2, V = r^2 / 2, F = U - TS (eq. 7)
- fixed ELR eta_eff, WD lambda:         T = eta_eff sigma^2 / 2, p = lambda, r* from eq. 12
- fixed LR eta, WD lambda:              T = sqrt(eta lambda sigma^2 / (2 (d-1))), p = lambda (eq. 20)

Every function takes floats or NumPy arrays (broadcasting) and returns the same.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "gas_constant",
    "temperature_fixed_lr",
    "temperature_fixed_elr",
    "temperature_fixed_sphere",
    "stationary_radius_fixed_lr",
    "stationary_radius_fixed_elr",
    "volume",
    "radius_from_volume",
    "ideal_gas_pressure",
    "effective_pressure_sphere",
    "total_entropy",
    "helmholtz_energy",
    "gibbs_energy",
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


def temperature_fixed_lr(learning_rate, weight_decay, sigma2, d):
    """Fixed-LR temperature T = sqrt(eta lambda sigma^2 / (2 (d - 1))) (eq. 20)."""
    return np.sqrt(learning_rate * weight_decay * sigma2 / (2.0 * (np.asarray(d) - 1.0)))


def temperature_fixed_elr(effective_learning_rate, sigma2):
    """Fixed-ELR temperature T = tau_eff = eta_eff sigma^2 / 2 (eq. 7, 13)."""
    return effective_learning_rate * sigma2 / 2.0


def temperature_fixed_sphere(effective_learning_rate, sigma2):
    """Fixed-sphere temperature T = eta_eff sigma^2 / 2 (eq. 7); the same as for fixed ELR."""
    return temperature_fixed_elr(effective_learning_rate, sigma2)


def stationary_radius_fixed_lr(learning_rate, weight_decay, sigma2, d):
    """Fixed-LR stationary radius r* = (eta sigma^2 (d - 1) / (2 lambda))^(1/4) (eq. 19, 21)."""
    return (learning_rate * sigma2 * (np.asarray(d) - 1.0) / (2.0 * weight_decay)) ** 0.25


def stationary_radius_fixed_elr(effective_learning_rate, weight_decay, sigma2, d):
    """Fixed-ELR stationary radius r* = sqrt(eta_eff sigma^2 (d - 1) / (2 lambda)) (eq. 12)."""
    return np.sqrt(effective_learning_rate * sigma2 * (np.asarray(d) - 1.0) / (2.0 * weight_decay))


def volume(radius):
    """Volume V = r^2 / 2 (section 3.1)."""
    return np.asarray(radius) ** 2 / 2.0


def radius_from_volume(volume_):
    """Radius r = sqrt(2 V), the inverse of :func:`volume`."""
    return np.sqrt(2.0 * np.asarray(volume_))


def ideal_gas_pressure(temperature, volume_, d):
    """Ideal-gas pressure p = R T / V = T (d - 1) / (2 V) (eq. 13, 21, 84)."""
    return gas_constant(d) * temperature / volume_


def effective_pressure_sphere(effective_learning_rate, radius, sigma2, d):
    """Fixed-sphere effective weight decay lambda_eff = eta_eff sigma^2 (d - 1) / (2 r^2) (eq. 84).

    This is T (d - 1) / (2 V) with T = eta_eff sigma^2 / 2 and V = r^2 / 2.
    """
    return effective_learning_rate * sigma2 * (np.asarray(d) - 1.0) / (2.0 * np.asarray(radius) ** 2)


def total_entropy(sphere_entropy, radius, d):
    """Entropy on the radius-r sphere S = S(rho_w_bar) + (d - 1) log r (eq. 1, 28)."""
    return sphere_entropy + (np.asarray(d) - 1.0) * np.log(radius)


def helmholtz_energy(energy, temperature, entropy):
    """Helmholtz energy F = U - T S (T4, eq. 33), minimized at fixed T and V."""
    return energy - temperature * entropy


def gibbs_energy(energy, temperature, entropy, pressure, volume_):
    """Gibbs energy G = U - T S + p V (T5, eq. 14, 22), minimized at fixed T and p."""
    return energy - temperature * entropy + pressure * volume_


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
