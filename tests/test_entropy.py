"""Entropy estimators (eq. 25-28): closed forms, kernel agreement, precision, duplicates, errors.

Tolerances come from the estimator's own scatter: the k = 1 Kozachenko-Leonenko estimate has a
per-point variance of about pi^2/6, so its standard deviation is ~0.02-0.06 nats for the sample
sizes below (measured over 8 seeds for every case here); bounds are about 5 sd plus the measured
bias where the estimator has one (high dimension, the uniform sphere's chart boundaries).
"""

import inspect
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from thermosgd import entropy, theory
from thermosgd.entropy import (
    _chart,
    _cpuchart,
    _gram,
    _lowdim,
    _screen,
    knn_entropy,
    sphere_entropy,
    to_spherical,
    total_entropy,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _vmf(d, kappa, n, seed):
    mu = _rng(100 + d).standard_normal(d)
    return stats.vonmises_fisher(mu / np.linalg.norm(mu), kappa).rvs(n, random_state=_rng(seed))


def _brute_sqdist(x):
    """float64 squared nearest-neighbour distances by explicit differences, (N, D) -> (N,)."""
    t = torch.as_tensor(x, dtype=torch.float64)
    full = torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    full.fill_diagonal_(float("inf"))
    return full.min(1).values.numpy()


def test_public_api():
    assert entropy.__all__ == ["knn_entropy", "sphere_entropy", "to_spherical", "total_entropy"]
    for fn in (knn_entropy, sphere_entropy, total_entropy):
        params = list(inspect.signature(fn).parameters.values())
        assert all(p.kind is p.KEYWORD_ONLY for p in params[1:])
        assert fn.__doc__ and "eq." in fn.__doc__


# --- closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,n,tol", [
    (1, 3000, 0.1),  # sd 0.02 over 8 seeds, bias +0.01
    (2, 3000, 0.1),  # sd 0.015, bias +0.01
    (5, 3000, 0.15),  # sd 0.024, bias -0.035
    (20, 4000, 0.8),  # the k = 1 estimator's bias in D = 20 at N = 4000 is +0.61 (sd 0.04)
])
def test_knn_gaussian(dim, n, tol):
    s = 1.7
    x = s * _rng(dim).standard_normal((n, dim))
    exact = dim / 2 * math.log(2 * math.pi * math.e * s * s)
    assert abs(knn_entropy(x) - exact) < tol


@pytest.mark.parametrize("d,tol", [
    (3, 0.15),  # sd 0.026, bias -0.01
    (5, 0.25),  # sd 0.04, bias +0.02
    (10, 0.35),  # the angle chart's box edges give a bias of +0.13 (sd 0.04) at N = 2000
])
@pytest.mark.parametrize("align", [True, False])
def test_sphere_uniform(d, tol, align):
    w = _rng(d).standard_normal((2000, d))
    assert abs(sphere_entropy(w, align=align) - theory.sphere_log_area(d)) < tol


@pytest.mark.parametrize("d,kappa,tol", [
    (3, 1.0, 0.2),  # d = 3: sd 0.03-0.05 over 8 seeds, |bias| < 0.02
    (3, 30.0, 0.2),
    (3, 1000.0, 0.2),
    (10, 3.0, 0.3),  # d = 10: sd 0.02-0.06, bias +0.08 (kappa 3) to -0.07 (kappa 30)
    (10, 100.0, 0.3),
    (10, 1000.0, 0.35),
])
def test_sphere_vmf(d, kappa, tol):
    # density ~ exp(kappa m^T w): the stationary VMF at temperature T = 1 / kappa
    w = _vmf(d, kappa, 2000, seed=int(kappa))
    assert abs(sphere_entropy(w) - theory.vmf_sphere_entropy(1.0 / kappa, d)) < tol


