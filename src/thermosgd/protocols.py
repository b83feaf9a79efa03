"""The three training protocols: update rule, learning rate at a given norm, and their theory.

One definition serves the isotropic simulator and the network trainer. Hyperparameters may be
floats or arrays over a grid (grid axes first); :meth:`Protocol.step` works on NumPy arrays and
torch tensors of shape (..., d) whose leading axes broadcast against the hyperparameters.

=============  ===========================================  ===================  ==========
protocol       update (eq.)                                 T                    held fixed
=============  ===========================================  ===================  ==========
fixed-sphere   w <- r unit(w - eta_eff r^2 g)         (2)   eta_eff sigma^2 / 2  T, V -> F
fixed-elr      w <- w - eta_eff |w|^2 (g + lambda w)  (8)   eta_eff sigma^2 / 2  T, p -> G
fixed-lr       w <- w - eta (g + lambda w)            (15)  sqrt(eta lambda ...)  eta, p -> G
=============  ===========================================  ===================  ==========
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from thermosgd import theory

__all__ = ["Protocol", "FixedSphere", "FixedELR", "FixedLR", "PROTOCOLS", "make_protocol"]


def _norm(w):
    """Euclidean norm over the last axis, keeping it; NumPy or torch."""
    if isinstance(w, np.ndarray):
        return np.linalg.norm(w, axis=-1, keepdims=True)
    return w.norm(dim=-1, keepdim=True)


def _column(h, like):
    """A hyperparameter (float or (...,) array) as a (..., 1) column matching ``like``'s type."""
    if np.ndim(h) == 0:
        return float(h)
    if isinstance(like, np.ndarray):
        return np.asarray(h, dtype=like.dtype)[..., None]
    import torch

    return torch.as_tensor(np.asarray(h), dtype=like.dtype, device=like.device)[..., None]


def _check_positive(name, value):
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


@dataclass(frozen=True)
class Protocol:
    """Base class; use :class:`FixedSphere`, :class:`FixedELR` or :class:`FixedLR`."""

    name: ClassVar[str]
    code: ClassVar[int]  # index used by compiled kernels
    potential: ClassVar[str]  # thermodynamic potential minimized at stationarity: "F" or "G"

    @property
    def rate(self):
        """The learning-rate hyperparameter of the protocol (eta or eta_eff)."""
        raise NotImplementedError

    @property
    def weight_decay_or_radius(self):
        """The other hyperparameter: weight decay lambda (the pressure), or the sphere's
        radius r (it fixes the volume)."""
        raise NotImplementedError

    def learning_rate_at(self, norm):
        """The plain learning rate eta applied to a weight vector of norm ``norm``."""
        raise NotImplementedError

    def step(self, w, grad):
        """One update of ``w`` (..., d) given the mini-batch gradient ``grad`` (..., d)."""
        raise NotImplementedError

    def initial_norm(self):
        """||w_0||: 1 for fixed LR/ELR, r on the fixed sphere (SPEC: networks)."""
        return np.ones_like(np.asarray(self.rate, dtype=float))

    def temperature(self, sigma2, d):
        raise NotImplementedError

    def stationary_radius(self, sigma2, d):
        """Predicted stationary radius r* (for the sphere, its radius)."""
        raise NotImplementedError

    def pressure(self, sigma2, d):
        """Pressure p: lambda, or on the sphere the ideal-gas lambda_eff (eq. 84)."""
        raise NotImplementedError

    def volume(self, sigma2, d):
        """Predicted volume V = r*^2 / 2."""
        return theory.volume(self.stationary_radius(sigma2, d))


@dataclass(frozen=True)
class FixedSphere(Protocol):
    """Projected SGD on the sphere of radius r with ELR eta_eff (eq. 2, eta = eta_eff r^2)."""

    effective_learning_rate: float | np.ndarray  # eta_eff, effective learning rate
    radius: float | np.ndarray  # r, radius of the sphere the weights live on

    name: ClassVar[str] = "fixed-sphere"
    code: ClassVar[int] = 0
    potential: ClassVar[str] = "F"

    def __post_init__(self):
        _check_positive("effective learning rate", self.effective_learning_rate)
        _check_positive("radius", self.radius)

    @property
    def rate(self):
        return self.effective_learning_rate

    @property
    def weight_decay_or_radius(self):
        return self.radius

    def learning_rate_at(self, norm):
        return self.effective_learning_rate * np.asarray(self.radius) ** 2

    def step(self, w, grad):
        """w <- r (w - eta g) / ||w - eta g|| with eta = eta_eff r^2 (eq. 2)."""
        r = _column(self.radius, w)
        v = w - _column(self.effective_learning_rate, w) * r**2 * grad
        return r * v / _norm(v)

    def initial_norm(self):
        return np.broadcast_to(np.asarray(self.radius, dtype=float), np.shape(self.rate))

    def temperature(self, sigma2, d):
        return theory.temperature_fixed_sphere(self.effective_learning_rate, sigma2)

    def stationary_radius(self, sigma2, d):
        return np.broadcast_to(np.asarray(self.radius, dtype=float), np.shape(self.rate))

    def pressure(self, sigma2, d):
        return theory.effective_pressure_sphere(self.effective_learning_rate, self.radius, sigma2, d)

    def maxwell_target(self, d):
        """Sphere's Maxwell relation is lambda_eff = T (d-1) / (2V) (eq. 82-84): see pressure()."""
        return None


