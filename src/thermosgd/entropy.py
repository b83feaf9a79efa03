"""Nearest-neighbour entropy of weight samples in R^D and on the sphere (eq. 25-28, 100-101).

Kozachenko-Leonenko with the nearest neighbour (k = 1, eq. 25):

    S(x) = D/N sum_i log zeta_i + C(N, D),
    C(N, D) = log(N - 1) - log Gamma(D/2 + 1) + (D/2) log pi + gamma_Euler    (eq. 101),

zeta_i the distance from x_i to its nearest neighbour. On the unit sphere S^(d-1) the sample is
written in spherical angles theta = (theta_1..theta_(d-2), phi), the angles' entropy in R^(d-1) is
estimated with eq. 25 and the mean log-Jacobian is added (eq. 26-27, appendix D.5):

    S_sphere(w) = S_(R^(d-1))(theta) + E[log J(theta)],  log J = sum_j (d-1-j) log sin theta_j.

The total entropy adds the stretching to the mean radius, S = S_sphere + (d-1) log E||w|| (eq. 28).

Two private kernels sit under the public functions. Low dimension on the CPU (D <= 3, the d = 3
isotropic simulator: 289 sets of 1000 points, thousands of times per run) uses an exact float64
sort-and-sweep search in numba, parallel over the batch. Everything else (D up to ~10^5, N up to
~10^4, CUDA tensors) runs in torch, memory-bounded: float32 Gram screening of the centered data
keeps 8 candidates per point and exact float64 differences pick the nearest one among them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from numba import njit, prange
from scipy import special

__all__ = ["knn_entropy", "to_spherical", "sphere_entropy", "total_entropy"]

_EULER_GAMMA = 0.5772156649015329
_LOW_DIM = 3  # D <= this (on the CPU): exact sort-and-sweep kernel in numba
_CANDIDATES = 8  # k: candidates per point kept by the float32 screen for the exact float64 pass
_FLOOR = 1e-10  # default distance floor, relative to the sample's RMS distance to its mean
_CHUNK_BYTES = 2**25  # bytes of one float64 row-chunk temporary (a few of them live at once)
_GRAM_BYTES = 2**26  # bytes of one float32 Gram block (B, blk, blk)
_MAX_MEMORY = 4 * 2**30  # default bound on the stored chart (float64 + float32 copies)


# --- public API ---------------------------------------------------------------------------------


def knn_entropy(x, *, min_distance=None):
    """Kozachenko-Leonenko entropy of a sample in R^D with k = 1 (eq. 25, constant eq. 101).

    ``x``: (N, D) -> float, or a batch of sets (B, N, D) -> ndarray (B,); NumPy or torch (any
    device; the search runs on the tensor's device). Nearest-neighbour distances below
    ``min_distance`` (default 1e-10 times the set's RMS distance to its mean) are raised to it
    with a ``UserWarning``: a coincident pair would otherwise give log 0 = -inf.
    """
    data, batched = _as_batch(x, "x", min_width=1)
    dim = data.shape[2]
    if _sweep_eligible(data, dim):
        x64 = _numpy64(data)
        _check_numpy(x64, "x", nonzero=False)
        d2 = _nn_sqdist_sweep(x64)
        rms2 = _rms2_numpy(x64)
    else:
        with torch.no_grad():
            t = _tensor(data)
            norms, _, same = _scan_rows(t, unit_sum=False)
            _check_scan(norms, same, "x", nonzero=False)
            store64, store32, sq, rms2 = _store_chart(t, lambda c, sets: (c, None), dim,
                                                      max_memory=_MAX_MEMORY)[:4]
            d2 = _nn_sqdist_gram(store32, sq, store64).cpu().numpy()  # host copy: the result
            rms2 = rms2.cpu().numpy()
    h = _kl_from_sqdist(d2, dim, rms2, min_distance, stacklevel=3)
    return h if batched else float(h[0])


def to_spherical(w):
    """Spherical angles of the rows of ``w`` (..., d) -> (..., d-1), same array type, float64.

    Rows are unit-normalized (any nonzero vector), then
    x_1 = cos th_1, x_2 = sin th_1 cos th_2, ..., x_(d-1) = sin th_1..sin th_(d-2) cos phi,
    x_d = sin th_1..sin th_(d-2) sin phi, with th_j in [0, pi] and phi in (-pi, pi]. Computed as
    th_j = atan2(sqrt(S_(j+1)), x_j), S_j = sum_(i>=j) x_i^2 (a reverse cumulative sum), and
    phi = atan2(x_d, x_(d-1)): no arccos, so angles near 0 and pi keep full precision.
    """
    is_torch = isinstance(w, torch.Tensor)
    x = w.detach().to(torch.float64) if is_torch else np.asarray(w, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ValueError(f"to_spherical needs rows of dimension d >= 2, got shape {tuple(x.shape)}")
    if is_torch:
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        _check_rows_values(r.cpu().numpy(), "w")  # host copy: validation
        x = x / r
        s = torch.flip(torch.cumsum(torch.flip(x * x, [-1]), -1), [-1])
        theta = torch.atan2(torch.sqrt(s[..., 1:-1]), x[..., :-2])
        phi = torch.atan2(x[..., -1:], x[..., -2:-1])
        return torch.cat([theta, phi], dim=-1)
    r = np.linalg.norm(x, axis=-1, keepdims=True)
    _check_rows_values(r, "w")
    x = x / r
    s = np.cumsum((x * x)[..., ::-1], axis=-1)[..., ::-1]
    theta = np.arctan2(np.sqrt(s[..., 1:-1]), x[..., :-2])
    phi = np.arctan2(x[..., -1:], x[..., -2:-1])
    return np.concatenate([theta, phi], axis=-1)


def sphere_entropy(w, *, align=True, min_distance=None, max_memory=_MAX_MEMORY):
    """Entropy on the unit sphere of the directions of ``w`` (eq. 26-27, appendix D.5).

    S_sphere = S_(R^(d-1))(theta) + mean_i log J(theta_i), log J = sum_j (d-1-j) log sin theta_j;
    the first term is :func:`knn_entropy` of the angles. ``w``: (N, d) -> float, (B, N, d) ->
    ndarray (B,); rows need not be unit (only directions enter). NumPy or torch on any device.

    ``align=True`` first applies the Householder reflection that maps the sample's mean direction
    to e_(d-1), the point with all theta_j = pi/2 and phi = 0. The entropy on the sphere is
    invariant under orthogonal maps, and there the chart's metric dth_1^2 + sin^2 th_1 dth_2^2 + ...
    is the identity, so a concentrated sample (SGD weights) is measured in a nearly flat chart, far
    from the poles and the phi cut. ``align=False`` reproduces the paper's raw chart.

    ``min_distance`` floors nearest-neighbour distances in the angle chart (default 1e-10 times
    the RMS distance to the mean), with a warning. ``max_memory`` (bytes) bounds the stored angles
    of the high-dimensional path: float64 plus a float32 copy when N (d-1) 12 fits, else float32.
    """
    return _sphere(w, align, min_distance, max_memory, stacklevel=4)[0]


def total_entropy(w, *, align=True, min_distance=None, max_memory=_MAX_MEMORY):
    """Total entropy S = S_sphere(w / ||w||) + (d-1) log mean ||w|| (eq. 28).

    Same input and options as :func:`sphere_entropy`.
    """
    h, mean_norm, d = _sphere(w, align, min_distance, max_memory, stacklevel=4)
    return h + (d - 1) * np.log(mean_norm)


# --- validation and conversion ------------------------------------------------------------------


def _as_batch(x, name, *, min_width):
    """(N, D) or (B, N, D), NumPy-like or torch -> ((B, N, D) array or tensor, batched)."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
    elif not x.is_floating_point():
        x = x.to(torch.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    batched = x.ndim == 3
    x = x if batched else x[None]
    if x.shape[1] < 2:
        raise ValueError(f"{name} needs at least N = 2 points per set, got N = {x.shape[1]}")
    if x.shape[2] < min_width:
        what = "d >= 2 (vectors on S^(d-1))" if min_width == 2 else "D >= 1"
        raise ValueError(f"{name} needs dimension {what}, got {x.shape[2]}")
    return x, batched


def _sweep_eligible(x, dim):
    on_cpu = not isinstance(x, torch.Tensor) or x.device.type == "cpu"
    return dim <= _LOW_DIM and on_cpu


def _numpy64(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float64)


def _tensor(x):
    return x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _check_rows_values(norms, name):
    if not np.all(np.isfinite(norms)):
        raise ValueError(f"{name} contains non-finite values (NaN/inf, or norms overflowing float64)")
    if np.any(norms == 0):
        raise ValueError(f"{name} contains zero vectors: their direction on the sphere is undefined")


def _check_identical(same, name):
    if np.any(same):
        sets = np.flatnonzero(same)
        raise ValueError(f"all points of {name} are identical (set {sets.tolist()[:5]}): the "
                         "nearest-neighbour entropy is -inf for a point mass")


def _check_numpy(x, name, *, nonzero):
    norms = np.linalg.norm(x, axis=-1)
    if nonzero:
        _check_rows_values(norms, name)
    elif not np.all(np.isfinite(norms)):
        raise ValueError(f"{name} contains non-finite values (NaN/inf, or norms overflowing float64)")
    _check_identical((x == x[:, :1]).all(axis=(1, 2)), name)
    return norms


def _check_scan(norms, same, name, *, nonzero):
    norms, same = norms.cpu().numpy(), same.cpu().numpy()  # host copy: one validation sync
    if nonzero:
        _check_rows_values(norms, name)
    elif not np.all(np.isfinite(norms)):
        raise ValueError(f"{name} contains non-finite values (NaN/inf, or norms overflowing float64)")
    _check_identical(same, name)
    return norms


def _rms2_numpy(x):
    """Mean squared distance to the set mean, (B, N, D) -> (B,)."""
    return ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean(-1)


def _kl_from_sqdist(d2, dim, rms2, min_distance, *, stacklevel):
    """Eq. 25 from squared nearest-neighbour distances d2 (B, N) in R^dim; floors tiny ones."""
    n = d2.shape[1]
    if min_distance is None:
        floor2 = _FLOOR**2 * rms2
    else:
        if not (np.isfinite(min_distance) and min_distance > 0):
            raise ValueError(f"min_distance must be positive and finite, got {min_distance}")
        floor2 = np.full(d2.shape[0], float(min_distance) ** 2)
    low = d2 < floor2[:, None]
    if low.any():
        warnings.warn(
            f"{int(low.sum())} of {d2.size} points have a nearest neighbour closer than the distance "
            f"floor (min {np.sqrt(floor2.min()):.3g}; duplicates?): a zero distance gives "
            "log 0 = -inf, so these distances were raised to the floor (set min_distance to change)",
            UserWarning, stacklevel=stacklevel)
        d2 = np.maximum(d2, floor2[:, None])
    const = (math.log(n - 1) - special.gammaln(dim / 2 + 1) + dim / 2 * math.log(math.pi)
             + _EULER_GAMMA)
    return 0.5 * dim * np.log(d2).mean(axis=-1) + const  # D/N sum log zeta = D/2 mean log zeta^2


# --- sphere ---------------------------------------------------------------------------------------


def _mean_log_jacobian(w):
    """Mean over points of log J = sum_(j=1)^(d-2) (d-1-j) log sin theta_j (eq. 27), (..., N, d).

    No trigonometry: sin^2 theta_j = S_(j+1) / S_j with S_j = sum_(i>=j) x_i^2, and the weighted
    sum of 0.5 (log S_(j+1) - log S_j) telescopes to 0.5 sum_(k=2)^(d-1) log S_k
    - 0.5 (d-2) log S_1 (any row scale cancels). NumPy or torch.
    """
    d = w.shape[-1]
    if isinstance(w, torch.Tensor):
        x = w.to(torch.float64)
        s = torch.flip(torch.cumsum(torch.flip(x * x, [-1]), -1), [-1])
        logj = 0.5 * torch.log(s[..., 1:-1]).sum(-1) - 0.5 * (d - 2) * torch.log(s[..., 0])
        return logj.mean(-1)
    x = np.asarray(w, dtype=np.float64)
    s = np.cumsum((x * x)[..., ::-1], axis=-1)[..., ::-1]
    return (0.5 * np.log(s[..., 1:-1]).sum(-1) - 0.5 * (d - 2) * np.log(s[..., 0])).mean(-1)


def _householder(mean_dir, d):
    """v with H = I - 2 v v^T / (v^T v) mapping mean_dir (B, d) to e_(d-1); coef = 2 / v^T v.

    A zero mean (perfectly balanced sample) or one already at e_(d-1) gives coef 0 (no reflection).
    """
    v = mean_dir.copy()
    v[:, d - 2] -= 1.0
    vv = (v * v).sum(-1)
    coef = np.where(vv > 0, 2.0 / np.where(vv > 0, vv, 1.0), 0.0)
    return v, coef


def _sphere(w, align, min_distance, max_memory, *, stacklevel):
    """(entropies (B,) or float, mean norms (B,) or float, d) for the public sphere functions."""
    data, batched = _as_batch(w, "w", min_width=2)
    b, n, d = data.shape
    dim = d - 1
    if _sweep_eligible(data, dim):
        x = _numpy64(data)
        norms = _check_numpy(x, "w", nonzero=True)
        u = x / norms[..., None]  # (B, N, d)
        if align:
            m = u.mean(1)
            m /= np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), np.finfo(float).tiny)
            v, coef = _householder(m, d)
            u = u - (coef[:, None] * (u @ v[..., None])[..., 0])[..., None] * v[:, None, :]
        angles = to_spherical(u)  # (B, N, d-1)
        logj = _mean_log_jacobian(u)
        d2 = _nn_sqdist_sweep(np.ascontiguousarray(angles))
        rms2 = _rms2_numpy(angles)
    else:
        if b * n * dim * 4 > max_memory:
            raise ValueError(f"the float32 angle chart needs {b * n * dim * 4 / 2**30:.2f} GiB, "
                             f"above max_memory = {max_memory / 2**30:.2f} GiB; raise max_memory")
        with torch.no_grad():
            d2, rms2, logj, norms = _sphere_torch(_tensor(data), align, max_memory)
    h = _kl_from_sqdist(d2, dim, rms2, min_distance, stacklevel=stacklevel) + logj
    mean_norm = norms.mean(-1)
    if batched:
        return h, mean_norm, d
    return float(h[0]), float(mean_norm[0]), d


def _sphere_torch(w, align, max_memory):
    """High-dimensional sphere path: chunked angle chart, Gram screening, exact distances."""
    b, n, d = w.shape
    norms, unit_sum, same = _scan_rows(w, unit_sum=True)
    norms = _check_scan(norms, same, "w", nonzero=True)
    m = unit_sum.cpu().numpy()  # host copy: (B, d) mean directions, needed to build the chart
    m /= np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), np.finfo(float).tiny)
    dev = w.device
    if align:
        v, coef = _householder(m, d)
        v = torch.from_numpy(v).to(dev)
        coef = torch.from_numpy(coef).to(dev)
        ref_theta = torch.zeros((b, d - 2), dtype=torch.float64, device=dev)
        ref_phi = torch.zeros(b, dtype=torch.float64, device=dev)
    else:
        # Reference = the mean direction's angles, written as theta_j - pi/2 like the rows below.
        s = np.cumsum((m * m)[..., ::-1], axis=-1)[..., ::-1]
        ref_theta = torch.from_numpy(-np.arctan2(m[:, :-2], np.sqrt(s[:, 1:-1]))).to(dev)
        ref_phi = torch.from_numpy(np.arctan2(m[:, -1], m[:, -2])).to(dev)

    def chart(x, sets):
        """Rows (bs, rs, d) float64 -> angle deviations (bs, rs, d-1) and log J (bs, rs)."""
        if align:
            # H x = x - (2 / v^T v) (v^T x) v; rows need no normalization (H is linear and the
            # angles and log J below are scale-invariant).
            proj = torch.bmm(x, v[sets, :, None]) * coef[sets, None, None]  # (bs, rs, 1)
            x = torch.baddbmm(x, proj, v[sets, None, :], alpha=-1.0)
        s = torch.flip(torch.cumsum(torch.flip(x * x, [-1]), -1), [-1])  # S_j, (bs, rs, d)
        tail = s[..., 1:-1]  # S_(j+1) for j = 1..d-2
        out = torch.empty(x.shape[:-1] + (d - 1,), dtype=torch.float64, device=x.device)
        # theta_j - pi/2 = -atan2(x_j, sqrt(S_(j+1))): the deviation from the reference is computed
        # directly (no cancellation against pi/2), so tiny angle differences keep their digits.
        torch.atan2(x[..., :-2], torch.sqrt(tail), out=out[..., :-1])
        out[..., :-1].neg_().sub_(ref_theta[sets, None, :])
        torch.atan2(x[..., -1], x[..., -2], out=out[..., -1])
        out[..., -1].sub_(ref_phi[sets, None])
        logj = 0.5 * torch.log(tail).sum(-1) - 0.5 * (d - 2) * torch.log(s[..., 0])
        return out, logj

    store64, store32, sq, rms2, logj = _store_chart(w, chart, d - 1, max_memory=max_memory)
    logj = logj.mean(-1).cpu().numpy()  # host copy: (B,) result
    if not np.all(np.isfinite(logj)):
        raise ValueError("a point lies on a singularity of the spherical chart (x_(d-1) = x_d = 0); "
                         "use align=True")
    d2 = _nn_sqdist_gram(store32, sq, store64).cpu().numpy()  # host copy: the result
    return d2, rms2.cpu().numpy(), logj, norms