def test_align_removes_the_pole_bias():
    # A concentrated VMF at the pole theta_1 = 0 of the raw chart: the raw chart is strongly
    # curved there (bias +1.9 nats over 8 seeds), the aligned chart is flat (bias -0.03).
    d, kappa = 10, 1000.0
    mu = np.zeros(d)
    mu[0] = 1.0
    w = stats.vonmises_fisher(mu, kappa).rvs(2000, random_state=_rng(3))
    exact = theory.vmf_sphere_entropy(1.0 / kappa, d)
    assert abs(sphere_entropy(w) - exact) < 0.35
    assert sphere_entropy(w, align=False) - exact > 1.0


# --- definitions: eq. 26-28 ----------------------------------------------------------------------


def _reflect_to_e(w):
    u = w / np.linalg.norm(w, axis=-1, keepdims=True)
    m = u.mean(0) / np.linalg.norm(u.mean(0))
    v = m.copy()
    v[-2] -= 1.0
    return u - 2.0 * np.outer(u @ v, v) / (v @ v)


@pytest.mark.parametrize("d", [3, 6])
def test_sphere_entropy_is_eq26(d):
    # eq. 26-27 written out: KL entropy of the angles plus the mean trigonometric log-Jacobian
    w = _vmf(d, 20.0, 500, seed=1) * _rng(2).uniform(0.5, 2.0, (500, 1))
    for align, u in [(False, w), (True, _reflect_to_e(w))]:
        theta = to_spherical(u)
        j = np.arange(1, d - 1)
        logj = ((d - 1 - j) * np.log(np.sin(theta[:, : d - 2]))).sum(-1).mean()
        expected = knn_entropy(theta) + logj
        assert sphere_entropy(w, align=align) == pytest.approx(expected, abs=1e-9)


def test_aligned_mean_sits_at_the_flat_point():
    u = _reflect_to_e(_vmf(5, 50.0, 300, seed=4))
    m = to_spherical(u.mean(0))
    np.testing.assert_allclose(m, [np.pi / 2, np.pi / 2, np.pi / 2, 0.0], atol=1e-12)


def test_total_entropy():
    d = 8
    w = _vmf(d, 50.0, 400, seed=6) * _rng(7).uniform(0.8, 1.2, (400, 1))
    radius = np.linalg.norm(w, axis=-1).mean()
    assert total_entropy(w) == pytest.approx(sphere_entropy(w) + (d - 1) * np.log(radius),
                                             rel=1e-12)
    # S(c w) = S(w) + (d - 1) log c: directions are unchanged, the radius scales
    c = 3.7
    assert total_entropy(c * w) == pytest.approx(total_entropy(w) + (d - 1) * np.log(c),
                                                 rel=1e-12)
    batch = np.stack([w, 2 * w])
    np.testing.assert_allclose(total_entropy(batch), [total_entropy(w), total_entropy(2 * w)],
                               rtol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 7])
def test_to_spherical_round_trip(d):
    w = _rng(d).standard_normal((200, d)) * 5.0
    theta = to_spherical(w)
    assert theta.shape == (200, d - 1)
    assert np.all((theta[:, :-1] >= 0) & (theta[:, :-1] <= np.pi))
    assert np.all((theta[:, -1] > -np.pi) & (theta[:, -1] <= np.pi))
    x = np.ones((200, d))
    for j in range(d - 2):  # x_j = sin th_1 .. sin th_(j-1) cos th_j
        x[:, j] *= np.cos(theta[:, j])
        x[:, j + 1:] *= np.sin(theta[:, j])[:, None]
    x[:, -2] *= np.cos(theta[:, -1])
    x[:, -1] *= np.sin(theta[:, -1])
    np.testing.assert_allclose(x, w / np.linalg.norm(w, axis=-1, keepdims=True), atol=1e-14)
    t = to_spherical(torch.from_numpy(w))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), theta, atol=1e-15)


# --- batches, array types and the two kernels --------------------------------------------------


