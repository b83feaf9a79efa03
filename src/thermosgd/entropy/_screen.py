"""Exact nearest neighbours in high dimension on the CPU: a float32 Gram screen with a proven
error bound, then exact float64 distances for the candidates the bound cannot rule out.

The screen ranks the points j of row i by s_ij = ||x~_j||^2 - 2 fl32(x~_i . x~_j), x~ the float32
copy of the float64 points x, the product taken blockwise from BLAS (sgemm, only the blocks on and
above the diagonal: the Gram matrix is symmetric). Its error against the exact float64 squared
distance d_ij^2 - ||x~_i||^2 is bounded for every j by

    E_i = 2 gamma_D A_i M + 3 u (A_i + M)^2,   A_i = ||x~_i||, M = max_j A_j, u = 2^-24,

- 2 gamma_D A_i A_j, gamma_D = D u / (1 - D u): a float32 dot product of D terms, summed in any
  order (BLAS blocks, FMA), errs by at most gamma_D sum_k |x~_ik x~_jk| <= gamma_D A_i A_j;
- 3 u (A_i + A_j)^2: rounding x to x~ moves each point by at most u ||x||, so the distance by at
  most rho = u (||x_i|| + ||x_j||) and its square by rho (2 d + rho) <= (2 + u) u (A_i + A_j)^2
  (with (1 - u)^-2 for ||x|| <= A / (1 - u)); the float64 arithmetic of the scores and of
  ||x~_j||^2 adds < 1e-10 relative, inside the 3 u.

The true nearest neighbour j* therefore has s_ij* <= d_ij*^2 - A_i^2 + E_i <= s_il + 2 E_i for
every l, so it is among the points with s_ij <= min_l s_il + 2 E_i. The screen keeps the 16
lowest scores of every row; the candidates are those within the margin, and their squared
distances are taken exactly from explicit float64 differences. A row whose 16th score is still
within its margin (more candidates may exist) is searched against all points exactly.
The bound needs no centring, only points whose norms are not far above their spread: the
charts and the centred flat store provide that.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

_KEEP = 16  # screening scores kept per row
_U32 = 2.0**-24  # unit roundoff of float32
_PARALLEL_MIN = 2**21  # numbers a pass must touch before it runs on the thread pool


def pool_map(fn, tasks, threads):
    """[fn(*task) for task in tasks] on ``threads`` threads taking tasks as they free up.

    The kernels are serial numba functions that release the GIL. A pool balances the load
    dynamically: on a shared machine a thread that loses its core delays only its own tasks,
    where the static split of an OpenMP loop or a multithreaded sgemm waits for the slowest."""
    if threads <= 1 or len(tasks) <= 1:
        return [fn(*task) for task in tasks]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda task: fn(*task), tasks))


def thread_count(elements):
    """torch's thread count for a pass over ``elements`` numbers, 1 below ~2 million: handing
    small work to a pool costs more than it saves (each hand-off waits for a thread to be
    scheduled, milliseconds on a busy machine)."""
    import torch

    return torch.get_num_threads() if elements >= _PARALLEL_MIN else 1


def row_ranges(n, pieces):
    """``pieces`` contiguous (start, stop) ranges covering range(n), as even as can be."""
    pieces = max(1, min(n, pieces))
    return [(k * n // pieces, (k + 1) * n // pieces) for k in range(pieces)]


def nn_sqdist(x32, sq, x64=None, *, threads=1):
    """Squared nearest-neighbour distances (B, N) float64 of the points x (B, N, D).

    ``x32``: the float32 points (NumPy, C order); ``sq`` (B, N): their squared norms in float64;
    ``x64``: the float64 points, for the exact distances (else taken from x32 in float64).
    """
    b = x32.shape[0]
    out = np.empty((b, x32.shape[1]))
    with _blas_controller().limit(limits=1, user_api="blas"):  # the pool makes the parallelism
        for s in range(b):
            out[s] = _nn_set(x32[s], sq[s], x64[s] if x64 is not None else x32[s], threads)
    return out


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once (a search of the process's
    libraries takes ~20 ms; a monitor calls the estimator for many small groups)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _nn_set(x32, sq, src, threads):
    n, dim = x32.shape
    keep = min(_KEEP, n - 1)
    best_v = np.full((n, keep), np.inf)
    best_i = np.zeros((n, keep), np.int64)
    # blocks of >= 256 rows keep sgemm efficient; ~8 blocks use the symmetry (36 of 64 products)
    edges = row_ranges(n, max(1, min(8, n // 256)))
    pairs = [(bi, bj) for bi in range(len(edges)) for bj in range(bi, len(edges))]

    def product(bi, bj):
        (r0, r1), (c0, c1) = edges[bi], edges[bj]
        return x32[r0:r1] @ x32[c0:c1].T  # (rows, cols) float32, sgemm

    if threads <= 1:
        blocks = (product(*pair) for pair in pairs)
    else:  # products on the pool, folds on this thread as the blocks arrive
        pool = ThreadPoolExecutor(max_workers=threads)
        blocks = pool.map(lambda pair: product(*pair), pairs)
    try:
        for (bi, bj), g in zip(pairs, blocks):
            r0, c0 = edges[bi][0], edges[bj][0]
            _fold(g, sq, r0, c0, best_v, best_i)
            if bj != bi:
                _fold(np.ascontiguousarray(g.T), sq, c0, r0, best_v, best_i)
    finally:
        if threads > 1:
            pool.shutdown()
    norm = np.sqrt(sq)
    big = norm.max()
    gamma = dim * _U32 / (1.0 - dim * _U32) if dim * _U32 < 0.5 else np.inf
    margin = 2.0 * (2.0 * gamma * norm * big + 3.0 * _U32 * (norm + big) ** 2)  # 2 E_i
    within = best_v <= best_v[:, :1] + margin[:, None]
    full = np.flatnonzero(within[:, -1]) if keep < n - 1 else np.empty(0, np.int64)
    within[full] = False
    rows = np.broadcast_to(np.arange(n)[:, None], within.shape)[within]
    cols = best_i[within]
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    keys, inverse = np.unique(lo * n + hi, return_inverse=True)  # each pair once, i-major
    a, b = keys // n, keys % n
    dist = pair_sqdist(src, a, b, threads=threads)
    d2 = np.full(n, np.inf)
    np.minimum.at(d2, rows, dist[inverse])
    if full.size:
        d2[full] = _rows_against_all(src, full)
    return d2


def pair_sqdist(x, rows_a, rows_b, *, threads=1):
    """||x_a - x_b||^2 in float64 for the row pairs (rows_a[p], rows_b[p]) of x (M, D), float32
    or float64, by explicit differences, on ``threads`` threads."""
    dist = np.empty(rows_a.size)
    pool_map(_pair_sqdist_range, [(x, rows_a, rows_b, dist, p0, p1)
                                  for p0, p1 in row_ranges(rows_a.size, 8 * threads)], threads)
    return dist


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _pair_sqdist_range(x, rows_a, rows_b, out, p0, p1):  # pragma: no cover - compiled
    """out[p] = ||x_a - x_b||^2 for pairs p0..p1, by explicit float64 differences (reassociation
    only lets the sum vectorize in several partial sums; every term is exact)."""
    for p in range(p0, p1):
        i, j = rows_a[p], rows_b[p]
        s = 0.0
        for t in range(x.shape[1]):
            diff = np.float64(x[i, t]) - np.float64(x[j, t])
            s += diff * diff
        out[p] = s


@njit(nogil=True, cache=True, error_model="numpy")
def _fold(g, sq, r0, c0, best_v, best_i):  # pragma: no cover - compiled
    """Fold a Gram block g (rows r0.., columns c0..) into each row's sorted lowest scores
    s_ij = sq_j - 2 g_ij (the point itself excluded)."""
    nr, nc = g.shape
    keep = best_v.shape[1]
    for r in range(nr):
        i = r0 + r
        for c in range(nc):
            j = c0 + c
            v = sq[j] - 2.0 * np.float64(g[r, c])
            if v < best_v[i, keep - 1] and j != i:
                p = keep - 1
                while p > 0 and best_v[i, p - 1] > v:
                    best_v[i, p] = best_v[i, p - 1]
                    best_i[i, p] = best_i[i, p - 1]
                    p -= 1
                best_v[i, p] = v
                best_i[i, p] = j


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _rows_against_all(x, rows):  # pragma: no cover - compiled
    """Exact squared distance from each x[rows[p]] to its nearest other row of x (M, D)."""
    n, dim = x.shape
    out = np.empty(rows.size)
    for p in prange(rows.size):
        i = rows[p]
        best = np.inf
        for j in range(n):
            if j != i:
                s = 0.0
                for t in range(dim):
                    diff = np.float64(x[i, t]) - np.float64(x[j, t])
                    s += diff * diff
                best = min(best, s)
        out[p] = best
    return out


@njit(nogil=True, cache=True)
def row_sq(x32, sq):  # pragma: no cover - compiled
    """Squared norms in float64 of the float32 rows of x32 (B, N, D) into sq (B, N)."""
    b, n, dim = x32.shape
    for t in range(b * n):
        s, i = t // n, t % n
        acc = 0.0
        for k in range(dim):
            v = np.float64(x32[s, i, k])
            acc += v * v
        sq[s, i] = acc
