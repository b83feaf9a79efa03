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

import contextlib
import math
import warnings

import numpy as np
import torch
import numba
from numba import njit, prange
from scipy import special

from thermosgd._sweep import _atan2, _nn_sqdist_sweep, _sphere_sweep  # noqa: F401

__all__ = ["knn_entropy", "sphere_entropy", "to_spherical", "total_entropy"]

_EULER_GAMMA = 0.5772156649015329
_LOW_DIM = 3  # D <= this (on the CPU): exact sort-and-sweep kernel in numba
_CANDIDATES = 8  # k: candidates per point kept by the float32 screen for the exact float64 pass
_FLOOR = 1e-10  # default distance floor, relative to the sample's RMS distance to its mean
_CHUNK_BYTES = 2**24  # bytes of one row-chunk temporary (< 32 MiB: malloc reuses, no mmap)
_GRAM_BYTES = 2**26  # bytes of one float32 Gram block (B, blk, blk)
_MAX_MEMORY = 4 * 2**30  # default bound on the stored chart (float64 + float32 copies)
_SWEEP_ERRORS = {1: "contains non-finite values", 2: "contains zero vectors (no direction)",
                 3: "has all points identical (the entropy of a point mass is -inf)"}


# --- public API ---------------------------------------------------------------------------------


def knn_entropy(x, *, min_distance=None):
    """Kozachenko-Leonenko entropy of a sample in R^D with k = 1 (eq. 25, constant eq. 101).

    ``x``: (N, D) -> float, or a batch of sets (B, N, D) -> ndarray (B,); NumPy or torch (any
    device; the search runs on the tensor's device). Nearest-neighbour distances below
    ``min_distance`` (default 1e-10 times the set's RMS distance to its mean) are raised to it
    with a ``UserWarning``: a coincident pair would otherwise give log 0 = -inf. For D > 3 the
    centered sample is stored within 4 GiB (float64 and a float32 copy, or float32 only).
    """
    data, batched = _as_batch(x, "x", min_width=1)
    dim = data.shape[2]
    if _sweep_eligible(data, dim):
        x64 = _numpy64(data)
        norms = np.linalg.norm(x64, axis=-1)
        _check(norms, (x64 == x64[:, :1]).all(axis=(1, 2)), "x", nonzero=False)
        with _torch_threads_kept():
            d2 = _nn_sqdist_sweep(x64)
        rms2 = _rms2_numpy(x64)
    else:
        with torch.no_grad():
            t = _tensor(data)
            norms, _ = _scan_rows(t, "x", nonzero=False)
            store64, store32, ss, _ = _store_chart(t, _identity_chart, dim, max_memory=_MAX_MEMORY)
            d2 = _nn_sqdist_gram(store32, ss.float(), store64).cpu().numpy()  # host: result
            rms2 = ss.mean(-1).cpu().numpy()
    scale2 = (norms**2).mean(-1)
    h = _kl_from_sqdist(d2, dim, rms2, scale2, "x", min_distance, stacklevel=3)
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
        _check(r.cpu().numpy(), False, "w", nonzero=True)  # host copy: validation
        x = x / r
        s = torch.flip(torch.cumsum(torch.flip(x * x, [-1]), -1), [-1])
        theta = torch.atan2(torch.sqrt(s[..., 1:-1]), x[..., :-2])
        phi = torch.atan2(x[..., -1:], x[..., -2:-1])
        return torch.cat([theta, phi], dim=-1)
    r = np.linalg.norm(x, axis=-1, keepdims=True)
    _check(r, False, "w", nonzero=True)
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
    from the poles and the phi cut. ``align=False`` reproduces the paper's raw chart, whose scale
    factors sin th_1..sin th_j differ across coordinates (near a pole, or in high d); nearest
    neighbours are then found in a distorted metric and the estimate is biased upwards (VMF at
    d = 10, kappa = 1000, mean at the pole: +1.9 nats raw vs -0.03 aligned, N = 2000).

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
    total = h + (d - 1) * np.log(mean_norm)
    return float(total) if np.ndim(total) == 0 else total


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


