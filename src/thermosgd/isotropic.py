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

import itertools
import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import pandas as pd

from thermosgd import _rng, theory
from thermosgd.entropy import sphere_entropy
from thermosgd.protocols import PROTOCOLS, make_protocol

__all__ = ["IsotropicConfig", "IsotropicResult", "simulate", "grid_protocol", "unit_vector"]


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

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        object.__setattr__(self, "learning_rates", _floats(self.learning_rates))
        object.__setattr__(self, "weight_decays", _floats(self.weight_decays))
        object.__setattr__(self, "radii", _floats(self.radii))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        sphere = self.protocol == "fixed-sphere"
        rate = "--elr (effective learning rates)" if self.protocol != "fixed-lr" else "--lr"
        _require_positive(self.learning_rates, f"learning rates ({rate})")
        if sphere:
            if self.weight_decays:
                raise ValueError("fixed-sphere has no weight decay: drop --wd, give --radius")
            _require_positive(self.radii, "radii (--radius)")
        else:
            if self.radii:
                raise ValueError(f"{self.protocol} has no sphere radius: drop --radius")
            _require_positive(self.weight_decays, "weight decays (--wd)")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.dim < 2:
            raise ValueError(f"dimension d must be >= 2 (a sphere S^(d-1) needs d >= 2), got {self.dim}")
        for name in ("sigma", "mu_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        for name in ("iterations", "log_every", "stationary_logs", "queue_size", "queue_every",
                     "entropy_every", "entropy_average"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
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
    def second_values(self) -> tuple[float, ...]:
        return self.radii if self.protocol == "fixed-sphere" else self.weight_decays

    @property
    def grid_size(self) -> int:
        return len(self.learning_rates) * len(self.second_values) * len(self.seeds)


def _floats(values) -> tuple[float, ...]:
    if np.ndim(values) == 0:
        values = (values,)
    return tuple(float(v) for v in values)


def _require_positive(values, what):
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise ValueError(f"{what} must all be positive and finite, got {list(values)}")


def grid_protocol(config: IsotropicConfig):
    """The protocol with (G,) hyperparameter arrays and the (G,) seeds, rate axis outermost."""
    rate, second, seed = (
        np.array(a) for a in zip(*itertools.product(
            config.learning_rates, config.second_values, config.seeds))
    )
    return make_protocol(config.protocol, rate, second), seed.astype(np.int64)


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


_LANES = 16  # grid points advanced together per thread, laid out for SIMD (see _advance)


@nb.njit(parallel=True, cache=True)
def _advance(w, state, alive, mu, code, rate, second, sigma, start, stop, log_every,
             queue_every, loss_log, radius_log, leff_log, queue, zx, zr):  # pragma: no cover
    """Run steps start+1..stop for every grid point; fills logs and the snapshot ring buffer.

    w (G, d), state (G, 4) uint64, alive (G,) bool; code: 0 sphere, 1 fixed ELR, 2 fixed LR
    (``Protocol.code``); rate (G,) eta or eta_eff; second (G,) lambda or r; logs (G, n_logs);
    queue (G, Q, d). The arithmetic mirrors ``Protocol.step`` exactly (tested).

    One point's step is a chain of dependent operations (norm, sqrt, divide, update) that
    leaves the core mostly idle, so each thread advances a block of _LANES points with the lane
    axis last: the loops over lanes compile to SIMD instructions (~1.5x faster at d = 3). Only
    the ziggurat draws stay scalar. Lanes past the end of the grid repeat lane 0 and are never
    written back.
    """
    n_points, d = w.shape
    q_size = queue.shape[1]
    n_blocks = (n_points + _LANES - 1) // _LANES
    for b in nb.prange(n_blocks):
        lo = b * _LANES
        m = min(n_points, lo + _LANES) - lo
        x = np.empty((d, _LANES))  # (d, P)
        st = np.empty((_LANES, 4), np.uint64)
        eta = np.empty(_LANES)
        snd = np.empty(_LANES)
        for p in range(_LANES):
            src = lo + p if p < m else lo
            for i in range(d):
                x[i, p] = w[src, i]
            for j in range(4):
                st[p, j] = state[src, j]
            eta[p], snd[p] = rate[src], second[src]
        live = alive[lo:lo + m].copy()
        eps = np.empty((d, _LANES))
        r2 = np.empty(_LANES)
        mw = np.empty(_LANES)
        ew = np.empty(_LANES)
        inv = np.empty(_LANES)
        lr = np.empty(_LANES)
        decay = np.empty(_LANES)
        v2 = np.empty(_LANES)
        leff_sum = np.zeros(_LANES)
        # countdowns instead of k % n: an integer division per step costs as much as the physics
        to_log = log_every - start % log_every
        to_queue = queue_every - start % queue_every
        log_slot = start // log_every
        queue_slot = (start // queue_every) % q_size
        for _ in range(stop - start):
            for p in range(_LANES):
                s0, s1, s2, s3 = st[p, 0], st[p, 1], st[p, 2], st[p, 3]
                for i in range(d):
                    eps[i, p], s0, s1, s2, s3 = _rng.normal(s0, s1, s2, s3, zx, zr)
                st[p, 0], st[p, 1], st[p, 2], st[p, 3] = s0, s1, s2, s3
            for p in range(_LANES):
                r2[p] = 0.0
                mw[p] = 0.0
                ew[p] = 0.0
            for i in range(d):
                for p in range(_LANES):
                    r2[p] += x[i, p] * x[i, p]
                    mw[p] += mu[i] * x[i, p]
                    ew[p] += eps[i, p] * x[i, p]
            for p in range(_LANES):
                inv[p] = 1.0 / math.sqrt(r2[p])
                mw[p] *= inv[p]  # mu . w_bar
                ew[p] *= inv[p]  # eps . w_bar
            # grad_i = [(mu - (mu.w_bar) w_bar) + sigma (eps - (eps.w_bar) w_bar)] / r  (eq. 24)
            if code == 0:  # fixed sphere, eta = eta_eff r^2 (eq. 2), projected back to radius r
                for p in range(_LANES):
                    lr[p] = eta[p] * snd[p] * snd[p]
                    v2[p] = 0.0
                for i in range(d):
                    for p in range(_LANES):
                        wb = x[i, p] * inv[p]
                        gi = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
                        x[i, p] = x[i, p] - lr[p] * gi
                        v2[p] += x[i, p] * x[i, p]
                for p in range(_LANES):
                    vn = math.sqrt(v2[p])
                    r = r2[p] * inv[p]
                    leff_sum[p] += (vn - r) / (lr[p] * r)  # eq. 83
                    v2[p] = snd[p] / vn
                for i in range(d):
                    for p in range(_LANES):
                        x[i, p] *= v2[p]
            else:  # fixed ELR (eq. 8, eta = eta_eff r^2) or fixed LR (eq. 15)
                for p in range(_LANES):
                    lr[p] = eta[p] * r2[p] if code == 1 else eta[p]
                    decay[p] = 1.0 - lr[p] * snd[p]
                for i in range(d):
                    for p in range(_LANES):
                        wb = x[i, p] * inv[p]
                        gi = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
                        x[i, p] = decay[p] * x[i, p] - lr[p] * gi
            to_log -= 1
            if to_log == 0:
                to_log = log_every
                for p in range(m):
                    if not live[p]:
                        continue
                    rr = 0.0
                    mm = 0.0
                    for i in range(d):
                        rr += x[i, p] * x[i, p]
                        mm += mu[i] * x[i, p]
                    rr = math.sqrt(rr)
                    if not (rr > 0.0 and rr < 1e150):  # NaN, inf or collapsed: diverged
                        live[p] = False
                        continue
                    loss_log[lo + p, log_slot] = 1.0 + mm / rr
                    radius_log[lo + p, log_slot] = rr
                    if code == 0:
                        leff_log[lo + p, log_slot] = leff_sum[p] / log_every
                for p in range(_LANES):
                    leff_sum[p] = 0.0
                log_slot += 1
            to_queue -= 1
            if to_queue == 0:
                to_queue = queue_every
                for p in range(m):
                    for i in range(d):
                        queue[lo + p, queue_slot, i] = x[i, p]
                queue_slot += 1
                if queue_slot == q_size:
                    queue_slot = 0
        for p in range(m):
            for i in range(d):
                w[lo + p, i] = x[i, p]
            for j in range(4):
                state[lo + p, j] = st[p, j]
        alive[lo:lo + m] = live


def _stream_seeds(config: IsotropicConfig, protocol, seeds):
    """SeedSequence entropy per grid point from (seed, protocol, float bits of both hyperparams)."""
    bits = lambda a: np.asarray(a, dtype=np.float64).view(np.uint64)  # noqa: E731
    rate, second = bits(protocol.rate), bits(np.broadcast_to(protocol.second, protocol.rate.shape))
    return [(int(s), protocol.code, int(a), int(b)) for s, a, b in zip(seeds, rate, second)]


def simulate(config: IsotropicConfig, *, progress: bool = True) -> IsotropicResult:
    """Run noisy GD (eq. 24) for every grid point of ``config`` and summarize stationarity.

    Logs loss and radius every ``log_every`` steps; keeps a ring buffer of ``queue_size``
    snapshots taken every ``queue_every`` steps and evaluates its sphere and total entropy
    (eq. 26-28) every ``entropy_every`` steps once full. Stationary values: means over the last
    ``stationary_logs`` logs; entropy = mean of the last ``entropy_average`` evaluations.

    The returned table has one row per grid point with the hyperparameters (protocol, lr, wd,
    radius_target, seed), the measured stationary values (radius, U, entropy_sphere, entropy,
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
    second = np.ascontiguousarray(np.broadcast_to(protocol.second, rate.shape), dtype=float)

    eval_at = config.first_entropy_at + config.entropy_every * np.arange(
        config.n_entropy_evaluations)
    s_sphere = np.full((n_points, eval_at.size), np.nan)
    s_total = np.full((n_points, eval_at.size), np.nan)
    stops = np.unique(np.concatenate([eval_at, [config.iterations]]))
    bar = tqdm(total=config.iterations, desc=f"{config.protocol} ({n_points} points)",
               unit="it", unit_scale=True, disable=not progress, leave=False)
    start = 0
    for stop in stops:
        _advance(w, state, alive, mu, protocol.code, rate, second, config.sigma, int(start),
                 int(stop), config.log_every, config.queue_every, loss, radius, leff, queue,
                 _rng.ZIG_X, _rng.ZIG_RATIO)
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
    table = _stationary_table(config, protocol, seeds, alive, loss, radius,
                              leff if sphere else None, s_sphere, s_total)
    return IsotropicResult(
        config=config, table=table,
        log_iterations=config.log_every * np.arange(1, n_logs + 1),
        loss=loss, radius=radius, lambda_eff=leff if sphere else None,
        entropy_iterations=eval_at, entropy_sphere=s_sphere, entropy=s_total, mu=mu,
    )


def _stationary_table(config, protocol, seeds, alive, loss, radius, leff, s_sphere, s_total):
    d, sigma2 = config.dim, config.sigma**2
    window = slice(max(0, config.n_logs - config.stationary_logs), None)
    last = slice(max(0, s_sphere.shape[1] - config.entropy_average), None)
    with np.errstate(invalid="ignore"):
        r = np.where(alive, radius[:, window].mean(axis=1, dtype=np.float64), np.nan)
        u = np.where(alive, loss[:, window].mean(axis=1, dtype=np.float64), np.nan)
        s_sph = np.where(alive, s_sphere[:, last].mean(axis=1), np.nan)
        s_tot = np.where(alive, s_total[:, last].mean(axis=1), np.nan)
    temperature = protocol.temperature(sigma2, d)
    r_theory = protocol.stationary_radius(sigma2, d)
    sph_theory = theory.vmf_sphere_entropy(temperature, d, config.mu_norm)
    sphere = config.protocol == "fixed-sphere"
    nan = np.full(seeds.size, np.nan)
    lam = np.where(alive, leff[:, window].mean(axis=1, dtype=np.float64), np.nan) if sphere else nan
    table = pd.DataFrame({
        "protocol": config.protocol,
        "d": d,
        "sigma": config.sigma,
        "seed": seeds,
        "lr": protocol.rate,
        "wd": nan if sphere else protocol.second,
        "radius_target": protocol.second if sphere else nan,
        "diverged": ~alive,
        "radius": r,
        "U": u,
        "entropy_sphere": s_sph,
        "entropy": s_tot,
        "temperature": temperature,
        "pressure": lam if sphere else protocol.pressure(sigma2, d),
        "volume": theory.volume(r),
        "lambda_eff": lam,
        "radius_theory": r_theory,
        "U_theory": theory.vmf_mean_loss(temperature, d, config.mu_norm),
        "entropy_sphere_theory": sph_theory,
        "entropy_theory": theory.total_entropy(sph_theory, r_theory, d),
        "lambda_eff_theory": protocol.pressure(sigma2, d) if sphere else nan,
    })
    return table