def test_batched_equals_per_set():
    x = _rng(8).standard_normal((3, 300, 2))
    np.testing.assert_allclose(knn_entropy(x), [knn_entropy(s) for s in x], rtol=1e-13)
    w = _vmf(3, 10.0, 3 * 400, seed=9).reshape(3, 400, 3)
    np.testing.assert_allclose(sphere_entropy(w), [sphere_entropy(s) for s in w], rtol=1e-13)
    w = _vmf(12, 10.0, 3 * 300, seed=10).reshape(3, 300, 12)
    np.testing.assert_allclose(sphere_entropy(w), [sphere_entropy(s) for s in w], rtol=1e-11)
    x = _rng(11).standard_normal((2, 300, 6))
    np.testing.assert_allclose(knn_entropy(x), [knn_entropy(s) for s in x], rtol=1e-11)


@pytest.mark.parametrize("d", [3, 40])
def test_numpy_and_torch_agree(d):
    w = _vmf(d, 30.0, 500, seed=d)
    for dtype in (torch.float64, torch.float32):
        t = torch.from_numpy(w).to(dtype)
        # float32 input is the same data rounded: compare with the rounded data in NumPy
        ref = sphere_entropy(t.double().numpy())
        assert sphere_entropy(t) == pytest.approx(ref, abs=1e-9 * d)
        assert knn_entropy(t) == pytest.approx(knn_entropy(t.double().numpy()), abs=1e-9 * d)


def test_kernels_agree():
    # the numba sweep and the torch Gram kernel on the same points
    x = _rng(12).standard_normal((3, 500, 2)) * [1.0, 0.01]
    t = torch.from_numpy(x - x.mean(1, keepdims=True))
    gram = _gram._nn_sqdist_gram(t.float(), (t * t).sum(-1).float(), t).numpy()
    np.testing.assert_allclose(_lowdim._nn_sqdist_sweep(x), gram, rtol=1e-12)
    # the fused low-dimensional sphere path and the chunked torch path: same estimate
    w = _vmf(3, 20.0, 2 * 600, seed=13).reshape(2, 600, 3)
    for align in (True, False):
        d2, rms2, logj, _ = _chart._sphere_torch(torch.from_numpy(w), align, 2**30)
        torch_path = entropy._kl_from_sqdist(d2, 2, rms2, 1.0, "w", None, stacklevel=2) + logj
        np.testing.assert_allclose(sphere_entropy(w, align=align), torch_path, rtol=1e-12)
    # the device (index_select) and CPU (numba) exact passes
    flat = torch.from_numpy(_rng(14).standard_normal((50, 300)))
    a, b = torch.arange(50), torch.roll(torch.arange(50), 3)
    np.testing.assert_allclose(_gram._pair_sqdist_torch(flat, a, b).numpy(),
                               _screen.pair_sqdist(flat.numpy(), a.numpy(), b.numpy(), threads=2),
                               rtol=1e-13)


def test_float32_storage_matches_float64():
    # max_memory too small for float64 + float32 copies: float32-only storage of the centered chart
    w = _vmf(300, 1e4, 400, seed=15)
    n, dim = w.shape[0], w.shape[1] - 1
    full = sphere_entropy(w)
    small = sphere_entropy(w, max_memory=n * dim * 8)
    # float32 keeps ~7 digits of each centered coordinate: log-distances move by ~1e-7, times
    # D/2 = 150 per point
    assert small == pytest.approx(full, abs=1e-4)
    with pytest.raises(ValueError, match="max_memory"):
        sphere_entropy(w, max_memory=n * dim * 2)


