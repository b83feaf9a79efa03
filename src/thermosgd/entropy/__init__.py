"""Nearest-neighbour entropy of weight samples in R^D and on the sphere (eq. 25-28, 100-101).

Kozachenko-Leonenko with the nearest neighbour (k = 1, eq. 25):

    S(x) = D/N sum_i log zeta_i + C(N, D),
    C(N, D) = log(N - 1) - log Gamma(D/2 + 1) + (D/2) log pi + gamma_Euler    (eq. 101),

zeta_i the distance from x_i to its nearest neighbour. On the unit sphere S^(d-1) the sample is
written in spherical angles theta = (theta_1..theta_(d-2), phi), the angles' entropy in R^(d-1) is
estimated with eq. 25 and the mean log-Jacobian is added (eq. 26-27, appendix D.5):

    S_sphere(w) = S_(R^(d-1))(theta) + E[log J(theta)],  log J = sum_j (d-1-j) log sin theta_j.

The total entropy adds the stretching to the mean radius, S = S_sphere + (d-1) log E||w|| (eq. 28).

Private kernels sit under the public functions, all exact (the nearest neighbour found is the
float64 brute-force one). On the CPU: D <= 3 (the d = 3 isotropic simulator: 289 sets of 1000
points, thousands of times per run) uses a float64 sort-and-sweep search in numba, parallel over
the batch (``_lowdim``); flat samples with D <= 12 use scipy's k-d tree; above, the sphere chart
is one fused numba pass (``_cpuchart``) and the search is a float32 Gram screen (BLAS sgemm) with
a proven error bound followed by exact float64 distances of the candidates it leaves
(``_screen``), both on a thread pool of torch's thread count. CUDA tensors and inputs too large to
keep in float64 run in torch, memory-bounded (``_chart``, ``_gram``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import special

from thermosgd.entropy._chart import (
    _check,
    _identity_chart,
    _scan_rows,
    _sphere_torch,
    _store_chart,
)
from thermosgd.entropy._gram import _nn_sqdist_gram, _torch_threads_kept
from thermosgd.entropy._lowdim import _nn_sqdist_sweep, _sphere_sweep

__all__ = ["knn_entropy", "sphere_entropy", "to_spherical", "total_entropy"]

_EULER_GAMMA = 0.5772156649015329
_LOW_DIM = 3  # D <= this (on the CPU): exact sort-and-sweep kernel in numba
_TREE_DIM = 12  # D <= this (CPU): scipy's k-d tree; above, the float32 Gram screen (crossover)
_FLOOR = 1e-10  # default distance floor, relative to the sample's RMS distance to its mean
_MAX_MEMORY = 4 * 2**30  # default bound on the stored chart (float64 + float32 copies)
_SWEEP_ERRORS = {1: "contains non-finite values", 2: "contains zero vectors (no direction)",
                 3: "has all points identical (the entropy of a point mass is -inf)"}




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
    elif _on_cpu(data) and dim <= _TREE_DIM:
        x64 = _numpy64(data)
        norms = np.linalg.norm(x64, axis=-1)
        _check(norms, (x64 == x64[:, :1]).all(axis=(1, 2)), "x", nonzero=False)
        d2 = _nn_sqdist_tree(x64)
        rms2 = _rms2_numpy(x64)
    else:
        with torch.no_grad():
            t = _tensor(data)
            norms, _ = _scan_rows(t, "x", nonzero=False)
            store64, store32, ss, _ = _store_chart(t, _identity_chart, dim, max_memory=_MAX_MEMORY)
            if _on_cpu(data):
                d2 = _screen_store(store32, store64)
            else:
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


def _on_cpu(x):
    return not isinstance(x, torch.Tensor) or x.device.type == "cpu"


def _sweep_eligible(x, dim):
    return dim <= _LOW_DIM and _on_cpu(x)


def _nn_sqdist_tree(x64):
    """Exact squared nearest-neighbour distances (B, N) of x64 (B, N, D) from a k-d tree
    (scipy's cKDTree: float64 sums of squared coordinate differences, as brute force), queried
    on torch's thread budget."""
    from scipy.spatial import cKDTree

    from thermosgd.entropy._screen import thread_count

    workers = thread_count(64 * x64[0].size)  # a query costs far more per number than a pass
    out = np.empty(x64.shape[:2])
    for s, pts in enumerate(x64):
        # k = 2: the point itself (distance 0) and its nearest other point (0 for a duplicate)
        out[s] = cKDTree(pts).query(pts, k=2, workers=workers)[0][:, 1] ** 2
    return out


def _screen_store(store32, store64):
    """The CPU's proven float32 screen and exact pass over a centred store (torch tensors)."""
    from thermosgd.entropy import _screen

    x32 = store32.numpy()
    sq = np.empty(x32.shape[:2])
    with _torch_threads_kept():
        _screen.row_sq(x32, sq)
        return _screen.nn_sqdist(x32, sq, None if store64 is None else store64.numpy(),
                                 threads=_screen.thread_count(x32[0].size))


def _numpy64(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.ascontiguousarray(x, dtype=np.float64)


def _tensor(x):
    return x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


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
