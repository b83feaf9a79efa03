"""Counter-free per-stream Gaussian noise for compiled simulation loops.

The isotropic simulator draws ~5e9 normals at paper scale; NumPy's generator costs ~15 ns a
draw here plus an array round trip, numba's built-in ``np.random`` ~60 ns and is not
reproducible across thread schedules. Each grid point therefore owns a xoshiro256** state
(seeded from NumPy's ``SeedSequence``) that stays in registers inside the loop, and normals come
from a 256-layer ziggurat (Marsaglia & Tsang 2000, Doornik's formulation), ~9 ns a draw.
Tests check the moments and a Kolmogorov-Smirnov statistic.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import int64, uint64

_LAYERS = 256
_R = 3.6541528853610088  # right edge of the base layer
_V = 0.00492867323399  # common area of every layer


def _ziggurat_tables():
    x = np.zeros(_LAYERS + 1)
    x[0] = _V / math.exp(-0.5 * _R * _R)
    x[1] = _R
    for i in range(2, _LAYERS):
        x[i] = math.sqrt(-2.0 * math.log(_V / x[i - 1] + math.exp(-0.5 * x[i - 1] ** 2)))
    return x, x[1:] / x[:-1]


ZIG_X, ZIG_RATIO = _ziggurat_tables()
_M53 = 1.0 / 9007199254740992.0  # 2^-53


def seed_states(seeds) -> np.ndarray:
    """xoshiro256** states (n, 4) uint64 from a list of ``SeedSequence`` entropy tuples."""
    return np.stack(
        [np.random.SeedSequence(list(s)).generate_state(4, np.uint64) for s in seeds]
    ).astype(np.uint64)


@nb.njit(inline="always")
def xoshiro_next(s0, s1, s2, s3):
    """One xoshiro256** step: returns (output, new state)."""
    m = s1 * uint64(5)
    out = ((m << uint64(7)) | (m >> uint64(57))) * uint64(9)
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << uint64(45)) | (s3 >> uint64(19))
    return out, s0, s1, s2, s3


@nb.njit(inline="always")
def normal(s0, s1, s2, s3, zx, zr):
    """One standard normal by the ziggurat: returns (value, new state)."""
    while True:
        b, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        i = np.int64(b & uint64(255))
        # the top 53 bits fit an int64; signed conversion to double is one instruction
        u = float(int64(b >> uint64(11))) * (2.0 * _M53) - 1.0
        if abs(u) < zr[i]:  # inside the layer's rectangle: ~99 % of draws
            return u * zx[i], s0, s1, s2, s3
        b, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        v = (float(int64(b >> uint64(11))) + 0.5) * _M53
        if i == 0:  # the tail beyond R, Marsaglia's exponential rejection
            b, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
            v2 = (float(int64(b >> uint64(11))) + 0.5) * _M53
            x = math.log(v) / _R
            y = math.log(v2)
            if -2.0 * y >= x * x:
                return (x - _R if u < 0 else _R - x), s0, s1, s2, s3
            continue
        x = u * zx[i]
        f0 = math.exp(-0.5 * (zx[i] * zx[i] - x * x))
        f1 = math.exp(-0.5 * (zx[i + 1] * zx[i + 1] - x * x))
        if f1 + v * (f0 - f1) < 1.0:
            return x, s0, s1, s2, s3


@nb.njit(inline="always")
def normal_lanes(st, out, draws, zx, zr):
    """One standard normal per lane: ``st`` (4, P) uint64 states (one xoshiro256** stream per
    lane, advanced), ``out`` (P,) the normals, ``draws`` (P,) uint64 scratch. The same ziggurat
    as :func:`normal`, written as one loop over lanes without branches, so that the compiler
    runs the lanes' generators and the fast accept path (~99 % of draws) as SIMD instructions;
    the rare rejected draws then finish one lane at a time (:func:`_finish`)."""
    lanes = out.shape[0]
    rejected = 0
    for p in range(lanes):
        b, st[0, p], st[1, p], st[2, p], st[3, p] = xoshiro_next(st[0, p], st[1, p], st[2, p],
                                                                 st[3, p])
        draws[p] = b
        k = int64(b & uint64(255))
        u = float(int64(b >> uint64(11))) * (2.0 * _M53) - 1.0  # [-1, 1)
        out[p] = u * zx[k]
        rejected += abs(u) >= zr[k]
    if rejected:
        for p in range(lanes):
            k = int64(draws[p] & uint64(255))
            u = float(int64(draws[p] >> uint64(11))) * (2.0 * _M53) - 1.0
            if abs(u) >= zr[k]:
                out[p] = _finish(st, p, k, u, zx, zr)


@nb.njit
def _finish(st, p, i, u, zx, zr):
    """The ziggurat's slow path for lane ``p`` after its draw (layer ``i``, uniform ``u``) fell
    outside the layer's rectangle: the wedge test, or the tail beyond R; a rejection starts a
    fresh draw with :func:`normal`."""
    s0, s1, s2, s3 = st[0, p], st[1, p], st[2, p], st[3, p]
    b, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
    v = (float(int64(b >> uint64(11))) + 0.5) * _M53
    value = np.nan
    if i == 0:  # the tail beyond R, Marsaglia's exponential rejection
        b, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        v2 = (float(int64(b >> uint64(11))) + 0.5) * _M53
        x = math.log(v) / _R
        if -2.0 * math.log(v2) >= x * x:
            value = x - _R if u < 0 else _R - x
    else:
        x = u * zx[i]
        f0 = math.exp(-0.5 * (zx[i] * zx[i] - x * x))
        f1 = math.exp(-0.5 * (zx[i + 1] * zx[i + 1] - x * x))
        if f1 + v * (f0 - f1) < 1.0:
            value = x
    if value != value:  # rejected: a fresh draw
        value, s0, s1, s2, s3 = normal(s0, s1, s2, s3, zx, zr)
    st[0, p], st[1, p], st[2, p], st[3, p] = s0, s1, s2, s3
    return value


@nb.njit(cache=True)
def fill_normal(state, out):
    """Fill ``out`` (1-D) with standard normals from ``state`` (4,) uint64, advancing it: the
    numbers one lane of :func:`normal_lanes` draws (the isotropic kernel's noise)."""
    st = state.reshape(4, 1).copy()
    one = np.empty(1)
    draws = np.empty(1, np.uint64)
    for k in range(out.size):
        normal_lanes(st, one, draws, ZIG_X, ZIG_RATIO)
        out[k] = one[0]
    state[:] = st[:, 0]


@nb.njit(parallel=True, cache=True)
def noise_floor(states, steps, d):  # pragma: no cover - compiled
    """The kernel's noise alone: ``steps`` x ``d`` normals for every lane block of ``states``
    (G, 4), drawn as :func:`normal_lanes` draws them inside the simulator; returns their sum per
    point (so nothing is optimized away). The simulator's cost floor."""
    lanes = 16
    n = states.shape[0]
    total = np.zeros(n)
    for b in nb.prange((n + lanes - 1) // lanes):
        lo = b * lanes
        m = min(n, lo + lanes) - lo
        st = np.empty((4, lanes), np.uint64)
        for p in range(lanes):
            for j in range(4):
                st[j, p] = states[lo + (p if p < m else 0), j]
        out = np.empty(lanes)
        draws = np.empty(lanes, np.uint64)
        acc = np.zeros(lanes)
        for _ in range(steps):
            for _ in range(d):
                normal_lanes(st, out, draws, ZIG_X, ZIG_RATIO)
                for p in range(lanes):
                    acc[p] += out[p]
        for p in range(m):
            total[lo + p] = acc[p]
    return total