def test_fast_atan2():
    # the low-dimensional kernel's atan2: within 2 ulp of libm, 1 ulp for small angles
    rng = _rng(24)
    y = rng.standard_normal(4000) * 10.0 ** rng.uniform(-12, 4, 4000)
    x = rng.standard_normal(4000) * 10.0 ** rng.uniform(-12, 4, 4000)
    got = np.array([_lowdim._atan2(a, b) for a, b in zip(y, x)])
    ref = np.arctan2(y, x)
    assert np.all(np.abs(got - ref) <= 2 * np.spacing(np.abs(ref)))
    small = np.array([_lowdim._atan2(a, 1.0) for a in y * 1e-6])
    assert np.all(np.abs(small - np.arctan(y * 1e-6)) <= np.spacing(np.abs(small)))
    for a, b in [(0.0, 0.0), (-0.0, -1.0), (1.0, 0.0), (np.inf, 1.0), (1.0, -np.inf)]:
        assert _lowdim._atan2(a, b) == np.arctan2(a, b)
    assert np.isnan(_lowdim._atan2(np.nan, 1.0))
    # the chart's branch-free atan2 for x >= 0 (polynomial, no table): within 3 ulp, and small
    # angles keep full relative precision
    x = np.abs(x)
    got = np.array([_cpuchart._atan2_right(a, b) for a, b in zip(y, x)])
    ref = np.arctan2(y, x)
    assert np.all(np.abs(got - ref) <= 3 * np.spacing(np.abs(ref)))
    small = np.array([_cpuchart._atan2_right(a, 1.0) for a in y * 1e-6])
    assert np.all(np.abs(small - np.arctan(y * 1e-6)) <= np.spacing(np.abs(small)))
    for a, b in [(0.0, 1.0), (-0.0, 1.0), (1.0, 0.0), (-1.0, 0.0), (2.0, 2.0)]:
        assert _cpuchart._atan2_right(a, b) == pytest.approx(np.arctan2(a, b), abs=4e-16)


# --- precision in high dimension -----------------------------------------------------------------


def test_close_points_in_high_dimension():
    n, d = 200, 20_000
    rng = _rng(16)
    # R^D: a common offset 1e6 times the spread; after float64 centering the float32 screen works
    # on the spread, and the exact pass recovers the distances to float64 rounding (~1e-16 x
    # offset / spread = 1e-10)
    x = 1e3 * rng.standard_normal(d) + 1e-3 * rng.standard_normal((n, d))
    t = torch.from_numpy(x)[None]
    s64, s32, ss, _ = _chart._store_chart(t, _chart._identity_chart, d, max_memory=2**30)
    d2 = _gram._nn_sqdist_gram(s32, ss.float(), s64)[0].numpy()
    np.testing.assert_allclose(d2, _brute_sqdist(x), rtol=1e-6)
    # the sphere: directions 1e-6 apart around one direction (angle differences ~1e-8 per
    # coordinate, far below float32 resolution of the angles themselves)
    base = rng.standard_normal(d)
    w = base / np.linalg.norm(base) + 1e-6 / math.sqrt(d) * rng.standard_normal((n, d))
    d2, _, _, _ = _chart._sphere_torch(torch.from_numpy(w)[None], False, 2**30)
    np.testing.assert_allclose(d2[0], _brute_sqdist(to_spherical(w)), rtol=1e-6)
    # and the estimate is finite, with no floor hit (no warning: filterwarnings = error)
    assert np.isfinite(sphere_entropy(w))


def _kl_brute(x):
    """Eq. 25 with brute-force float64 distances: the reference for the fast paths."""
    dim = x.shape[1]
    d2 = _brute_sqdist(x)
    return entropy._kl_from_sqdist(d2[None], dim, np.ones(1), np.ones(1), "x", None,
                                   stacklevel=2)[0]


