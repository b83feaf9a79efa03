"""The sphere chart on the CPU as two fused numba passes (the torch path, ``_chart``, serves
CUDA and inputs too large to keep in float64).

Pass one turns every row into its angles (eq. 26) and its log-Jacobian (eq. 27) in one sweep
over the row, in the same order of operations as the torch chart: reversed coordinates, the
optional Householder reflection, cumulative sums of squares, atan2 of each coordinate against
the root of the sum before it. Pass two centres the stored angles and writes the float32 copy
and the squared distances to the mean that the Gram screen needs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from thermosgd.entropy._lowdim import _atan2, _atan_unit

_RESCALE = 1e250  # the running product of log J's sums is folded into a log beyond this


@njit(cache=True, inline="always")
def _atan2_right(y, x):  # pragma: no cover - compiled
    """``_lowdim._atan2`` for x >= 0 (the right half-plane, never both zero), without branches
    so that a loop of them vectorizes; the same operations, so the same bits."""
    ay = abs(y)
    steep = ay > x
    a = _atan_unit(min(ay, x) / max(ay, x))
    a = np.pi / 2 - a if steep else a
    return math.copysign(a, y)


@njit(parallel=True, cache=True)
def chart_rows(w, u, aligned, ref, raw, out, logj):  # pragma: no cover - compiled
    """Angles of the rows of w (B, N, d) into out (B, N, d-1) float64 and log J into logj (B, N).

    ``u`` (B, d): the Householder vector in reversed coordinates, scaled so that the reflection
    is y - u (u.y) (used when ``aligned``); ``ref`` (B, d-1): the chart of the mean direction,
    subtracted when ``raw``. Column order as the torch chart: theta_(d-2)..theta_1 mirrored as
    pi/2 - theta, then phi.
    """
    b, n, d = w.shape
    for t in prange(b * n):
        s, i = t // n, t % n
        y = np.empty(d)
        for k in range(d):
            y[k] = np.float64(w[s, i, d - 1 - k])
        if aligned:
            dot = 0.0
            for k in range(d):
                dot += y[k] * u[s, k]
            for k in range(d):
                y[k] -= u[s, k] * dot
        # a power of two brings the largest coordinate near 1: exact, and it keeps the sums of
        # squares and their running product away from overflow (angles and log J are
        # scale-invariant)
        top = 0.0
        for k in range(d):
            top = max(top, abs(y[k]))
        if top > 0.0:
            scale = math.ldexp(1.0, -math.frexp(top)[1])
            for k in range(d):
                y[k] *= scale
        c = np.empty(d)  # c[k] = S after k + 1 terms, as the torch chart's cumsum
        c[0] = y[0] * y[0]
        for k in range(1, d):
            c[k] = c[k - 1] + y[k] * y[k]
        for k in range(1, d - 1):  # independent: compiles to SIMD instructions
            out[s, i, k - 1] = _atan2_right(y[k + 1], math.sqrt(c[k]))
        product, log_sum = 1.0, 0.0
        for k in range(1, d - 1):
            product *= c[k]
            if not (1.0 / _RESCALE < product < _RESCALE):
                log_sum += math.log(product)
                product = 1.0
        out[s, i, d - 2] = _atan2(y[0], y[1])  # phi
        logj[s, i] = 0.5 * (log_sum + math.log(product)) - 0.5 * (d - 2) * math.log(c[d - 1])
        if raw:
            for k in range(d - 1):
                out[s, i, k] -= ref[s, k]


@njit(parallel=True, cache=True)
def centre(store64, store32, ss, blocks):  # pragma: no cover - compiled
    """Subtract each set's column means from store64 (B, N, D) in place; write the float32 copy
    store32 and the squared distances to the mean ss (B, N); ``blocks`` row blocks sum the
    columns in parallel."""
    b, n, dim = store64.shape
    blocks = max(1, min(n, blocks))
    for s in range(b):
        partial = np.zeros((blocks, dim))
        for blk in prange(blocks):
            for i in range(blk * n // blocks, (blk + 1) * n // blocks):
                for k in range(dim):
                    partial[blk, k] += store64[s, i, k]
        mean = np.zeros(dim)
        for blk in range(blocks):
            for k in range(dim):
                mean[k] += partial[blk, k]
        for k in range(dim):
            mean[k] /= n
        for i in prange(n):
            acc = 0.0
            for k in range(dim):
                v = store64[s, i, k] - mean[k]
                store64[s, i, k] = v
                store32[s, i, k] = np.float32(v)
                acc += v * v
            ss[s, i] = acc