@dataclass(frozen=True)
class FixedELR(Protocol):
    """SGD whose learning rate tracks the norm, eta = eta_eff ||w||^2, with weight decay (eq. 8)."""

    effective_learning_rate: float | np.ndarray  # eta_eff, effective learning rate
    weight_decay: float | np.ndarray  # lambda, weight decay = pressure p

    name: ClassVar[str] = "fixed-elr"
    code: ClassVar[int] = 1
    potential: ClassVar[str] = "G"

    def __post_init__(self):
        _check_positive("effective learning rate", self.effective_learning_rate)
        _check_positive("weight decay", self.weight_decay)

    @property
    def rate(self):
        return self.effective_learning_rate

    @property
    def weight_decay_or_radius(self):
        return self.weight_decay

    def learning_rate_at(self, norm):
        return self.effective_learning_rate * np.asarray(norm) ** 2

    def step(self, w, grad):
        """w <- w - eta_eff ||w||^2 (g + lambda w) (eq. 8)."""
        lr = _column(self.effective_learning_rate, w) * _norm(w) ** 2
        return w - lr * (grad + _column(self.weight_decay, w) * w)

    def temperature(self, sigma2, d):
        return theory.temperature_fixed_elr(self.effective_learning_rate, sigma2)

    def stationary_radius(self, sigma2, d):
        return theory.stationary_radius_fixed_elr(
            self.effective_learning_rate, self.weight_decay, sigma2, d
        )

    def pressure(self, sigma2, d):
        return np.broadcast_to(np.asarray(self.weight_decay, dtype=float), np.shape(self.rate))

    def maxwell_target(self, d):
        """(dS/dlog lambda)_eta_eff = -(d-1)/2 (eq. 85)."""
        return theory.maxwell_target_fixed_elr(d)


@dataclass(frozen=True)
class FixedLR(Protocol):
    """Plain SGD with learning rate eta and weight decay lambda (eq. 15)."""

    learning_rate: float | np.ndarray  # eta, learning rate
    weight_decay: float | np.ndarray  # lambda, weight decay = pressure p

    name: ClassVar[str] = "fixed-lr"
    code: ClassVar[int] = 2
    potential: ClassVar[str] = "G"

    def __post_init__(self):
        _check_positive("learning rate", self.learning_rate)
        _check_positive("weight decay", self.weight_decay)

    @property
    def rate(self):
        return self.learning_rate

    @property
    def weight_decay_or_radius(self):
        return self.weight_decay

    def learning_rate_at(self, norm):
        return np.broadcast_to(np.asarray(self.learning_rate, dtype=float), np.shape(norm))

    def step(self, w, grad):
        """w <- w - eta (g + lambda w) (eq. 15)."""
        return w - _column(self.learning_rate, w) * (grad + _column(self.weight_decay, w) * w)

    def temperature(self, sigma2, d):
        return theory.temperature_fixed_lr(self.learning_rate, self.weight_decay, sigma2, d)

    def stationary_radius(self, sigma2, d):
        return theory.stationary_radius_fixed_lr(self.learning_rate, self.weight_decay, sigma2, d)

    def pressure(self, sigma2, d):
        return np.broadcast_to(np.asarray(self.weight_decay, dtype=float), np.shape(self.rate))

    def maxwell_target(self, d):
        """(dS/dlog eta)_lambda - (dS/dlog lambda)_eta = (d-1)/2 (eq. 23)."""
        return theory.maxwell_target_fixed_lr(d)


PROTOCOLS: dict[str, type[Protocol]] = {p.name: p for p in (FixedSphere, FixedELR, FixedLR)}


def make_protocol(name: str, rate, weight_decay_or_radius) -> Protocol:
    """Build a protocol by name from its two hyperparameters (rate: eta or eta_eff; then
    lambda, or the radius for "fixed-sphere")."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](rate, weight_decay_or_radius)