@pytest.mark.parametrize("dim", [2, 8, 30, 300])
def test_knn_paths_are_exact(dim):
    # sweep (D <= 3), k-d tree (D <= 12), proven float32 screen (above): the same nearest
    # neighbours as float64 brute force, so the same estimate to float64 rounding. The pair
    # 1e-9 apart is far below float32 resolution; the screen's path centres in float64 first,
    # which moves each coordinate by <= 1e-16, so that pair's distance by ~1e-7 relative and
    # the estimate by ~D/2 1e-7 / N ~ 1e-9 nats at most (5e-12 relative measured)
    rng = _rng(40 + dim)
    x = rng.standard_normal((400, dim)) * rng.uniform(0.5, 2.0, dim)
    x[9] = x[4] + 1e-9
    assert knn_entropy(x) == pytest.approx(_kl_brute(x), rel=1e-10)


def test_screen_finds_the_nearest_among_near_ties():
    # 200 points at 100 e_i in D = 3000 plus noise of 1e-6: every squared distance is
    # 2e4 + O(1e-4), far inside the float32 screen's proven margin (~7 here, gamma_D ~ 2e-4),
    # so every row overflows its kept scores and is searched exactly; plus iid points, where
    # the margin leaves a few candidates per row
    rng = _rng(41)
    x = np.zeros((200, 3000))
    x[:, :200] = 100.0 * np.eye(200)
    x += 1e-6 * rng.standard_normal(x.shape)
    _check_screen(x)
    _check_screen(rng.standard_normal((200, 3000)))


def _check_screen(x):
    x32 = x.astype(np.float32)
    sq = (x32.astype(np.float64) ** 2).sum(-1)
    for threads in (1, 2):
        d2 = _screen.nn_sqdist(x32[None], sq[None], x[None], threads=threads)[0]
        np.testing.assert_allclose(d2, _brute_sqdist(x), rtol=1e-13)
    # the torch screen (CUDA, inputs too large for float64) keeps 8 candidates and searches
    # the rows whose margin holds them all
    t = torch.from_numpy(x - x.mean(0))[None]
    d2 = _gram._nn_sqdist_gram(t.float(), (t.float().double() ** 2).sum(-1).float(), t)[0]
    np.testing.assert_allclose(d2.numpy(), _brute_sqdist(x), rtol=1e-12)


@pytest.mark.parametrize("align", [True, False])
def test_high_dimensional_sphere_path_is_eq26(align):
    # the fused chart, the screen and the exact pass against eq. 26 written out with brute-force
    # distances; the second sample has two clusters far apart in phi (around the raw chart's
    # cut), so its angles are not centred and the float64 centring before the screen runs
    d = 40
    one = _vmf(d, 200.0, 300, seed=42)
    mu = np.zeros(d)
    mu[-2] = -1.0
    two = np.concatenate([stats.vonmises_fisher(sign * mu, 400.0).rvs(150, random_state=_rng(s))
                          for sign, s in ((1.0, 44), (-1.0, 45))])
    for w in (one, two):
        u = _reflect_to_e(w) if align else w
        theta = to_spherical(u)
        j = np.arange(1, d - 1)
        logj = ((d - 1 - j) * np.log(np.sin(theta[:, : d - 2]))).sum(-1).mean()
        expected = _kl_brute(theta) + logj
        assert sphere_entropy(w, align=align) == pytest.approx(expected, rel=1e-10)


# --- duplicates and validation -------------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 30])
def test_duplicates_warn_and_stay_finite(d):
    w = _vmf(d, 10.0, 300, seed=17)
    w[5] = w[6]
    w[7] = 2.0 * w[8]  # the same direction
    with pytest.warns(UserWarning, match="4 of 300 points"):
        assert np.isfinite(sphere_entropy(w))
    x = w[:, :2] if d == 3 else w
    with pytest.warns(UserWarning, match="2 of 300 points"):
        assert np.isfinite(knn_entropy(x))
    with pytest.warns(UserWarning, match="floor"):
        knn_entropy(np.concatenate([x, x]), min_distance=1e-3)


