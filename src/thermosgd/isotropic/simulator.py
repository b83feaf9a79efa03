"""The isotropic noise model (section 5, appendix E), batched over whole hyperparameter grids.

Noisy gradient descent on the scale-invariant loss L(w) = 1 + mu^T w / ||w|| (eq. 24):

    g_k = grad L(w_k) + P_{w_bar_k} sigma eps_k / ||w_k||,   eps_k ~ N(0, I_d),

followed by the protocol's update (:mod:`thermosgd.protocols`). At stationarity the direction is
von Mises-Fisher with density ~ exp(-mu^T w_bar / T), so U and S_sphere are known exactly
(eq. 102-103) and every V1-V4 prediction can be checked.

All grid points (every combination of rate, weight decay or radius, and seed) advance together
in one compiled loop, one thread per block of grid points; each point owns its noise stream,
seeded from (seed, protocol, hyperparameters), so a point's trajectory does not depend on
which grid it is part of or on the number of threads.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thermosgd import theory
from thermosgd.entropy import sphere_entropy
from thermosgd.isotropic import _rng
from thermosgd.isotropic import _kernel as _kernel_module
from thermosgd.isotropic._kernel import OPTIMIZER_CODES, _advance
from thermosgd.isotropic.config import IsotropicConfig
from thermosgd.protocols import make_protocol

__all__ = ["IsotropicResult", "simulate", "grid_momenta", "grid_protocol", "unit_vector"]


def grid_protocol(config: IsotropicConfig):
    """The protocol with (G,) hyperparameter arrays and the (G,) seeds, rate axis outermost
    (then lambda or r, then beta, then the seed; :func:`grid_momenta` gives the betas)."""
    rate, other, _, seed = _grid(config)
    return make_protocol(config.protocol, rate, other), seed.astype(np.int64)


def grid_momenta(config: IsotropicConfig) -> np.ndarray:
    """The (G,) momentum (AdamW: beta1) of each grid point, in :func:`grid_protocol`'s order."""
    return _grid(config)[2].astype(float)


def _grid(config: IsotropicConfig):
    return [np.array(a) for a in zip(*itertools.product(
        config.learning_rates, config.weight_decays_or_radii, config.betas, config.seeds))]


def unit_vector(d: int, seed: int, stream: int) -> np.ndarray:
    """A uniformly random unit vector in R^d from (seed, stream)."""
    v = np.random.default_rng([seed, stream]).standard_normal(d)
    return v / np.linalg.norm(v)


@dataclass
class IsotropicResult:
    """Everything one grid run produced: per-point stationary table, logs and entropy traces."""

    config: IsotropicConfig
    table: pd.DataFrame  # one row per grid point (see :func:`simulate`)
    log_iterations: np.ndarray  # (n_logs,)
    loss: np.ndarray  # (G, n_logs) float32, L(w) at each log
    radius: np.ndarray  # (G, n_logs) float32, ||w|| at each log
    lambda_eff: np.ndarray | None  # (G, n_logs) float32, eq. 83 averaged between logs (sphere)
    entropy_iterations: np.ndarray  # (n_eval,)
    entropy_sphere: np.ndarray  # (G, n_eval) sphere entropy of the queue (eq. 26)
    entropy: np.ndarray  # (G, n_eval) total entropy of the queue (eq. 28)
    mu: np.ndarray = field(repr=False, default=None)  # (d,)
    angular_update: np.ndarray | None = None  # (G, n_logs) float32, angle of the step at each log
    preconditioner: np.ndarray | None = None  # (G, n_logs) float32, AdamW's mean sqrt(v_hat) + eps


