"""One grid of isotropic-model runs for one protocol (section 5, appendix E defaults)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from thermosgd.protocols import PROTOCOLS
from thermosgd.theory.optimizers import Optimizer, make_optimizer

__all__ = ["IsotropicConfig"]


@dataclass(frozen=True)
class IsotropicConfig:
    """One grid of isotropic-model runs for one protocol. Defaults are the paper's setup."""

    protocol: str  # "fixed-lr", "fixed-elr" or "fixed-sphere"
    learning_rates: tuple[float, ...]  # eta (fixed LR) or eta_eff (fixed ELR, sphere)
    weight_decays: tuple[float, ...] = ()  # lambda, weight decay = pressure (fixed LR / ELR)
    radii: tuple[float, ...] = ()  # r, sphere radius (fixed sphere only)
    seeds: tuple[int, ...] = (0,)  # noise seeds; every grid point runs once per seed
    dim: int = 3  # d, number of weights
    sigma: float = 1.0  # sigma, gradient-noise scale (sigma^2 = Tr Sigma / (d-1))
    mu_norm: float = 1.0  # |mu|, energy scale of L = 1 + mu^T w_bar
    mu_seed: int = 0  # seed of the random direction of mu and of the initial direction
    iterations: int = 2_000_000  # k, noisy-GD steps
    log_every: int = 50  # steps between loss / radius logs
    stationary_logs: int = 5000  # stationary means use the last this-many logs
    queue_size: int = 1000  # N, weight snapshots kept for the entropy estimate
    queue_every: int = 50  # steps between snapshots
    entropy_every: int = 40_000  # steps between entropy evaluations of the queue
    entropy_average: int = 10  # stationary entropy = mean of the last this-many evaluations
    optimizer: Optimizer = Optimizer()  # the update rule's optimizer (plain SGD: the paper)
    momenta: tuple[float, ...] = ()  # beta (AdamW: beta1) grid replacing optimizer.momentum

    def __post_init__(self):
        object.__setattr__(self, "optimizer", _optimizer(self.optimizer))
        if self.optimizer.adaptive and self.protocol != "fixed-lr":
            raise ValueError(
                f"optimizer adamw is defined for the fixed-lr protocol only, not {self.protocol} "
                "(its step does not scale with |w|^2); use --protocol fixed-lr, or --optimizer "
                "sgd, momentum or nesterov")
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        object.__setattr__(self, "learning_rates", _floats(self.learning_rates))
        object.__setattr__(self, "weight_decays", _floats(self.weight_decays))
        object.__setattr__(self, "radii", _floats(self.radii))
        if np.ndim(self.seeds) == 0:
            object.__setattr__(self, "seeds", (self.seeds,))
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                   for s in self.seeds):
            raise ValueError(f"seeds (--seeds) must be integers, got {list(self.seeds)}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "momenta", _floats(self.momenta))
        for beta in self.momenta:  # each must make a valid optimizer (one-line ValueError)
            dataclasses.replace(self.optimizer, momentum=beta)
        sphere = self.protocol == "fixed-sphere"
        rate = "--elr (effective learning rates)" if self.protocol != "fixed-lr" else "--lr"
        _require_positive(self.learning_rates, f"learning rates ({rate})")
        own, flag = ("radii", "--radius") if sphere else ("weight_decays", "--wd")
        for axis, option in (("learning_rates", "--lr"), (own, flag)):
            if not getattr(self, axis):  # the grid is the product of the axes: none is empty
                raise ValueError(f"the {self.protocol} protocol needs {option} (one or more "
                                 f"{axis.replace('_', ' ')})")
        if sphere:
            if self.weight_decays:
                raise ValueError("fixed-sphere has no weight decay: drop --wd, give --radius")
            _require_positive(self.radii, "radii (--radius)")
        else:
            if self.radii:
                raise ValueError(f"{self.protocol} has no sphere radius: drop --radius")
            _require_positive(self.weight_decays, "weight decays (--wd)")
        for axis, flag in (("learning_rates", "--lr"), ("weight_decays", "--wd"),
                           ("radii", "--radius"), ("seeds", "--seeds"), ("momenta", "--momentum")):
            values = getattr(self, axis)
            if len(set(values)) != len(values):
                raise ValueError(f"{axis} ({flag}) repeats a value: {list(values)}; give each "
                                 "grid value once (use several seeds for replicates)")
        if any(not 0 <= s < 2**63 for s in self.seeds):  # the kernel's RNG takes int64 seeds
            raise ValueError(f"seeds (--seeds) must be integers in [0, 2^63), got "
                             f"{list(self.seeds)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in ("sigma", "mu_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        for name in ("dim", "mu_seed", "iterations", "log_every", "stationary_logs",
                     "queue_size", "queue_every", "entropy_every", "entropy_average"):
            value, low = getattr(self, name), 0 if name == "mu_seed" else 1
            # counts index int64 arrays in the kernel: bool is no count, 2^63 overflows
            if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                    or not low <= value < 2**63):
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be an integer in "
                                 f"[{low}, 2^63), got {value!r}")
        if self.dim < 2:
            raise ValueError(f"dimension d must be >= 2 (--dim; a sphere S^(d-1) needs d >= 2), "
                             f"got {self.dim}")
        if self.queue_size < 2:
            raise ValueError("queue_size must be >= 2 (the entropy estimator needs neighbours)")
        if self.n_entropy_evaluations < 1:
            raise ValueError(
                f"{self.iterations} iterations are too few for the entropy queue: it fills after "
                f"queue_size * queue_every = {self.queue_fill} steps and is evaluated every "
                f"{self.entropy_every}; raise --iterations to at least {self.first_entropy_at}"
            )

    @property
    def queue_fill(self) -> int:
        return self.queue_size * self.queue_every

    @property
    def first_entropy_at(self) -> int:
        return -(-self.queue_fill // self.entropy_every) * self.entropy_every

    @property
    def n_entropy_evaluations(self) -> int:
        if self.iterations < self.first_entropy_at:
            return 0
        return (self.iterations - self.first_entropy_at) // self.entropy_every + 1

    @property
    def n_logs(self) -> int:
        return self.iterations // self.log_every

    @property
    def weight_decays_or_radii(self) -> tuple[float, ...]:
        return self.radii if self.protocol == "fixed-sphere" else self.weight_decays

    @property
    def betas(self) -> tuple[float, ...]:
        """The momentum axis of the grid: ``momenta``, or the optimizer's one value."""
        return self.momenta or (self.optimizer.momentum,)

    @property
    def grid_size(self) -> int:
        return (len(self.learning_rates) * len(self.weight_decays_or_radii) * len(self.betas)
                * len(self.seeds))


def _optimizer(value) -> Optimizer:
    """An Optimizer from itself, its name, or its record (``Optimizer.to_dict``, config.json)."""
    if isinstance(value, Optimizer):
        return value
    if isinstance(value, str):
        return make_optimizer(value)
    if isinstance(value, dict):
        return Optimizer.from_dict(value)
    raise ValueError(f"optimizer must be an Optimizer, a name or its record, got {value!r}")


def _floats(values) -> tuple[float, ...]:
    if np.ndim(values) == 0:
        values = (values,)
    return tuple(float(v) for v in values)


def _require_positive(values, what):
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise ValueError(f"{what} must all be positive and finite, got {list(values)}")