@pytest.mark.parametrize("d", [3, 30])
def test_identical_points_raise(d):
    w = np.tile(_rng(18).standard_normal(d), (50, 1))
    with pytest.raises(ValueError, match="identical"):
        sphere_entropy(w)
    with pytest.raises(ValueError, match="identical"):
        knn_entropy(w)
    with pytest.raises(ValueError, match="identical"):
        sphere_entropy(np.stack([_rng(19).standard_normal((50, d)), w]))
    # the same direction at different scales: equal to float64 rounding after normalization
    scaled = w * np.linspace(1.0, 3.0, 50)[:, None]
    with pytest.raises(ValueError, match="coincide"):
        sphere_entropy(scaled)


@pytest.mark.parametrize("d", [3, 30])
def test_invalid_input(d):
    w = _rng(20).standard_normal((40, d))
    bad = w.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sphere_entropy(bad)
    with pytest.raises(ValueError, match="non-finite"):
        knn_entropy(bad)
    zero = w.copy()
    zero[4] = 0.0
    with pytest.raises(ValueError, match="zero vectors"):
        sphere_entropy(zero)
    with pytest.raises(ValueError, match="N = 2"):
        sphere_entropy(w[:1])
    with pytest.raises(ValueError, match=r"\(N, D\) or \(B, N, D\)"):
        knn_entropy(w[0])
    with pytest.raises(ValueError, match="min_distance"):
        knn_entropy(w, min_distance=0.0)
    with pytest.raises(ValueError, match="d >= 2"):
        sphere_entropy(w[:, :1])
    with pytest.raises(ValueError, match="d >= 2"):
        to_spherical(w[:, :1])


# --- CUDA ----------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    w = _vmf(50, 100.0, 2 * 400, seed=21).reshape(2, 400, 50)
    cpu = sphere_entropy(w)
    gpu = sphere_entropy(torch.from_numpy(w).cuda())
    # same float64 chart and exact pass; the float32 screen may order ties differently only
    np.testing.assert_allclose(gpu, cpu, rtol=1e-10)
    w3 = _vmf(3, 10.0, 500, seed=22)
    assert sphere_entropy(torch.from_numpy(w3).cuda()) == pytest.approx(sphere_entropy(w3),
                                                                        rel=1e-10)
    x = _rng(23).standard_normal((300, 4))
    assert knn_entropy(torch.from_numpy(x).cuda()) == pytest.approx(knn_entropy(x), rel=1e-10)



def test_entropy_leaves_torch_thread_count_alone():
    """numba's OpenMP layer resets the process's OpenMP threads when it starts; a 1-thread run
    (a Ray task) must stay at 1 thread after its first entropy evaluation. A fresh process, since
    the layer starts once per process."""
    code = ("import torch; torch.set_num_threads(1)\n"
            "from thermosgd.entropy import knn_entropy, sphere_entropy\n"
            "g = torch.Generator().manual_seed(0)\n"
            "sphere_entropy(torch.randn(50, 40, generator=g))\n"  # the torch + numba path
            "sphere_entropy(torch.randn(50, 3, generator=g))\n"
            "knn_entropy(torch.randn(50, 2, generator=g).numpy())\n"
            "print(torch.get_num_threads())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "1"


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_cpu_chart_is_the_torch_chart(align, dtype):
    """The numba chart (CPU) and the torch chart (CUDA, huge inputs) give the same distances,
    log-Jacobians and spreads: the same operations in the same order, up to atan2's last bits."""
    rng = _rng(11)
    base = rng.standard_normal(300)
    w = torch.from_numpy(base + 0.01 * rng.standard_normal((2, 80, 300))).to(dtype)
    fused = _chart._sphere_torch(w, align, 2**30, fused=True)
    plain = _chart._sphere_torch(w, align, 2**30, fused=False)
    # distances, log J, norms: the same up to sums in another order and atan2's last bits; the
    # spread (which only sets the distance floor) comes from the float32 store on the CPU path
    for a, b, rtol in zip(fused, plain, (1e-10, 1e-6, 1e-10, 1e-10)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0)