# --- validation and conversion ------------------------------------------------------------------


def _as_batch(x, name, *, min_width):
    """(N, D) or (B, N, D), NumPy-like or torch -> ((B, N, D) array or tensor, batched)."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if x.dtype not in (np.float16, np.float32, np.float64):
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
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.ascontiguousarray(x, dtype=np.float64)


def _tensor(x):
    return x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _check(norms, same, name, *, nonzero):
    """Raise ValueError for non-finite rows, zero rows (if ``nonzero``) or all-identical sets."""
    if not np.all(np.isfinite(norms)):
        raise ValueError(f"{name} contains non-finite values (NaN/inf, or norms overflowing float64)")
    if nonzero and np.any(norms == 0):
        raise ValueError(f"{name} contains zero vectors: their direction on the sphere is undefined")
    if np.any(same):
        raise ValueError(f"all points of {name} are identical (set {np.flatnonzero(same)[:5].tolist()})"
                         ": the entropy of a point mass is -inf")


def _rms2_numpy(x):
    """Mean squared distance to the set mean, (B, N, D) -> (B,)."""
    return ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean(-1)


def _kl_from_sqdist(d2, dim, rms2, scale2, name, min_distance, *, stacklevel):
    """Eq. 25 from squared nearest-neighbour distances d2 (B, N) in R^dim; floors tiny ones.

    rms2 (B,): mean squared distance to the set mean; scale2 (B,): the squared magnitude of the
    coordinates. A spread below float64 resolution of that magnitude is a point mass.
    """
    n = d2.shape[1]
    collapsed = rms2 <= (64 * np.finfo(float).eps) ** 2 * scale2
    if np.any(collapsed):
        raise ValueError(f"all points of {name} coincide to float64 resolution (set "
                         f"{np.flatnonzero(collapsed)[:5].tolist()}): the entropy of a point "
                         "mass is -inf")
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
    """v with H = I - 2 v v^T / (v^T v) mapping unit mean_dir (B, d) to e_(d-1); coef = 2 / v^T v.

    A mean already at e_(d-1) gives coef 0 (identity). A zero mean (a perfectly balanced sample)
    gives some reflection, which is as good as any: the entropy is invariant under all of them.
    """
    v = mean_dir.copy()
    v[:, d - 2] -= 1.0
    vv = (v * v).sum(-1)
    coef = np.where(vv > 0, 2.0 / np.where(vv > 0, vv, 1.0), 0.0)
    return v, coef


def _sphere(w, align, min_distance, max_memory, *, stacklevel):
    """(entropies (B,) or float, mean norms (B,) or float, d) for the public sphere functions."""
    data, batched = _as_batch(w, "w", min_width=2)
    d = data.shape[2]
    dim = d - 1
    if _sweep_eligible(data, dim):
        with _torch_threads_kept():
            d2, logj, rms2, mean_norm, status = _sphere_sweep(_numpy64(data), bool(align))
        for code, message in _SWEEP_ERRORS.items():
            if np.any(status == code):
                raise ValueError(f"w {message} (set {np.flatnonzero(status == code)[:5].tolist()})")
    else:
        with torch.no_grad():
            d2, rms2, logj, norms = _sphere_torch(_tensor(data), align, max_memory)
        mean_norm = norms.mean(-1)
    if not np.all(np.isfinite(logj)):
        raise ValueError("a point lies on a singularity of the spherical chart (x_(d-1) = x_d = 0); "
                         "use align=True")
    # angles are O(1): a spread at float64 rounding level means all directions coincide
    h = _kl_from_sqdist(d2, dim, rms2, np.ones_like(rms2), "w", min_distance,
                        stacklevel=stacklevel) + logj
    if batched:
        return h, mean_norm, d
    return float(h[0]), float(mean_norm[0]), d


def _sphere_torch(w, align, max_memory):
    """High-dimensional sphere path: chunked angle chart, Gram screening, exact distances.

    The chart is built in reversed coordinates y = (x_d, ..., x_1): the reverse cumulative sums
    S_j become plain cumulative sums of y^2, so no chunk is flipped twice. The stored columns
    are then a permutation of theta - theta_ref with the theta part mirrored; neither changes a
    distance.
    """
    b, d = w.shape[0], w.shape[2]
    norms, unit_sum = _scan_rows(w, "w", nonzero=True)
    m = unit_sum / np.maximum(np.linalg.norm(unit_sum, axis=-1, keepdims=True), 1e-300)  # (B, d)
    dev = w.device
    u, ref = None, None
    if align:
        # H y = y - u (u^T y), u = v sqrt(2 / v^T v): rows need no normalization (H is linear;
        # the angles and log J below are scale-invariant).
        v, coef = _householder(m, d)
        u = torch.from_numpy(np.ascontiguousarray(v[:, ::-1] * np.sqrt(coef)[:, None])).to(dev)

    def chart(y, sets, out):
        """Reversed rows y (bs, rs, d) float64 -> angle chart into out (bs, rs, d-1); log J."""
        if u is not None:
            y = torch.baddbmm(y, torch.bmm(y, u[sets, :, None]), u[sets, None, :], alpha=-1.0)
        c = (y * y).cumsum_(-1)  # c[k] = S_(d-k) in x's indexing, (bs, rs, d)
        logj = 0.5 * c[..., 1:-1].log().sum(-1) - 0.5 * (d - 2) * c[..., -1].log()
        # pi/2 - theta_j = atan2(x_j, sqrt(S_(j+1))): the deviation from the aligned reference
        # (pi/2) is computed directly, with no cancellation against pi/2, so tiny angle
        # differences keep their digits.
        torch.atan2(y[..., 2:], c[..., 1:-1].sqrt_(), out=out[..., :-1])
        torch.atan2(y[..., 0], y[..., 1], out=out[..., -1])  # phi
        if ref is not None:
            out.sub_(ref[sets])
        return logj

    if not align:  # reference: the mean direction's own chart coordinates
        ref = torch.empty((b, 1, d - 1), dtype=torch.float64, device=dev)
        chart(torch.from_numpy(np.ascontiguousarray(m[:, None, ::-1])).to(dev), slice(None), ref)
    store64, store32, ss, logj = _store_chart(w, chart, d - 1, max_memory=max_memory,
                                              reverse=True)
    d2 = _nn_sqdist_gram(store32, ss.float(), store64)
    # host copies: the (B, N) distances and (B,) sums are the results
    return d2.cpu().numpy(), ss.mean(-1).cpu().numpy(), logj.mean(-1).cpu().numpy(), norms


# --- high-dimensional kernel (torch) --------------------------------------------------------------


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


def _scan_rows(w, name, *, nonzero):
    """One chunked pass over w (B, N, d): validation, row norms (B, N) and the unit-row sums (B, d).

    Returned on the host (NumPy). Identical rows have identical norms, so only sets whose norms
    all agree are compared element by element for the all-identical check.
    """
    b, n, d = w.shape
    norms = torch.empty((b, n), dtype=torch.float64, device=w.device)
    unit = torch.zeros((b, d), dtype=torch.float64, device=w.device) if nonzero else None
    for sets, rows in _chunks(b, n, d * 8):
        x = w[sets, rows].to(torch.float64)
        r = torch.linalg.vector_norm(x, dim=-1)  # (bs, rs)
        norms[sets, rows] = r
        if nonzero:
            unit[sets] += torch.bmm((1.0 / r)[:, None, :], x)[:, 0]
    norms = norms.cpu().numpy()  # host copy: validation, one sync
    same = (norms == norms[:, :1]).all(-1)
    for s in np.flatnonzero(same):
        same[s] = all(bool((w[s, rows] == w[s, :1]).all()) for _, rows in _chunks(1, n, d * 8))
    _check(norms, same, name, nonzero=nonzero)
    return norms, (unit.cpu().numpy() if nonzero else None)


def _identity_chart(x, sets, out):
    out.copy_(x)


def _store_chart(w, chart, dim, *, max_memory, reverse=False):
    """Chart w (B, N, d) chunk by chunk into centered storage of width ``dim``.

    ``chart(x, sets, out)`` writes the float64 chart of rows x (bs, rs, d) (coordinates reversed
    if ``reverse``) into out (bs, rs, dim) and returns a per-row extra (log J) or None. Returns
    (store64 or None, store32, squared distances to the mean (B, N) float64, extras (B, N)).
    float64 is kept (with a float32 copy for the screen) when B N dim 12 bytes fit in
    ``max_memory``, else float32 only. Centering in float64 first gives the float32 copy a relative
    precision on the sample's spread, not on its offset.
    """
    b, n, d = w.shape
    if b * n * dim * 4 > max_memory:
        raise ValueError(f"the float32 chart needs {b * n * dim * 4 / 2**30:.2f} GiB, above "
                         f"max_memory = {max_memory / 2**30:.2f} GiB; raise max_memory")
    f64 = {"dtype": torch.float64, "device": w.device}
    keep64 = b * n * dim * 12 <= max_memory
    store32 = torch.empty((b, n, dim), dtype=torch.float32, device=w.device)
    store64 = torch.empty((b, n, dim), **f64) if keep64 else None
    colsum = torch.zeros((b, dim), **f64)
    extra = torch.zeros((b, n), **f64)
    for sets, rows in _chunks(b, n, max(d, dim) * 8):
        x = w[sets, rows]
        x = (x.flip(-1) if reverse else x).to(torch.float64)
        out = store64[sets, rows] if keep64 else torch.empty(x.shape[:-1] + (dim,), **f64)
        aux = chart(x, sets, out)
        if aux is not None:
            extra[sets, rows] = aux
        colsum[sets] += out.sum(1)
        if not keep64:
            store32[sets, rows] = out
    mean = colsum / n
    ss = torch.empty((b, n), **f64)
    for sets, rows in _chunks(b, n, dim * 8):
        c = store64[sets, rows] if keep64 else store32[sets, rows].to(torch.float64)
        c.sub_(mean[sets, None, :])  # in place: store64 is centered too
        store32[sets, rows] = c
        ss[sets, rows] = torch.linalg.vector_norm(c, dim=-1).square_()
    return store64, store32, ss, extra


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
        with _torch_threads_kept():
            dist = torch.from_numpy(_pair_sqdist(src.numpy(), rows_a.numpy(), rows_b.numpy()))
    else:
        dist = _pair_sqdist_torch(src, rows_a, rows_b)
    return dist[inverse].view(b, n, k).amin(-1)


def _pair_sqdist_torch(x, rows_a, rows_b):
    """||x_a - x_b||^2 by explicit float64 differences for row pairs of x (M, D), any device."""
    dist = torch.empty(rows_a.numel(), dtype=torch.float64, device=x.device)
    for _, p in _chunks(1, rows_a.numel(), x.shape[1] * 8 * 2):
        diff = x.index_select(0, rows_a[p]).to(torch.float64)
        diff.sub_(x.index_select(0, rows_b[p]))
        dist[p] = torch.linalg.vector_norm(diff, dim=-1).square_()
    return dist


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _pair_sqdist(x, rows_a, rows_b):  # pragma: no cover - compiled
    """||x_a - x_b||^2 by explicit float64 differences for row pairs of x (M, D) (float32/64).

    Reassociation only lets the sum vectorize (several partial sums); every term is exact.
    """
    out = np.empty(rows_a.size)
    for p in prange(rows_a.size):
        i, j = rows_a[p], rows_b[p]
        s = 0.0
        for t in range(x.shape[1]):
            diff = np.float64(x[i, t]) - np.float64(x[j, t])
            s += diff * diff
        out[p] = s
    return out