# --- high-dimensional kernel (torch) --------------------------------------------------------------


def _chunks(n_sets, n_rows, row_bytes, budget):
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


def _scan_rows(w, *, unit_sum):
    """One chunked pass over w (B, N, d): row norms, the sum of unit rows, all-identical flags."""
    b, n, d = w.shape
    f64 = dict(dtype=torch.float64, device=w.device)
    norms = torch.empty((b, n), **f64)
    total = torch.zeros((b, d), **f64) if unit_sum else None
    same = torch.ones(b, dtype=torch.bool, device=w.device)
    for sets, rows in _chunks(b, n, d * 8, _CHUNK_BYTES):
        x = w[sets, rows].to(torch.float64)
        r = torch.linalg.vector_norm(x, dim=-1)  # (bs, rs)
        norms[sets, rows] = r
        if unit_sum:
            total[sets] += torch.bmm((1.0 / r)[:, None, :], x)[:, 0]
        same[sets] &= (w[sets, rows] == w[sets, :1]).flatten(1).all(-1)
    return norms, total, same


def _store_chart(w, chart, dim, *, max_memory):
    """Chart w (B, N, d) chunk by chunk into centered storage of width ``dim``.

    Returns (store64 or None, store32, squared row norms (B, N) float32, mean squared distance to
    the mean (B,), per-point extra from the chart or None). float64 is kept (with a float32 copy
    for the screen) when B N dim 12 bytes fit in ``max_memory``, else float32 only: centering in
    float64 first keeps the float32 copy's relative precision on the sample's spread, not its
    offset.
    """
    b, n, d = w.shape
    dev = w.device
    keep64 = b * n * dim * 12 <= max_memory
    store32 = torch.empty((b, n, dim), dtype=torch.float32, device=dev)
    store64 = torch.empty((b, n, dim), dtype=torch.float64, device=dev) if keep64 else None
    colsum = torch.zeros((b, dim), dtype=torch.float64, device=dev)
    extra = None
    for sets, rows in _chunks(b, n, max(d, dim) * 8, _CHUNK_BYTES):
        dev_chunk, aux = chart(w[sets, rows].to(torch.float64), sets)
        if aux is not None:
            if extra is None:
                extra = torch.empty((b, n), dtype=torch.float64, device=dev)
            extra[sets, rows] = aux
        colsum[sets] += dev_chunk.sum(1)
        (store64 if keep64 else store32)[sets, rows] = dev_chunk
    mean = colsum / n
    sq = torch.empty((b, n), dtype=torch.float32, device=dev)
    ss = torch.empty((b, n), dtype=torch.float64, device=dev)
    for sets, rows in _chunks(b, n, dim * 8, _CHUNK_BYTES):
        c = store64[sets, rows] if keep64 else store32[sets, rows].to(torch.float64)
        c.sub_(mean[sets, None, :])  # in place: store64 is centered too
        store32[sets, rows] = c
        ss[sets, rows] = c.square().sum(-1)
        sq[sets, rows] = store32[sets, rows].square().sum(-1)
    return store64, store32, sq, ss.mean(-1), extra


