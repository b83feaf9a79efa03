"""Nearest neighbours in high dimension: a float32 Gram screen, then exact float64 distances.

Samples of SGD weights sit close together in up to ~10^5 dimensions, where
||a||^2 + ||b||^2 - 2 a.b in float32 loses every digit of the distance. The screen therefore
works on centered data (errors of eps32 times the spread, not the offset) and only ranks
candidates; the distances themselves are explicit float64 differences of the candidate pairs.
"""

from __future__ import annotations

import contextlib
import math

import numba
import torch

from thermosgd.entropy import _screen

_CANDIDATES = 8  # k: candidates per point kept by the float32 screen for the exact float64 pass
_CHUNK_BYTES = 2**24  # bytes of one row-chunk temporary (< 32 MiB: malloc reuses, no mmap)
_GRAM_BYTES = 2**26  # bytes of one float32 Gram block (B, blk, blk)


@contextlib.contextmanager
def _torch_threads_kept():
    """Run numba's parallel kernels on torch's thread budget and leave torch's intact.

    numba's OpenMP layer shares libgomp with torch and resets the process-wide OpenMP thread
    count when it starts: a run limited to 1 thread (a Ray task's CPU share) silently went to
    2 at its first entropy evaluation, and its float sums, so its trajectory, changed with it."""
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _chunks(n_sets, n_rows, row_bytes, budget=_CHUNK_BYTES):
    """(sets, rows) slices covering (n_sets, n_rows) with about ``budget`` bytes per chunk."""
    if n_rows * row_bytes <= budget:
        step = max(1, budget // (n_rows * row_bytes))
        for b0 in range(0, n_sets, step):
            yield slice(b0, min(b0 + step, n_sets)), slice(0, n_rows)
        return
    step = max(1, budget // row_bytes)
    for b in range(n_sets):
        for r0 in range(0, n_rows, step):
            yield slice(b, b + 1), slice(r0, min(r0 + step, n_rows))


def _merge_topk(best_v, best_i, rows, scores, col0, k):
    """Fold a block of screening scores (B, r, c) for ``rows`` into the running k smallest."""
    v, i = torch.topk(scores, min(k, scores.shape[-1]), dim=-1, largest=False, sorted=False)
    v = torch.cat([best_v[:, rows], v], dim=-1)
    i = torch.cat([best_i[:, rows], i + col0], dim=-1)
    v, j = torch.topk(v, k, dim=-1, largest=False, sorted=False)
    best_v[:, rows] = v
    best_i[:, rows] = torch.gather(i, -1, j)


def _nn_sqdist_gram(x32, sq32, x64=None, *, k=_CANDIDATES, block=None):
    """Squared nearest-neighbour distances (B, N) float64 of centered points x (B, N, D).

    Screen: score_ij = ||x_j||^2 - 2 x_i.x_j from float32 Gram blocks (the order of
    ||x_i - x_j||^2 along row i); the k lowest per row survive. Centering matters: the float32
    scores then carry errors of eps32 times the spread, not times the offset. The Gram matrix is
    symmetric, so only blocks J >= I are multiplied and each feeds rows I and rows J. Exact pass:
    ||x_i - x_j||^2 from explicit float64 differences (of x64 if given, else of the float32
    values) for the candidate pairs, each unordered pair once; min over the k candidates.
    """
    b, n, dim = x32.shape
    k = min(k, n - 1)
    dev = x32.device
    best_v = torch.full((b, n, k), float("inf"), dtype=torch.float32, device=dev)
    best_i = torch.zeros((b, n, k), dtype=torch.long, device=dev)
    if block is None:  # ~8 blocks (symmetry saves ~44%), 3 float32 (B, blk, blk) temporaries
        block = min(max(256, -(-n // 8)), math.isqrt(_GRAM_BYTES // (12 * b)))
    nblk = -(-n // max(1, min(n, block)))
    edges = [i * n // nblk for i in range(nblk + 1)]
    for bi in range(nblk):
        ri = slice(edges[bi], edges[bi + 1])
        for bj in range(bi, nblk):
            rj = slice(edges[bj], edges[bj + 1])
            g = torch.bmm(x32[:, ri], x32[:, rj].transpose(1, 2))  # (B, bi, bj)
            scores = torch.add(sq32[:, None, rj], g, alpha=-2.0)
            if bi == bj:
                scores.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # self is not a neighbour
            _merge_topk(best_v, best_i, ri, scores, rj.start, k)
            if bi != bj:
                scores = torch.add(sq32[:, None, ri], g.transpose(1, 2), alpha=-2.0)
                _merge_topk(best_v, best_i, rj, scores, ri.start, k)
    # Unique unordered candidate pairs, as keys ((set n + lo) n + hi), sorted: i-major locality.
    i = torch.arange(n, device=dev)[None, :, None]
    lo, hi = torch.minimum(i, best_i), torch.maximum(i, best_i)
    key = (torch.arange(b, device=dev)[:, None, None] * n + lo) * n + hi  # (B, N, k)
    pairs, inverse = torch.unique(key.flatten(), return_inverse=True)
    rows_a, rows_b = pairs // n, (pairs // (n * n)) * n + pairs % n  # rows of the (B N, D) view
    src = (x64 if x64 is not None else x32).reshape(b * n, dim)
    if dev.type == "cpu":  # fused in numba: no gathered copies, row a stays in cache
        dist = torch.from_numpy(_screen.pair_sqdist(
            src.numpy(), rows_a.numpy(), rows_b.numpy(),
            threads=_screen.thread_count(rows_a.numel() * dim)))
    else:
        dist = _pair_sqdist_torch(src, rows_a, rows_b)
    d2 = dist[inverse].view(b, n, k).amin(-1)
    # Completeness, as in ``_screen`` (proof there): the true nearest neighbour scores within
    # 2 E_i of the row's lowest score; with scores formed in float32 here, E_i carries 6 u
    # instead of 3 u. A row whose k kept scores all lie inside that margin may have more
    # candidates and is searched against every point of its set exactly.
    if k < n - 1:
        u = 2.0**-24
        norm = sq32.double().clamp_min(0).sqrt()  # (B, N)
        big = norm.amax(-1, keepdim=True)
        gamma = dim * u / (1.0 - dim * u) if dim * u < 0.5 else math.inf
        margin = 2.0 * (2.0 * gamma * norm * big + 6.0 * u * (norm + big) ** 2)
        low, high = best_v.double().amin(-1), best_v.double().amax(-1)
        for s, i in (high <= low + margin).nonzero().tolist():
            d2[s, i] = _row_against_all(src.view(b, n, dim)[s], i)
    return d2


def _row_against_all(x, i):
    """Exact squared distance from x[i] to its nearest other row of x (N, D), float64."""
    best = math.inf
    for _, rows in _chunks(1, x.shape[0], x.shape[1] * 8):
        diff = x[rows].to(torch.float64) - x[i].to(torch.float64)
        dist = torch.linalg.vector_norm(diff, dim=-1).square_()
        if rows.start <= i < rows.stop:
            dist[i - rows.start] = math.inf
        best = min(best, float(dist.min()))  # host sync: one per searched row (rare)
    return best


def _pair_sqdist_torch(x, rows_a, rows_b):
    """||x_a - x_b||^2 by explicit float64 differences for row pairs of x (M, D), any device."""
    dist = torch.empty(rows_a.numel(), dtype=torch.float64, device=x.device)
    for _, p in _chunks(1, rows_a.numel(), x.shape[1] * 8 * 2):
        diff = x.index_select(0, rows_a[p]).to(torch.float64)
        diff.sub_(x.index_select(0, rows_b[p]))
        dist[p] = torch.linalg.vector_norm(diff, dim=-1).square_()
    return dist
