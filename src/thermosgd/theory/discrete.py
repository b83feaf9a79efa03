"""The discrete-step correction of appendix G and the radii written with Tr Sigma.

The SDE predictions hold for small steps; a discrete step of SGD adds the mean gradient's norm
to the centrifugal force (eq. 117-121): Tr Sigma is replaced by Tr Sigma + E||grad L(w_bar)||^2.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "stationary_radius_from_trace",
    "corrected_radius_fixed_lr",
    "corrected_radius_fixed_elr",
    "effective_pressure_from_trace",
    "corrected_effective_pressure",
]


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


def effective_pressure_from_trace(effective_learning_rate, radius, trace_cov):
    """SDE effective weight decay lambda_eff,SDE = eta_eff Tr Sigma / (2 r^2) (eq. 121)."""
    return effective_learning_rate * trace_cov / (2.0 * np.asarray(radius) ** 2)


def corrected_effective_pressure(effective_learning_rate, radius, trace_cov, full_grad_norm2):
    """Appendix-G lambda_eff,discr = eta_eff / (2 r^2) (Tr Sigma + E||grad L(w_bar)||^2) (eq. 121)."""
    return effective_learning_rate * (trace_cov + full_grad_norm2) / (2.0 * np.asarray(radius) ** 2)
