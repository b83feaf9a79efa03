"""The isotropic noise model: noise generator, update kernel, stationary values against theory."""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from thermosgd import theory
from thermosgd.isotropic import IsotropicConfig, _rng, grid_protocol, simulate, unit_vector
from thermosgd.isotropic._kernel import _advance
from thermosgd.isotropic.simulator import _optimizer_arrays
from thermosgd.protocols import make_protocol
from thermosgd.theory import make_optimizer


def test_ziggurat_normals_are_standard_normal():
    state = _rng.seed_states([(7,)])[0]
    z = np.empty(1_000_000)
    _rng.fill_normal(state, z)
    # with 1e6 draws the standard errors are 1e-3 (mean), 1.4e-3 (variance), 2.4e-3 (skewness)
    # and 4.9e-3 (excess kurtosis): 5 sigma bounds.
    assert abs(z.mean()) < 5e-3
    assert abs(z.var() - 1.0) < 7e-3
    assert abs(stats.skew(z)) < 1.2e-2
    assert abs(stats.kurtosis(z)) < 2.5e-2
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # the tail beyond the base layer (|z| > 3.654) is drawn by a separate branch: its mass
    # 2.58e-4 gives ~258 of 1e6 draws, Poisson sd ~16.
    assert abs(np.mean(np.abs(z) > 3.6541528853610088) - 2.58e-4) < 1e-4


def test_noise_streams_are_reproducible_and_distinct():
    a, b = _rng.seed_states([(1, 2), (1, 2)]), _rng.seed_states([(1, 3)])
    za, zb, zc = np.empty(100), np.empty(100), np.empty(100)
    _rng.fill_normal(a[0], za)
    _rng.fill_normal(a[1], zb)
    _rng.fill_normal(b[0], zc)
    np.testing.assert_array_equal(za, zb)
    assert not np.allclose(za, zc)


@pytest.mark.parametrize("name,second", [("fixed-lr", 0.02), ("fixed-elr", 0.02), ("fixed-sphere", 1.7)])
def test_kernel_step_is_eq24_then_protocol_step(name, second):
    """The compiled loop does exactly: gradient + projected noise (eq. 24), then Protocol.step."""
    d, sigma, rate, steps = 4, 0.8, 0.05, 5
    protocol = make_protocol(name, np.array([rate]), np.array([second]))
    mu = unit_vector(d, 0, 0)
    w = unit_vector(d, 0, 1)[None, :] * (second if name == "fixed-sphere" else 1.3)
    state = _rng.seed_states([(5,)])
    ref_w, ref_state = w.copy(), state.copy()
    n = steps
    logs = [np.zeros((1, 1), np.float32) for _ in range(3)]
    queue = np.zeros((1, 1, d))
    code, hyper, cuts = _optimizer_arrays(make_optimizer("sgd"), 1, name == "fixed-sphere")
    _advance(w, state, np.ones(1, bool), mu, protocol.code, protocol.rate,
             np.asarray(protocol.weight_decay_or_radius, float), sigma, 0, n, 10**9, 10**9, *logs, queue,
             _rng.ZIG_X, _rng.ZIG_RATIO, code, hyper, cuts, np.zeros((1, 0)), np.zeros((1, 0)),
             np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))
    for _ in range(n):
        eps = np.empty(d)
        _rng.fill_normal(ref_state[0], eps)
        r = np.linalg.norm(ref_w[0])
        wb = ref_w[0] / r
        grad = (mu - (mu @ wb) * wb) / r + sigma * (eps - (eps @ wb) * wb) / r  # eq. 24
        ref_w = protocol.step(ref_w, grad[None, :])
    # same arithmetic up to the order of floating-point operations
    np.testing.assert_allclose(w, ref_w, rtol=1e-12)


def _small(protocol, **kw):
    base = dict(seeds=(0,), iterations=200_000, log_every=50, stationary_logs=2000,
                queue_size=500, queue_every=50, entropy_every=25_000, entropy_average=5)
    if protocol == "fixed-sphere":
        base.update(learning_rates=(0.01, 0.04), radii=(0.5, 2.0))
    else:
        base.update(learning_rates=(0.01, 0.04), weight_decays=(0.01, 0.04))
    return IsotropicConfig(protocol=protocol, **(base | kw))


@pytest.mark.parametrize("protocol", ["fixed-lr", "fixed-elr", "fixed-sphere"])
def test_stationary_values_match_theory(protocol):
    """Hyperparameters with eta*lambda >= 1e-4 relax within ~1e4 steps, so 2e5 steps are
    stationary; tolerances are ~3x the seed-to-seed spread seen for this size of run, plus the
    discretization bias of the largest steps (eta_eff = 0.04: ~2 % on lambda_eff and r*)."""
    table = simulate(_small(protocol), progress=False).table
    assert (table["status"] == "finished").all()
    if protocol == "fixed-sphere":
        np.testing.assert_allclose(table["radius"], table["sphere_radius"], rtol=1e-6)
        np.testing.assert_allclose(table["lambda_eff"], table["lambda_eff_theory"], rtol=0.06)
    else:
        np.testing.assert_allclose(table["radius"], table["radius_theory"], rtol=0.05)
    np.testing.assert_allclose(table["U"], table["U_theory"], rtol=0.12)
    # sphere entropy in nats: the KL estimator with N=500 has a bias ~0.05-0.1 at d=3
    np.testing.assert_allclose(table["entropy_sphere"], table["entropy_sphere_theory"], atol=0.2)
    expected_total = theory.total_entropy(table["entropy_sphere"], table["radius"], 3)
    np.testing.assert_allclose(table["entropy"], expected_total, atol=0.02)  # queue vs window radius


