"""The sphere chart on the CPU as fused numba passes (the torch path, ``_chart``, serves CUDA
and inputs too large to keep in float64).

``scan_rows`` reads the input once for validation, row norms and the mean direction;
``chart_rows`` turns every row into its angles (eq. 26) and its log-Jacobian (eq. 27) in one
sweep over the row, in the same order of operations as the torch chart: reversed coordinates,
the optional Householder reflection, cumulative sums of squares, atan2 of each coordinate
against the root of the sum before it. The row is processed in blocks that stay in L1 cache, and
it is written in float64 (for the exact distances) and float32 (for the Gram screen) at once.
The stored angles are not centred: both charts measure angles from the mean direction's own
coordinates, so the sample's mean is already near zero (its offset is second order in the
angular spread), which is all the float32 screen's error bound needs (``_screen``).

Every kernel compiles with ``error_model="numpy"``: the Python error model tests each division
for a zero divisor, which keeps LLVM from vectorizing the loops.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from thermosgd.entropy._lowdim import _atan2

_LOW, _HIGH = 1e-200, 1e200  # a running product of log J's sums is folded into a log outside
_BLOCK = 512  # coordinates per block of a row: its float64 temporaries stay in L1 cache
_TAN_PI_8 = math.tan(math.pi / 8)
# atan r = r + r^3 p(r^2) on |r| <= tan(pi/8): a least-squares fit of p on Chebyshev nodes
# (degree 10 in r^2); with Horner in float64 the result is within 3 ulp of libm's atan2
# (tested), and small angles keep full relative precision (the r term is exact).
_P = (-0.02031557066872881, 0.040136531491301974, -0.05115417619614505, 0.058634831828467224,
      -0.06665058603313653, 0.07692215123177489, -0.09090905523364304, 0.11111111023117846,
      -0.1428571428447004, 0.1999999999999204, -0.3333333333333331)
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8, _P9, _P10 = _P


@njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _atan2_right(y, x):  # pragma: no cover - compiled
    """atan2(y, x) for x >= 0 (the right half-plane), branch-free so that a loop vectorizes.

    With a = min(|y|, x), b = max(|y|, x), t = a/b is in [0, 1]; above tan(pi/8) the identity
    atan t = pi/4 + atan r, r = (t - 1)/(t + 1) = (a - b)/(a + b), brings it to |r| <= tan(pi/8),
    where the polynomial holds: one division either way (a - b is exact for t >= 1/2, Sterbenz).
    Multiply-adds may fuse (one rounding fewer). 0/0 (a zero row) gives NaN, which the
    log-Jacobian's -inf flags.
    """
    ay = abs(y)
    steep = 1.0 if ay > x else 0.0
    a, b = min(ay, x), max(ay, x)
    big = 1.0 if a > _TAN_PI_8 * b else 0.0
    r = (a - big * b) / (b + big * a)
    z = r * r
    p = _P0
    p = p * z + _P1
    p = p * z + _P2
    p = p * z + _P3
    p = p * z + _P4
    p = p * z + _P5
    p = p * z + _P6
    p = p * z + _P7
    p = p * z + _P8
    p = p * z + _P9
    p = p * z + _P10
    angle = (r + r * z * p) + big * (math.pi / 4)
    angle = steep * (math.pi / 2) + (1.0 - 2.0 * steep) * angle
    return math.copysign(angle, y)


@njit(nogil=True, cache=True, error_model="numpy")
def scan_rows(w, s, i0, i1, norms, unit):  # pragma: no cover - compiled
    """Rows i0..i1 of set s of w (B, N, d): their norms into norms (B, N) float64, the sum of
    their unit vectors added to unit (d,) (zero rows skipped; the caller rejects them). Returns
    whether any of them differs from the set's first row."""
    d = w.shape[2]
    differs = False
    for i in range(i0, i1):
        acc = 0.0
        for k in range(d):
            v = np.float64(w[s, i, k])
            acc += v * v
        r = math.sqrt(acc)
        norms[s, i] = r
        inv = 1.0 / r if r > 0.0 else 0.0
        diff = False
        for k in range(d):
            unit[k] += np.float64(w[s, i, k]) * inv
            diff |= w[s, i, k] != w[s, 0, k]
        differs |= diff
    return differs


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def chart_rows(w, u, aligned, ref, raw, out64, out32, sq, logj, t0, t1):  # pragma: no cover
    """Angles of the rows t0..t1 (flat index s N + i) of w (B, N, d) into out64 (B, N, d-1)
    and out32 (its float32 copy), log J into logj (B, N) and the squared norm of each float32
    row (in float64) into sq (B, N).

    ``u`` (B, d): the Householder vector in reversed coordinates, scaled so that the reflection
    is y - u (u.y) (used when ``aligned``); ``ref`` (B, d-1): the chart of the mean direction,
    subtracted when ``raw``. Column order as the torch chart: theta_(d-2)..theta_1 mirrored as
    pi/2 - theta, then phi. Float32 input needs no rescaling (squares of float32 numbers neither
    overflow nor underflow in float64); float64 input is brought near 1 by a power of two, which
    is exact, so the angles and log J are the same bits either way.
    """
    n, d = w.shape[1], w.shape[2]
    wide = w.itemsize == 8
    for t in range(t0, t1):
        s, i = t // n, t % n
        dot = 0.0
        if aligned:  # four partial sums: the reduction vectorizes
            d0, d1, d2, d3 = 0.0, 0.0, 0.0, 0.0
            k4 = d - d % 4
            for k in range(0, k4, 4):
                d0 += np.float64(w[s, i, d - 1 - k]) * u[s, k]
                d1 += np.float64(w[s, i, d - 2 - k]) * u[s, k + 1]
                d2 += np.float64(w[s, i, d - 3 - k]) * u[s, k + 2]
                d3 += np.float64(w[s, i, d - 4 - k]) * u[s, k + 3]
            for k in range(k4, d):
                d0 += np.float64(w[s, i, d - 1 - k]) * u[s, k]
            dot = (d0 + d1) + (d2 + d3)
        scale = 1.0
        if wide:
            top = 0.0
            for k in range(d):
                top = max(top, abs(np.float64(w[s, i, d - 1 - k]) - u[s, k] * dot))
            if top > 0.0:
                scale = math.ldexp(1.0, -math.frexp(top)[1])
        y = np.empty(_BLOCK + 1)  # y[j] = reflected, scaled coordinate k0 + j
        c = np.empty(_BLOCK)
        p0, p1, p2, p3, log_sum, norm2 = 1.0, 1.0, 1.0, 1.0, 0.0, 0.0
        # reversed coordinates 0 and 1 give phi; coordinate k + 1 against S after k + 1 terms
        # gives the theta column k - 1
        y0 = (np.float64(w[s, i, d - 1]) - u[s, 0] * dot) * scale
        y1 = (np.float64(w[s, i, d - 2]) - u[s, 1] * dot) * scale
        run = y0 * y0
        for k0 in range(1, d - 1, _BLOCK):
            k1 = min(k0 + _BLOCK, d - 1)
            m = k1 - k0
            for j in range(m + 1):
                k = k0 + j
                y[j] = (np.float64(w[s, i, d - 1 - k]) - u[s, k] * dot) * scale
            # c[j] = S after k0 + j + 1 terms. The running sum is a chain of dependent adds;
            # taking four terms per link (their partial sums are independent) shortens it 4x.
            m4 = m - m % 4
            for j in range(0, m4, 4):
                q0, q1 = y[j] * y[j], y[j + 1] * y[j + 1]
                q2, q3 = y[j + 2] * y[j + 2], y[j + 3] * y[j + 3]
                q01 = q0 + q1
                c[j] = run + q0
                c[j + 1] = run + q01
                c[j + 2] = run + (q01 + q2)
                run = run + (q01 + (q2 + q3))
                c[j + 3] = run
            for j in range(m4, m):
                run += y[j] * y[j]
                c[j] = run
            # log J's sum of logs as four running products, folded into logs before they leave
            # the float64 range (each c is within 1e+-90 of 1: float32 input, or scaled input)
            for j in range(0, m4, 4):
                p0 *= c[j]
                p1 *= c[j + 1]
                p2 *= c[j + 2]
                p3 *= c[j + 3]
                if not (_LOW < p0 < _HIGH and _LOW < p1 < _HIGH and _LOW < p2 < _HIGH
                        and _LOW < p3 < _HIGH):
                    log_sum += (math.log(p0) + math.log(p1)) + (math.log(p2) + math.log(p3))
                    p0, p1, p2, p3 = 1.0, 1.0, 1.0, 1.0
            for j in range(m4, m):
                p0 *= c[j]
                if not (_LOW < p0 < _HIGH):
                    log_sum += math.log(p0)
                    p0 = 1.0
            for j in range(m):
                c[j] = math.sqrt(c[j])
            for j in range(m):  # independent: SIMD
                c[j] = _atan2_right(y[j + 1], c[j])
            if raw:
                for j in range(m):
                    c[j] -= ref[s, k0 + j - 1]
            for j in range(m):
                out64[s, i, k0 + j - 1] = c[j]
                v = np.float32(c[j])
                out32[s, i, k0 + j - 1] = v
                norm2 += np.float64(v) * np.float64(v)
        last = (np.float64(w[s, i, 0]) - u[s, d - 1] * dot) * scale  # reversed coordinate d-1
        total = run + last * last  # S_1, the squared norm of the whole row
        phi = _atan2(y0, y1)
        if raw:
            phi -= ref[s, d - 2]
        out64[s, i, d - 2] = phi
        v = np.float32(phi)
        out32[s, i, d - 2] = v
        sq[s, i] = norm2 + np.float64(v) * np.float64(v)
        log_sum += (math.log(p0) + math.log(p1)) + (math.log(p2) + math.log(p3))
        logj[s, i] = 0.5 * log_sum - 0.5 * (d - 2) * math.log(total)


@njit(nogil=True, cache=True, error_model="numpy")
def spread_rows(x32, s, i0, i1, colsum):  # pragma: no cover - compiled
    """Add rows i0..i1 of set s of x32 (B, N, D) to colsum (D,) in float64; return the sum of
    their squared norms."""
    square = 0.0
    for i in range(i0, i1):
        for k in range(x32.shape[2]):
            v = np.float64(x32[s, i, k])
            colsum[k] += v
            square += v * v
    return square


@njit(parallel=True, cache=True, error_model="numpy")
def centre(store64, mean, store32, sq):  # pragma: no cover - compiled
    """Subtract each set's column means mean (B, D) from store64 (B, N, D) in float64, then
    rewrite the float32 copy store32 and its squared row norms sq (B, N)."""
    b, n, dim = store64.shape
    for t in prange(b * n):
        s, i = t // n, t % n
        acc = 0.0
        for k in range(dim):
            v = store64[s, i, k] - mean[s, k]
            store64[s, i, k] = v
            f = np.float32(v)
            store32[s, i, k] = f
            acc += np.float64(f) * np.float64(f)
        sq[s, i] = acc