def _merge_topk(best_v, best_i, rows, scores, col0, k):
    """Fold a block of screening scores (B, r, c) for ``rows`` into the running k smallest."""
    v, i = torch.topk(scores, min(k, scores.shape[-1]), dim=-1, largest=False)
    v = torch.cat([best_v[:, rows], v], dim=-1)
    i = torch.cat([best_i[:, rows], i + col0], dim=-1)
    v, j = torch.topk(v, k, dim=-1, largest=False)
    best_v[:, rows] = v
    best_i[:, rows] = torch.gather(i, -1, j)


def _nn_sqdist_gram(x32, sq32, x64=None, *, k=_CANDIDATES):
    """Squared nearest-neighbour distances (B, N) float64 of centered points x (B, N, D).

    Screen: score_ij = ||x_j||^2 - 2 x_i.x_j from float32 Gram blocks (the ordering of
    ||x_i - x_j||^2 along row i); the k lowest per row survive. Centering matters: float32 scores
    then carry errors of eps32 times the spread, not times the offset. Exact pass: ||x_i - x_j||^2
    by explicit float64 differences for the k candidates (from x64 if given, else from the float32
    values), min over them. Gram blocks are symmetric, so only blocks J >= I are multiplied.
    """
    b, n, dim = x32.shape
    k = min(k, n - 1)
    dev = x32.device
    best_v = torch.full((b, n, k), float("inf"), dtype=torch.float32, device=dev)
    best_i = torch.zeros((b, n, k), dtype=torch.long, device=dev)
    blk = max(64, min(n, int(math.isqrt(_GRAM_BYTES // (4 * b)))))
    blk = -(-n // -(-n // blk))  # equal blocks
    starts = list(range(0, n, blk))
    for i0 in starts:
        ri = slice(i0, min(i0 + blk, n))
        for j0 in starts[starts.index(i0):]:
            rj = slice(j0, min(j0 + blk, n))
            g = torch.bmm(x32[:, ri], x32[:, rj].transpose(1, 2))  # (B, bi, bj)
            scores = sq32[:, None, rj] - 2.0 * g
            if i0 == j0:
                scores.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # self is not a neighbour
            _merge_topk(best_v, best_i, ri, scores, j0, k)
            if i0 != j0:
                _merge_topk(best_v, best_i, rj, sq32[:, None, ri] - 2.0 * g.transpose(1, 2), i0, k)
    d2 = torch.empty((b, n), dtype=torch.float64, device=dev)
    src = x64 if x64 is not None else x32
    sets = torch.arange(b, device=dev)[:, None, None]
    for _, rows in _chunks(1, n, b * k * dim * 8 * 2, _CHUNK_BYTES):
        xj = src[sets, best_i[:, rows]].to(torch.float64)  # (B, r, k, D)
        xj.sub_(src[:, rows, None, :].to(torch.float64))
        d2[:, rows] = xj.square_().sum(-1).amin(-1)
    return d2


# --- low-dimensional kernel (numba) ---------------------------------------------------------------


@njit(parallel=True, cache=True)
def _nn_sqdist_sweep(x):  # pragma: no cover - compiled
    """Exact squared nearest-neighbour distances (B, N) of x (B, N, D) float64, small D.

    Per set: sort along the axis of largest spread, then sweep outwards from each point in both
    directions, stopping once the axis gap alone exceeds the best distance found.
    """
    nb, n, dim = x.shape
    out = np.empty((nb, n))
    for b in prange(nb):
        pts = x[b]
        axis, spread = 0, -1.0
        for a in range(dim):
            lo, hi = pts[0, a], pts[0, a]
            for i in range(n):
                lo, hi = min(lo, pts[i, a]), max(hi, pts[i, a])
            if hi - lo > spread:
                axis, spread = a, hi - lo
        order = np.argsort(pts[:, axis])
        srt = np.empty((n, dim))
        for i in range(n):
            srt[i] = pts[order[i]]
        key = srt[:, axis].copy()
        for i in range(n):
            best = np.inf
            for step in (1, -1):
                j = i + step
                while 0 <= j < n:
                    gap = key[j] - key[i]
                    if gap * gap >= best:
                        break
                    d2 = 0.0
                    for a in range(dim):
                        t = srt[j, a] - srt[i, a]
                        d2 += t * t
                    best = min(best, d2)
                    j += step
            out[b, order[i]] = best
    return out