def test_higher_dimension_and_sigma():
    cfg = _small("fixed-elr", dim=10, sigma=0.5, learning_rates=(0.05,), weight_decays=(0.01,))
    table = simulate(cfg, progress=False).table
    t = 0.05 * 0.25 / 2  # eta_eff sigma^2 / 2
    assert table["temperature"].iloc[0] == pytest.approx(t)
    assert table["radius"].iloc[0] == pytest.approx(np.sqrt(t * 9 / 0.01), rel=0.05)  # eq. 12
    assert table["U"].iloc[0] == pytest.approx(theory.vmf_mean_loss(t, 10), rel=0.1)


def test_deterministic_and_independent_of_grid_composition():
    cfg = _small("fixed-lr", iterations=60_000, stationary_logs=500, entropy_every=30_000,
                 entropy_average=1)
    a = simulate(cfg, progress=False).table
    b = simulate(cfg, progress=False).table
    pd_cols = ["radius", "U", "entropy_sphere"]
    np.testing.assert_array_equal(a[pd_cols].to_numpy(), b[pd_cols].to_numpy())
    one = dataclasses.replace(cfg, learning_rates=(0.04,), weight_decays=(0.01,))
    single = simulate(one, progress=False).table
    row = a[(a.learning_rate == 0.04) & (a.weight_decay == 0.01)]
    np.testing.assert_array_equal(row[pd_cols].to_numpy(), single[pd_cols].to_numpy())


def test_grid_order_and_seeds():
    cfg = _small("fixed-lr", seeds=(0, 1))
    protocol, seeds = grid_protocol(cfg)
    assert protocol.rate.tolist() == [0.01] * 4 + [0.04] * 4
    assert protocol.weight_decay_or_radius.tolist() == [0.01, 0.01, 0.04, 0.04] * 2
    assert seeds.tolist() == [0, 1] * 4


def test_divergence_is_recorded_not_raised():
    # fixed ELR with eta_eff * lambda = 2e3 overshoots the origin and blows up
    cfg = _small("fixed-elr", learning_rates=(1e-2, 50.0), weight_decays=(40.0,),
                 iterations=60_000, stationary_logs=500, entropy_every=30_000, entropy_average=1)
    table = simulate(cfg, progress=False).table
    assert table["status"].tolist() == ["finished", "diverged"]
    assert np.isnan(table.loc[1, "U"]) and np.isfinite(table.loc[0, "U"])


@pytest.mark.parametrize("change,message", [
    (dict(learning_rates=(0.01, -1.0)), "learning rates"),
    (dict(learning_rates=(0.01, 0.01)), "repeats a value"),
    (dict(seeds=(0, 0)), "repeats a value"),
    (dict(seeds=(-1,)), r"seeds \(--seeds\) must be integers in \[0, 2\^63\)"),
    (dict(seeds=(2**64,)), r"seeds \(--seeds\) must be integers in \[0, 2\^63\)"),
    (dict(seeds=(True,)), r"seeds \(--seeds\) must be integers"),
    (dict(weight_decays=(0.0,)), "weight decays"),
    (dict(weight_decays=()), "needs --wd"),
    (dict(dim=1), r"d must be >= 2 \(--dim"),
    (dict(log_every=2**63), r"log_every \(--log-every\) must be an integer in \[1, 2\^63\)"),
    (dict(queue_every=True), r"queue_every \(--queue-every\) must be an integer"),
    (dict(sigma=0.0), "sigma must be positive"),
    (dict(iterations=10_000), "too few for the entropy queue"),
    (dict(protocol="nope"), "unknown protocol"),
    (dict(radii=(1.0,)), "no sphere radius"),
])
def test_config_rejects_bad_input(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(_small("fixed-lr"), **change)


def test_sphere_config_rejects_weight_decay():
    with pytest.raises(ValueError, match="fixed-sphere has no weight decay"):
        dataclasses.replace(_small("fixed-sphere"), weight_decays=(0.1,))


@pytest.mark.slow
def test_the_first_run_says_it_compiles_and_the_second_uses_the_cache(tmp_path):
    """numba's compiled kernels are cached on disk: a fresh cache prints one line before the
    progress bar, the next process finds the cache and says nothing."""
    import os
    import subprocess
    import sys

    code = ("from thermosgd.isotropic import IsotropicConfig, simulate\n"
            "simulate(IsotropicConfig(protocol='fixed-lr', learning_rates=(0.01,), "
            "weight_decays=(0.01,), iterations=2000, queue_size=10, queue_every=50, "
            "entropy_every=1000, stationary_logs=5), progress=True)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=600, check=True) for _ in range(2)]
    assert "compiling kernels (first run only)" in runs[0].stderr
    assert "compiling kernels" not in runs[1].stderr