def _kernel_ready() -> bool:
    """Is the compiled loop in this process already, or in numba's on-disk cache (an index
    newer than the kernel's sources)?"""
    if _advance.signatures:
        return True
    cache_file = getattr(getattr(_advance, "_cache", None), "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    if index is None or not os.path.exists(index):
        return False
    sources = [_kernel_module.__file__, _rng.__file__]
    return os.path.getmtime(index) >= max(os.path.getmtime(f) for f in sources)


def _stream_seeds(config: IsotropicConfig, protocol, seeds):
    """SeedSequence entropy per grid point from (seed, protocol, float bits of both hyperparams)."""
    bits = lambda a: np.asarray(a, dtype=np.float64).view(np.uint64)  # noqa: E731
    rate = bits(protocol.rate)
    other = bits(np.broadcast_to(protocol.weight_decay_or_radius, protocol.rate.shape))
    return [(int(s), protocol.code, int(a), int(b)) for s, a, b in zip(seeds, rate, other)]


def simulate(config: IsotropicConfig, *, progress: bool = True) -> IsotropicResult:
    """Run noisy GD (eq. 24) for every grid point of ``config`` and summarize stationarity.

    Logs loss and radius every ``log_every`` steps; keeps a ring buffer of ``queue_size``
    snapshots taken every ``queue_every`` steps and evaluates its sphere and total entropy
    (eq. 26-28) every ``entropy_every`` steps once full. Stationary values: means over the last
    ``stationary_logs`` logs; entropy = mean of the last ``entropy_average`` evaluations.

    The returned table has one row per grid point with the hyperparameters (protocol, learning_rate,
    weight_decay, sphere_radius, seed), the status (finished or diverged), the measured stationary values (radius, U, entropy_sphere, entropy,
    lambda_eff), the state variables (temperature, pressure, volume) and the theory columns
    (radius_theory, U_theory, entropy_sphere_theory, entropy_theory, lambda_eff_theory).
    """
    from tqdm.auto import tqdm

    protocol, seeds = grid_protocol(config)
    n_points, d = seeds.size, config.dim
    mu = config.mu_norm * unit_vector(d, config.mu_seed, 0)
    w = unit_vector(d, config.mu_seed, 1)[None, :] * protocol.initial_norm()[:, None]  # (G, d)
    state = _rng.seed_states(_stream_seeds(config, protocol, seeds))  # (G, 4)
    alive = np.ones(n_points, dtype=bool)
    n_logs = config.n_logs
    loss = np.full((n_points, n_logs), np.nan, dtype=np.float32)
    radius = np.full((n_points, n_logs), np.nan, dtype=np.float32)
    sphere = config.protocol == "fixed-sphere"
    leff = np.full((n_points, n_logs) if sphere else (1, 1), np.nan, dtype=np.float32)
    queue = np.zeros((n_points, config.queue_size, d))  # (G, N, d)
    rate = np.ascontiguousarray(protocol.rate, dtype=float)
    other = np.ascontiguousarray(np.broadcast_to(protocol.weight_decay_or_radius, rate.shape),
                                 dtype=float)
    opt = config.optimizer
    betas = grid_momenta(config)  # (G,)
    code, hyper, cuts = _optimizer_arrays(opt, n_points, sphere, betas)
    buf = np.zeros((n_points, d if code else 0))  # (G, d) momentum buffer or Adam's m
    sq = np.zeros((n_points, d if opt.adaptive else 0))  # (G, d) Adam's v
    angle = np.full((n_points, n_logs), np.nan, dtype=np.float32)
    precond = np.full((n_points, n_logs) if opt.adaptive else (1, 1), np.nan, dtype=np.float32)

    eval_at = config.first_entropy_at + config.entropy_every * np.arange(
        config.n_entropy_evaluations)
    s_sphere = np.full((n_points, eval_at.size), np.nan)
    s_total = np.full((n_points, eval_at.size), np.nan)
    stops = np.unique(np.concatenate([eval_at, [config.iterations]]))
    if progress and not _kernel_ready():
        tqdm.write("compiling kernels (first run only)", file=sys.stderr)
    bar = tqdm(total=config.iterations, desc=f"{config.protocol} ({n_points} points)",
               unit="it", unit_scale=True, disable=not progress, leave=False)
    start = 0
    for stop in stops:
        _advance(w, state, alive, mu, protocol.code, rate, other, config.sigma, int(start),
                 int(stop), config.log_every, config.queue_every, loss, radius, leff, queue,
                 _rng.ZIG_X, _rng.ZIG_RATIO, code, hyper, cuts, buf, sq, angle, precond)
        bar.update(int(stop - start))
        start = stop
        hit = np.flatnonzero(eval_at == stop)
        if hit.size and alive.any():
            e = hit[0]
            s_sphere[alive, e] = sphere_entropy(queue[alive])
            mean_norm = np.linalg.norm(queue[alive], axis=-1).mean(axis=-1)
            s_total[alive, e] = theory.total_entropy(s_sphere[alive, e], mean_norm, d)
    bar.close()
    s_sphere[~alive] = np.nan
    s_total[~alive] = np.nan
    table = _stationary_table(config, protocol, seeds, betas, alive, loss, radius,
                              leff if sphere else None, s_sphere, s_total, angle,
                              precond if opt.adaptive else None)
    return IsotropicResult(
        config=config, table=table,
        log_iterations=config.log_every * np.arange(1, n_logs + 1),
        loss=loss, radius=radius, lambda_eff=leff if sphere else None,
        entropy_iterations=eval_at, entropy_sphere=s_sphere, entropy=s_total, mu=mu,
        angular_update=angle, preconditioner=precond if opt.adaptive else None,
    )


def _bias_cut(beta: float) -> int:
    """The first step t from which 1 - beta^t rounds to 1 in float64: beta^t <= 2^-56 (a margin
    of two binades over the 2^-54 that rounds, for pow's last-bit error)."""
    if beta <= 0.0:
        return 0
    return int(np.ceil(56.0 * np.log(2.0) / -np.log(beta))) + 1


def _optimizer_arrays(opt, n_points: int, sphere: bool, betas=None):
    """The kernel's view of the optimizer: its code, (G, 4) hyperparameters, (G, 2) cuts;
    ``betas`` (G,) replaces its momentum point by point (a grid over beta)."""
    betas = np.full(n_points, opt.momentum) if betas is None else np.asarray(betas, float)
    hyper = np.empty((n_points, 4))
    cuts = np.zeros((n_points, 2), np.int64)
    for beta in np.unique(betas):
        at = betas == beta
        point = dataclasses.replace(opt, momentum=float(beta))
        hyper[at] = (beta, opt.beta2, opt.eps,
                     1.0 / theory.sphere_pressure_rate(point) if sphere else 1.0)
        if opt.adaptive:
            cuts[at] = (_bias_cut(beta), _bias_cut(opt.beta2))
    return OPTIMIZER_CODES[opt.name], hyper, cuts


def _stationary_table(config, protocol, seeds, betas, alive, loss, radius, leff, s_sphere,
                      s_total, angle, precond):
    """One row per grid point, in the columns of :data:`thermosgd.results.schema.STATIONARY_COLUMNS`."""
    d, sigma2 = config.dim, config.sigma**2
    window = slice(max(0, config.n_logs - config.stationary_logs), None)
    last = slice(max(0, s_sphere.shape[1] - config.entropy_average), None)

    def stationary(logs):
        return np.where(alive, logs[:, window].mean(axis=1, dtype=np.float64), np.nan)

    with np.errstate(invalid="ignore"):
        r = stationary(radius)
        u = stationary(loss)
        s_sph = np.where(alive, s_sphere[:, last].mean(axis=1), np.nan)
        s_tot = np.where(alive, s_total[:, last].mean(axis=1), np.nan)
        # the angle's root mean square: the theory gives E[angle^2] (a chi with d-1 degrees of
        # freedom at d = 3 has a mean 11 % below its rms)
        rms_angle = np.sqrt(stationary(angle.astype(np.float64) ** 2))
        c = None if precond is None else stationary(precond)
    gas = _grid_gas(config, protocol, betas)
    temperature, r_theory = gas["temperature"], gas["radius_theory"]
    sph_theory = theory.vmf_sphere_entropy(temperature, d, config.mu_norm)
    sphere = config.protocol == "fixed-sphere"
    nan = np.full(seeds.size, np.nan)
    lam = stationary(leff) if sphere else nan
    opt = config.optimizer
    table = pd.DataFrame({
        "protocol": config.protocol,
        "d": d,
        "sigma": config.sigma,
        "seed": seeds,
        "learning_rate": protocol.rate,
        "weight_decay": nan if sphere else protocol.weight_decay_or_radius,
        "sphere_radius": protocol.weight_decay_or_radius if sphere else nan,
        "status": np.where(alive, "finished", "diverged"),
        "radius": r,
        "U": u,
        "entropy_sphere": s_sph,
        "entropy": s_tot,
        "temperature": temperature,
        "pressure": lam if sphere else gas["pressure"],
        "volume": theory.volume(r),
        "lambda_eff": lam,
        "radius_theory": r_theory,
        "U_theory": theory.vmf_mean_loss(temperature, d, config.mu_norm),
        "entropy_sphere_theory": sph_theory,
        "entropy_theory": theory.total_entropy(sph_theory, r_theory, d),
        "lambda_eff_theory": gas["pressure"] if sphere else nan,
        "angular_update": rms_angle,
        "angular_update_theory": gas["angular_update_theory"],
        "preconditioner": nan if c is None else c,
        "preconditioner_theory": gas.get("preconditioner_theory", nan),
        "optimizer": opt.name,
        "momentum": betas,
        "beta2": opt.beta2 if opt.adaptive else np.nan,
        "eps": opt.eps if opt.adaptive else np.nan,
    })
    if c is not None:  # Z = pV / (RT) from the measured state: p = lambda c, T = eta s2 / (2 r^2 c)
        t_state = theory.optimizer_temperature(opt, protocol.rate, r, sigma2, c)
        table["compressibility"] = theory.compressibility(protocol.weight_decay * c,
                                                          theory.volume(r), t_state, d)
    return table


def _grid_gas(config, protocol, betas) -> dict:
    """:func:`_gas` point by point over the beta axis: (G,) arrays of every prediction."""
    if np.unique(betas).size == 1:
        return _gas(dataclasses.replace(config, momenta=(), optimizer=dataclasses.replace(
            config.optimizer, momentum=float(betas[0]))), protocol)
    out = {}
    for beta in np.unique(betas):
        at = betas == beta
        part = make_protocol(config.protocol, protocol.rate[at],
                             np.broadcast_to(protocol.weight_decay_or_radius, betas.shape)[at])
        one = dataclasses.replace(config, momenta=(), optimizer=dataclasses.replace(
            config.optimizer, momentum=float(beta)))
        for key, value in _gas(one, part).items():
            out.setdefault(key, np.full(betas.shape, np.nan))[at] = value
    return out


def _gas(config, protocol) -> dict:
    """The optimizer's predictions on the grid: T, r*, p (lambda, lambda c for AdamW, or the
    sphere's lambda_eff of eq. 84), the angle per step and AdamW's preconditioner c.
    Plain SGD takes the protocol's own closed forms (eq. 7, 11-13, 18-21, 84)."""
    opt, d, sigma2 = config.optimizer, config.dim, config.sigma**2
    rate, other = protocol.rate, protocol.weight_decay_or_radius
    q = sigma2 * (d - 1)  # Tr Sigma of the isotropic noise
    out = {}
    if config.protocol == "fixed-sphere":
        out["angular_update_theory"] = theory.optimizer_angular_update_sphere(opt, rate, sigma2, d)
    if opt.name == "sgd":
        out.update(temperature=protocol.temperature(sigma2, d),
                   radius_theory=protocol.stationary_radius(sigma2, d),
                   pressure=protocol.pressure(sigma2, d))
    elif config.protocol == "fixed-sphere":
        out.update(temperature=theory.optimizer_temperature_fixed_sphere(opt, rate, sigma2),
                   radius_theory=protocol.stationary_radius(sigma2, d),
                   pressure=theory.optimizer_effective_pressure_sphere(opt, rate, other, sigma2, d))
    elif config.protocol == "fixed-elr":
        out.update(temperature=theory.optimizer_temperature_fixed_elr(opt, rate, sigma2),
                   radius_theory=theory.optimizer_radius_fixed_elr(opt, rate, other, q),
                   pressure=protocol.pressure(sigma2, d))
    else:
        r_star = theory.optimizer_radius_fixed_lr(opt, rate, other, q, d)
        c = theory.adamw_preconditioner(q, r_star, d, opt.eps) if opt.adaptive else None
        out.update(temperature=theory.optimizer_temperature_fixed_lr(opt, rate, other, sigma2, d),
                   radius_theory=r_star, pressure=theory.optimizer_pressure(opt, other, c))
        if c is not None:
            out["preconditioner_theory"] = c
    if config.protocol != "fixed-sphere":  # the per-step eta: eta_eff r*^2 under fixed ELR
        step_rate = rate * out["radius_theory"] ** 2 if config.protocol == "fixed-elr" else rate
        out["angular_update_theory"] = theory.optimizer_angular_update(opt, step_rate, other)
    return out
