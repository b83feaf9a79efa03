"""Low-dimensional nearest-neighbour kernels of :mod:`thermosgd.entropy` (numba, CPU).

An exact float64 sort-and-sweep nearest-neighbour search and the fused sphere pass (normalize,
align, angles, log-Jacobian, search) that the d = 3 isotropic simulator calls on 289 queues at
a time. Kept apart from entropy.py so each file reads on its own.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_ATAN_TABLE = np.arctan(np.arange(17) / 16.0)  # atan(k / 16), k = 0..16


@njit(cache=True, inline="always")
def _atan_unit(t):  # pragma: no cover - compiled
    """atan t for t in [0, 1] (see :func:`_atan2`): table point k/16 plus a Taylor series."""
    k = int(t * 16.0 + 0.5)
    c = k * 0.0625
    r = (t - c) / (1.0 + t * c)
    r2 = r * r
    poly = -1.0 / 11.0 + r2 / 13.0
    poly = -1.0 / 7.0 + r2 * (1.0 / 9.0 + r2 * poly)
    return _ATAN_TABLE[k] + (r + r * r2 * (-1.0 / 3.0 + r2 * (0.2 + r2 * poly)))


@njit(cache=True, inline="always")
def _atan2(y, x):  # pragma: no cover - compiled
    """atan2 within 2 ulp (1 ulp for small angles), about twice as fast as libm's.

    Reduce to t = min/max in [0, 1], take the nearest table point c = k/16 and
    atan t = atan c + atan r with r = (t - c) / (1 + t c), |r| <= 1/32, where the Taylor series to
    r^13 is exact to 1e-19 relative. t - c is exact (Sterbenz), so small angles keep full relative
    precision. Non-finite or zero denominators fall back to np.arctan2.
    """
    ay, ax = abs(y), abs(x)
    steep = ay > ax
    num, den = (ax, ay) if steep else (ay, ax)
    if not (0.0 < den < np.inf):
        return np.arctan2(y, x)
    a = _atan_unit(num / den)
    if steep:
        a = np.pi / 2 - a
    if x < 0.0:
        a = np.pi - a
    return math.copysign(a, y)


@njit(cache=True)
def _argsort_buckets(key):  # pragma: no cover - compiled
    """argsort of float64 keys in O(n) for spread-out data: counting sort into n equal-width
    buckets, then insertion sort inside each bucket (argsort for crowded ones: heavy tails)."""
    n = key.size
    lo, hi = key.min(), key.max()
    order = np.arange(n)
    if not hi > lo:
        return order
    scale = (n - 1) / (hi - lo)
    start = np.zeros(n + 1, np.int64)
    bucket = np.empty(n, np.int64)
    for i in range(n):
        bucket[i] = min(int((key[i] - lo) * scale), n - 1)
        start[bucket[i] + 1] += 1
    for c in range(n):
        start[c + 1] += start[c]
    for i in range(n):
        order[start[bucket[i]]] = i
        start[bucket[i]] += 1  # ends as the end of the bucket
    b0 = 0
    for c in range(n):
        b1 = start[c]
        if b1 - b0 > 32:
            seg = order[b0:b1].copy()
            sub = np.argsort(key[seg])
            for q in range(b1 - b0):
                order[b0 + q] = seg[sub[q]]
        else:
            for i in range(b0 + 1, b1):
                o, k = order[i], key[order[i]]
                j = i - 1
                while j >= b0 and key[order[j]] > k:
                    order[j + 1] = order[j]
                    j -= 1
                order[j + 1] = o
        b0 = b1
    return order


@njit(cache=True)
def _nn_sqdist_set(pts, out):  # pragma: no cover - compiled
    """Exact squared nearest-neighbour distances of one set pts (N, D) float64 into out (N,).

    Sort along the axis of largest spread, then sweep outwards from each point in both
    directions, stopping on each side once the gap along that axis alone reaches the best
    distance so far: every point closer than the result is visited, so the result is exact.
    """
    n, dim = pts.shape
    axis, spread = 0, -1.0
    for a in range(dim):
        if pts[:, a].max() - pts[:, a].min() > spread:
            axis, spread = a, pts[:, a].max() - pts[:, a].min()
    order = _argsort_buckets(np.ascontiguousarray(pts[:, axis]))
    s = np.empty((dim, n))  # sorted coordinates, sweep axis first (rows are contiguous)
    for i in range(n):
        s[0, i] = pts[order[i], axis]
        c = 1
        for a in range(dim):
            if a != axis:
                s[c, i] = pts[order[i], a]
                c += 1
    key = s[0]
    for i in range(n):
        best = np.inf
        up, down = i + 1, i - 1
        # alternate upward and downward steps: the best distance shrinks from both sides at
        # once, so each side stops earlier than in two separate scans
        while up < n or down >= 0:
            if up < n:
                d2 = (key[up] - key[i]) ** 2
                if d2 >= best:
                    up = n
                else:
                    for a in range(1, dim):
                        d2 += (s[a, up] - s[a, i]) ** 2
                    best = min(best, d2)
                    up += 1
            if down >= 0:
                d2 = (key[down] - key[i]) ** 2
                if d2 >= best:
                    down = -1
                else:
                    for a in range(1, dim):
                        d2 += (s[a, down] - s[a, i]) ** 2
                    best = min(best, d2)
                    down -= 1
        out[order[i]] = best


@njit(parallel=True, cache=True)
def _nn_sqdist_sweep(x):  # pragma: no cover - compiled
    """Squared nearest-neighbour distances (B, N) of x (B, N, D) float64, parallel over sets."""
    out = np.empty(x.shape[:2])
    for b in prange(x.shape[0]):
        _nn_sqdist_set(x[b], out[b])
    return out


@njit(parallel=True, cache=True)
def _sphere_sweep(w, align):  # pragma: no cover - compiled
    """Low-dimensional sphere path, one fused pass per set of w (B, N, d) float64.

    Returns squared nearest-neighbour distances of the angles (B, N), mean log J (B,), mean
    squared distance of the angles to their mean (B,), mean norm (B,), and a status per set:
    0 ok, 1 non-finite values, 2 a zero vector, 3 all points identical. Same formulas as
    :func:`to_spherical`, the telescoped log-Jacobian of the high-dimensional chart
    (``_chart``) and the Householder alignment.
    """
    nb, n, d = w.shape
    d2 = np.zeros((nb, n))
    logj, rms2, mean_norm = np.zeros(nb), np.zeros(nb), np.zeros(nb)
    status = np.zeros(nb, np.int64)
    for b in prange(nb):
        # Scalar loops throughout: array expressions inside numba loops allocate per point.
        x = w[b]
        u = np.empty((n, d))
        v = np.zeros(d)
        same = True
        for i in range(n):
            r = 0.0
            for a in range(d):
                r += x[i, a] * x[i, a]
                same = same and x[i, a] == x[0, a]
            r = np.sqrt(r)
            if not np.isfinite(r):
                status[b] = 1
            elif r == 0.0 and status[b] == 0:
                status[b] = 2
            mean_norm[b] += r / n
            inv = 1.0 / r
            for a in range(d):
                u[i, a] = x[i, a] * inv
                v[a] += u[i, a]
        if status[b] == 0 and same:
            status[b] = 3
        if status[b] != 0:
            continue
        if align:  # Householder reflection taking the mean direction to e_(d-1)
            vn = 0.0
            for a in range(d):
                vn += v[a] * v[a]
            vn = max(np.sqrt(vn), 1e-300)
            for a in range(d):
                v[a] /= vn
            v[d - 2] -= 1.0
            vv = 0.0
            for a in range(d):
                vv += v[a] * v[a]
            if vv > 0:
                for i in range(n):
                    p = 0.0
                    for a in range(d):
                        p += u[i, a] * v[a]
                    p *= 2.0 / vv
                    for a in range(d):
                        u[i, a] -= p * v[a]
        ang = np.empty((n, d - 1))
        tail = np.empty(d)
        centre = np.zeros(d - 1)
        for i in range(n):
            acc = 0.0
            for a in range(d - 1, -1, -1):
                acc += u[i, a] * u[i, a]
                tail[a] = acc  # S_j
            # log J = 0.5 log prod_(k=2)^(d-1) (S_k / S_1): one log (d <= 4 here, no underflow
            # short of a point within 1e-77 of the chart's singular set, which gives -inf anyway)
            ratio, inv = 1.0, 1.0 / tail[0]
            for a in range(d - 2):
                ang[i, a] = _atan2(np.sqrt(tail[a + 1]), u[i, a])
                ratio *= tail[a + 1] * inv
            ang[i, d - 2] = _atan2(u[i, d - 1], u[i, d - 2])
            logj[b] += 0.5 * np.log(ratio) / n
            for a in range(d - 1):
                centre[a] += ang[i, a] / n
        for i in range(n):
            for a in range(d - 1):
                rms2[b] += (ang[i, a] - centre[a]) ** 2 / n
        _nn_sqdist_set(ang, d2[b])
    return d2, logj, rms2, mean_norm, status
