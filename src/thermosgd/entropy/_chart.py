"""The spherical chart of high-dimensional samples, built chunk by chunk into centered storage.

Angles theta_1..theta_(d-2), phi of every row (eq. 26-27), optionally after the Householder
reflection that takes the sample's mean direction to the chart's flattest point, with the
log-Jacobian of each row; stored centered in float64 (and a float32 copy for the Gram screen).
"""

from __future__ import annotations

import numpy as np
import torch

from thermosgd.entropy._gram import _chunks, _nn_sqdist_gram, _torch_threads_kept


def _check(norms, same, name, *, nonzero):
    """Raise ValueError for non-finite rows, zero rows (if ``nonzero``) or all-identical sets."""
    if not np.all(np.isfinite(norms)):
        raise ValueError(f"{name} contains non-finite values (NaN/inf, or norms overflowing float64)")
    if nonzero and np.any(norms == 0):
        raise ValueError(f"{name} contains zero vectors: their direction on the sphere is undefined")
    if np.any(same):
        raise ValueError(f"all points of {name} are identical (set {np.flatnonzero(same)[:5].tolist()})"
                         ": the entropy of a point mass is -inf")


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


def _sphere_torch(w, align, max_memory, *, fused=None):
    """High-dimensional sphere path: chunked angle chart, Gram screening, exact distances.

    The chart is built in reversed coordinates y = (x_d, ..., x_1): the reverse cumulative sums
    S_j become plain cumulative sums of y^2, so no chunk is flipped twice. The stored columns
    are then a permutation of theta - theta_ref with the theta part mirrored; neither changes a
    distance.
    """
    b, n, d = w.shape
    if fused is None:  # the numba passes on the CPU whenever the float64 chart fits
        fused = w.device.type == "cpu" and b * n * (d - 1) * 12 <= max_memory
    x = _host_input(w) if fused else None
    norms, unit_sum = _scan_cpu(x, "w") if fused else _scan_rows(w, "w", nonzero=True)
    m = unit_sum / np.maximum(np.linalg.norm(unit_sum, axis=-1, keepdims=True), 1e-300)  # (B, d)
    dev = w.device
    u, ref = None, None
    u_host = np.zeros((b, d))
    if align:
        # H y = y - u (u^T y), u = v sqrt(2 / v^T v): rows need no normalization (H is linear;
        # the angles and log J below are scale-invariant).
        v, coef = _householder(m, d)
        u_host = np.ascontiguousarray(v[:, ::-1] * np.sqrt(coef)[:, None])
        u = torch.from_numpy(u_host).to(dev)
    if fused:
        return _sphere_cpu(x, align, m, u_host, norms)

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


def _host_input(w):
    """w (B, N, d) torch on the CPU -> C-ordered NumPy float32 or float64 (float16 and bfloat16
    are exact in float32)."""
    if w.dtype not in (torch.float32, torch.float64):
        w = w.to(torch.float32)
    return np.ascontiguousarray(w.numpy())


def _scan_cpu(x, name):
    """:func:`_scan_rows` for host arrays in one numba pass: row norms (B, N), unit-row sums."""
    from thermosgd.entropy import _cpuchart, _screen
    from thermosgd.entropy._screen import pool_map, row_ranges

    b, n, d = x.shape
    threads = _screen.thread_count(n * d)
    norms, unit, same = np.empty((b, n)), np.zeros((b, d)), np.zeros(b, np.bool_)
    for s in range(b):
        tasks = [(x, s, i0, i1, norms, np.zeros(d)) for i0, i1 in row_ranges(n, 4 * threads)]
        differs = pool_map(_cpuchart.scan_rows, tasks, threads)
        unit[s] = sum(task[-1] for task in tasks)
        same[s] = not any(differs)
    _check(norms, same, name, nonzero=True)
    return norms, unit


def _sphere_cpu(x, align, m, u, norms):
    """:func:`_sphere_torch` on the CPU: the chart as one fused numba pass (``_cpuchart``) into
    uncentred float64 and float32 stores, then the proven float32 screen and the exact float64
    pass (``_screen``). Row ranges run on a pool of torch's thread count."""
    from thermosgd.entropy import _cpuchart, _screen

    b, n, d = x.shape
    threads = _screen.thread_count(n * d)
    ref = np.zeros((b, d - 1))
    if not align:  # reference: the mean direction's own chart coordinates
        own = np.empty((b, 1, d - 1))
        _cpuchart.chart_rows(np.ascontiguousarray(m[:, None, :]), u, False, ref, False, own,
                             np.empty((b, 1, d - 1), np.float32), np.empty((b, 1)),
                             np.empty((b, 1)), 0, b)
        ref = np.ascontiguousarray(own[:, 0])
    store64, store32 = np.empty((b, n, d - 1)), np.empty((b, n, d - 1), np.float32)
    sq, logj = np.empty((b, n)), np.empty((b, n))
    _screen.pool_map(_cpuchart.chart_rows,
                     [(x, u, bool(align), ref, not align, store64, store32, sq, logj, t0, t1)
                      for t0, t1 in _screen.row_ranges(b * n, 16 * threads)], threads)
    rms2, mean2 = np.empty(b), np.empty(b)
    for s in range(b):
        tasks = [(store32, s, i0, i1, np.zeros(d - 1)) for i0, i1 in
                 _screen.row_ranges(n, 4 * threads)]
        square = sum(_screen.pool_map(_cpuchart.spread_rows, tasks, threads))
        mean = sum(task[-1] for task in tasks) / n
        mean2[s] = mean @ mean
        rms2[s] = max(square / n - mean2[s], 0.0)
    with _torch_threads_kept():
        if np.any(mean2 > rms2):
            # the screen's error bound grows with the norms, so an offset above the spread
            # (angles far from the mean direction's, e.g. a sample split across phi's cut) is
            # removed in float64 first
            _cpuchart.centre(store64, store64.mean(axis=1), store32, sq)
        d2 = _screen.nn_sqdist(store32, sq, store64, threads=threads)
    return d2, rms2, logj.mean(-1), norms


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
