"""The three protocols: one parametrized table drives update rules, theory and validation."""

import numpy as np
import pytest
import torch

from thermosgd import theory
from thermosgd.protocols import PROTOCOLS, FixedELR, FixedLR, FixedSphere, make_protocol

RATE, SECOND = 0.03, 0.7


def _expected_step(name, w, g):
    norm = np.linalg.norm(w, axis=-1, keepdims=True)
    if name == "fixed-lr":  # eq. 15
        return w - RATE * (g + SECOND * w)
    if name == "fixed-elr":  # eq. 8
        return w - RATE * norm**2 * (g + SECOND * w)
    v = w - RATE * SECOND**2 * g  # eq. 2 with eta = eta_eff r^2
    return SECOND * v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_step_matches_update_rule_numpy_and_torch(name):
    rng = np.random.default_rng(1)
    w, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    protocol = make_protocol(name, RATE, SECOND)
    expected = _expected_step(name, w, g)
    np.testing.assert_allclose(protocol.step(w, g), expected, rtol=1e-12)
    got = protocol.step(torch.from_numpy(w), torch.from_numpy(g)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_step_broadcasts_grid_hyperparameters(name):
    rng = np.random.default_rng(2)
    w, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    rates, seconds = np.array([0.01, 0.02, 0.03]), np.array([0.5, 0.7, 0.9])
    batched = make_protocol(name, rates, seconds).step(w, g)
    for k in range(3):
        single = make_protocol(name, rates[k], seconds[k]).step(w[k], g[k])
        np.testing.assert_allclose(batched[k], single, rtol=1e-12)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_theory_obeys_ideal_gas_law(name):
    d, sigma2 = 7, 1.3
    protocol = make_protocol(name, np.array([1e-3, 1e-2]), np.array([0.5, 2.0]))
    t = protocol.temperature(sigma2, d)
    pv = protocol.pressure(sigma2, d) * protocol.volume(sigma2, d)
    np.testing.assert_allclose(pv, theory.gas_constant(d) * t, rtol=1e-12)  # pV = RT


def test_learning_rate_at_norm():
    assert FixedLR(0.1, 0.01).learning_rate_at(3.0) == pytest.approx(0.1)
    assert FixedELR(0.1, 0.01).learning_rate_at(3.0) == pytest.approx(0.9)
    assert FixedSphere(0.1, 2.0).learning_rate_at(5.0) == pytest.approx(0.4)


def test_sphere_step_stays_on_sphere():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((10, 6))
    out = FixedSphere(0.05, 2.5).step(w, rng.standard_normal((10, 6)))
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 2.5, rtol=1e-12)


def test_maxwell_targets_and_potentials():
    assert FixedLR(1e-2, 1e-2).maxwell_target(3) == pytest.approx(1.0)  # eq. 23
    assert FixedELR(1e-2, 1e-2).maxwell_target(3) == pytest.approx(-1.0)  # eq. 85
    assert FixedSphere(1e-2, 1.0).potential == "F"
    assert FixedLR(1e-2, 1e-2).potential == FixedELR(1e-2, 1e-2).potential == "G"


@pytest.mark.parametrize("name", list(PROTOCOLS))
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_non_positive_hyperparameters(name, bad):
    with pytest.raises(ValueError, match="positive"):
        make_protocol(name, bad, 1.0)
    with pytest.raises(ValueError, match="positive"):
        make_protocol(name, 1e-2, bad)


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol 'sgd'"):
        make_protocol("sgd", 1e-2, 1e-2)
