"""Tests of :mod:`thermosgd.theory` against independent closed forms, quadrature and identities.

References are written here from scratch (d = 3 hyperbolic closed forms, quadrature over the
polar angle, the Bessel power series, Amos bounds), never by calling the function under test
a second way. Every tolerance carries a comment on where its size comes from.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special

from thermosgd import theory as th
from thermosgd.theory import vmf

LARGE_D = 43692  # trainable d of ResNet-18 with k = 4, the largest d of the main experiments


# --- independent references -------------------------------------------------------------------


def _vmf3_reference(temperature):
    """Exact d = 3 VMF statistics (U, S, C_V), evaluated without overflow or cancellation.

    A_3 = coth k - 1/k, S = log(4 pi sinh(k)/k) - k A_3, U = 1 - A_3, C_V = 1 - k^2/sinh^2 k,
    rewritten with q = exp(-2k): coth k = 1 + 2q/(1-q), log sinh k = k + log1p(-q) - log 2.
    """
    k = 1.0 / np.asarray(temperature, dtype=float)
    q = np.exp(-2.0 * k)
    one_minus_q = -np.expm1(-2.0 * k)
    energy = 1.0 / k - 2.0 * q / one_minus_q
    entropy = np.log(2.0 * np.pi / k) + 1.0 + np.log1p(-q) - 2.0 * k * q / one_minus_q
    k_over_sinh = 2.0 * k * np.exp(-k) / one_minus_q
    heat_capacity = 1.0 - k_over_sinh**2
    return energy, entropy, heat_capacity


def _log_unit_sphere_area(d):
    """log |S^(d-1)| = log(2 pi^(d/2) / Gamma(d/2)), for the quadrature normalisations."""
    return np.log(2.0) + d / 2.0 * np.log(np.pi) - special.gammaln(d / 2.0)


def _vmf_quadrature_polar(temperature, d):
    """(U, S) of the density exp(-mu^T w / T) / Z on S^(d-1) by quadrature over the polar angle.

    With theta the angle to mu, the sphere's measure is |S^(d-2)| sin^(d-2) theta dtheta. The
    factor exp(k) is pulled out of Z so that exp(-k (1 + cos theta)) <= 1 never overflows.
    """
    k = 1.0 / temperature

    def weight(theta):
        return np.sin(theta) ** (d - 2) * np.exp(-k * (1.0 + np.cos(theta)))

    z0, _ = integrate.quad(weight, 0.0, np.pi, epsabs=0.0, epsrel=1e-13, limit=200)
    # E[cos] can be near 0, so its integral gets an absolute target relative to Z instead.
    z1, _ = integrate.quad(
        lambda t: np.cos(t) * weight(t), 0.0, np.pi, epsabs=1e-14 * z0, epsrel=1e-13, limit=200
    )
    mean_cos = z1 / z0
    log_z = _log_unit_sphere_area(d - 1) + k + np.log(z0)
    # S = -E[log rho] = log Z + k E[mu^T w]; U = E[1 + mu^T w].
    return 1.0 + mean_cos, log_z + k * mean_cos


def _vmf_quadrature_peaked(temperature, d):
    """(U, S) as above for large d, in t = cos(theta), integrating around the density's peak.

    The t-density is exp(g(t)), g = (d-3)/2 log(1-t^2) - k t, with maximum at t0. The integrand
    exp(g(t0 + s) - g(t0)) is written in the offset s so that no O(k) terms cancel, and the
    integral runs over t0 +- 60 widths (it is below exp(-1800) outside).
    """
    k = 1.0 / temperature
    a = (d - 3.0) / 2.0
    t0 = (2.0 * a - np.sqrt(4.0 * a * a + 4.0 * k * k)) / (2.0 * k)  # root of g'(t) = 0
    one_minus_t0sq = 1.0 - t0 * t0
    width = one_minus_t0sq / np.sqrt(2.0 * a * (1.0 + t0 * t0))  # 1 / sqrt(-g''(t0))
    lo, hi = max(-1.0, t0 - 60.0 * width) - t0, min(1.0, t0 + 60.0 * width) - t0

    def density(s):  # exp(g(t0 + s) - g(t0)); log1p argument: (t0^2 - t^2) / (1 - t0^2)
        return np.exp(a * np.log1p(-s * (2.0 * t0 + s) / one_minus_t0sq) - k * s)

    opts = {"epsrel": 1e-12, "limit": 200, "points": [0.0]}
    z0, _ = integrate.quad(density, lo, hi, epsabs=0.0, **opts)
    # The first moment about t0 is nearly 0: give it an absolute target on the scale of Z * width.
    z1, _ = integrate.quad(lambda s: s * density(s), lo, hi, epsabs=1e-14 * z0 * width, **opts)
    mean_t = t0 + z1 / z0
    log_z = _log_unit_sphere_area(d - 1) + a * np.log(one_minus_t0sq) - k * t0 + np.log(z0)
    return 1.0 + mean_t, log_z + k * mean_t


def _log_bessel_series(nu, kappa):
    """log I_nu(kappa) from the power series sum_m (k/2)^(2m+nu) / (m! Gamma(m+nu+1)).

    All terms are positive, so a log-sum-exp over enough terms past the largest one is accurate
    to a few ulps of log I for any order and argument.
    """
    m_peak = (np.sqrt(nu * nu + kappa * kappa) - nu) / 2.0
    m = np.arange(int(m_peak + 40.0 * np.sqrt(m_peak + 1.0) + 200.0), dtype=float)
    terms = (2.0 * m + nu) * np.log(kappa / 2.0) - special.gammaln(m + 1.0)
    terms -= special.gammaln(m + nu + 1.0)
    return special.logsumexp(terms)


def _amos_bounds(kappa, d):
    """Amos (1974) bounds on A_d = I_{d/2}/I_{d/2-1}, valid for every kappa > 0 and d >= 2."""
    lower = kappa / (d / 2.0 - 0.5 + np.sqrt((d / 2.0 + 0.5) ** 2 + kappa**2))
    upper = kappa / (d / 2.0 - 0.5 + np.sqrt((d / 2.0 - 0.5) ** 2 + kappa**2))
    return lower, upper


# --- VMF statistics: exact values -------------------------------------------------------------


def test_vmf_d3_matches_hyperbolic_closed_form():
    temperature = np.logspace(-4, 1, 101)
    energy, entropy, heat_capacity = _vmf3_reference(temperature)
    # U = 1 - A with A within an ulp of 1 at T = 1e-4: absolute error ~eps, relative eps/T ~ 2e-12.
    np.testing.assert_allclose(th.vmf_mean_loss(temperature, 3), energy, rtol=1e-10)
    # S is a sum of O(10) terms; it crosses zero near T = 1/(2 pi e), hence the absolute floor.
    np.testing.assert_allclose(
        th.vmf_sphere_entropy(temperature, 3), entropy, rtol=1e-12, atol=1e-12
    )
    # C_V = k^2 (1 - A^2 - 2A/k) cancels to O(1/k^2) from O(1) terms: relative error eps k^2 ~ 2e-8.
    np.testing.assert_allclose(th.vmf_heat_capacity(temperature, 3), heat_capacity, rtol=1e-7)
    np.testing.assert_allclose(
        th.vmf_mean_resultant(1.0 / temperature, 3), 1.0 - energy, rtol=1e-12
    )


@pytest.mark.parametrize("d", [5, 10])
@pytest.mark.parametrize("temperature", [0.03, 0.2, 1.0, 5.0])
def test_vmf_matches_polar_quadrature(d, temperature):
    energy, entropy = _vmf_quadrature_polar(temperature, d)
    # quad runs at epsrel 1e-13 on smooth integrands; the Bessel route is accurate to ~1e-14.
    assert th.vmf_mean_loss(temperature, d) == pytest.approx(energy, rel=1e-10, abs=1e-12)
    assert th.vmf_sphere_entropy(temperature, d) == pytest.approx(entropy, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("temperature", [3e-6, 1e-5, 3e-5, 1e-4, 1e-3])
def test_vmf_large_d_matches_peaked_quadrature(temperature):
    # These temperatures exercise the uniform-asymptotic branch where ive under- or overflows.
    energy, entropy = _vmf_quadrature_peaked(temperature, LARGE_D)
    # Here A = exp(log I_nu - log I_{nu-1}) with log I ~ k: it loses k eps ~ 7e-11 relative at
    # k = 3.3e5, so U = 1 - A (~0.06) is good to ~1e-9 and S, through k (1 - A), to k^2 eps ~ 2e-5
    # absolute out of |S| ~ 2e5 (both confirmed against 40-digit mpmath quadrature).
    assert th.vmf_mean_loss(temperature, LARGE_D) == pytest.approx(energy, rel=3e-9)
    assert th.vmf_sphere_entropy(temperature, LARGE_D) == pytest.approx(entropy, rel=3e-10)


@pytest.mark.parametrize("nu", [0.5, 1.5, 4.0, 30.0, 49.0, 500.0, 21845.0])
def test_log_bessel_matches_power_series(nu):
    kappa = np.logspace(-4, 6, 21)
    got = vmf._log_bessel_i(nu, kappa)
    want = np.array([_log_bessel_series(nu, k) for k in kappa])
    # The fallback's DLMF 10.41.3 expansion with two terms errs by ~1e-7 in log I at nu = 30
    # (measured); direct ive is at round-off, ~|log I| eps.
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=3e-7)


@pytest.mark.parametrize("d", [2, 3, 10, 101, 1000, LARGE_D])
def test_mean_resultant_within_amos_bounds_and_recurrence(d):
    kappa = np.logspace(-6, 7, 261)
    a = th.vmf_mean_resultant(kappa, d)
    lower, upper = _amos_bounds(kappa, d)
    # The lower bound is exact to O(k^3) at small k; the log-difference branch for large d is
    # relative 1e-11 (|log I| eps), the d = 101 expansion branch 2e-8 (measured): allow 1e-7.
    assert np.all(a >= lower * (1.0 - 1e-7))
    assert np.all(a <= upper * (1.0 + 1e-7))
    # Bessel recurrence I_{v-1} - I_{v+1} = (2v/k) I_v  <=>  1/A_d = d/k + A_{d+2}; same budget.
    np.testing.assert_allclose(1.0 / a, d / kappa + th.vmf_mean_resultant(kappa, d + 2), rtol=1e-7)


@pytest.mark.parametrize("d", [3, 10, 100])
def test_vmf_depends_on_mu_norm_only_through_kappa(d):
    temperature, mu_norm = np.array([0.01, 0.3, 2.0]), 2.5
    scaled = temperature / mu_norm
    # U - 1 = -|mu| A(|mu|/T) is linear in |mu| at fixed kappa; S and C_V depend on kappa alone.
    np.testing.assert_allclose(
        th.vmf_mean_loss(temperature, d, mu_norm) - 1.0,
        mu_norm * (th.vmf_mean_loss(scaled, d) - 1.0),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        th.vmf_sphere_entropy(temperature, d, mu_norm), th.vmf_sphere_entropy(scaled, d), rtol=1e-13
    )
    np.testing.assert_allclose(
        th.vmf_heat_capacity(temperature, d, mu_norm), th.vmf_heat_capacity(scaled, d), rtol=1e-13
    )


# --- VMF statistics: limits --------------------------------------------------------------------


def test_vmf_d3_asymptotics_are_exact_up_to_exponentially_small_terms():
    temperature = np.logspace(-6, -2, 9)
    u = th.vmf_mean_loss(temperature, 3)
    s = th.vmf_sphere_entropy(temperature, 3)
    # For d = 3 every power correction vanishes (the O(T^2) coefficient is (d-1)(d-3)/8); what
    # is left is round-off of 1 - A: relative eps/T <= 2e-10 at T = 1e-6.
    np.testing.assert_allclose(u, th.vmf_mean_loss_asymptotic(temperature, 3), rtol=1e-9)
    np.testing.assert_allclose(s, th.vmf_sphere_entropy_asymptotic(temperature, 3), atol=1e-9)


@pytest.mark.parametrize(
    ("d", "temperature"), [(10, [1e-3, 1e-4, 1e-5]), (100, [1e-4, 1e-5, 1e-6])]
)
def test_vmf_asymptotics_improve_linearly_as_temperature_drops(d, temperature):
    temperature = np.asarray(temperature)
    u_err = th.vmf_mean_loss(temperature, d) / th.vmf_mean_loss_asymptotic(temperature, d) - 1.0
    s_err = th.vmf_sphere_entropy(temperature, d) - th.vmf_sphere_entropy_asymptotic(temperature, d)
    # eq. 106-107 are first order; errors must fall by ~10x per decade of T.
    np.testing.assert_allclose(u_err[:-1] / u_err[1:], 10.0, rtol=0.05)
    np.testing.assert_allclose(s_err[:-1] / s_err[1:], 10.0, rtol=0.05)
    # The next order of DLMF 10.40.1: U = R T (1 - (d-3) T / 4), and S follows from dS = dU/T:
    # S = R log(2 pi e T) - (d-1)(d-3) T / 4. The O(T) remainder is ~d^2 T <= 1e-2 here.
    np.testing.assert_allclose(u_err / temperature, -(d - 3) / 4.0, rtol=2e-2)
    np.testing.assert_allclose(s_err / temperature, -(d - 1) * (d - 3) / 4.0, rtol=2e-2)


def test_vmf_large_d_is_finite_monotone_and_bounded():
    temperature = np.logspace(-6, 3, 400)
    u = th.vmf_mean_loss(temperature, LARGE_D)
    s = th.vmf_sphere_entropy(temperature, LARGE_D)
    cv = th.vmf_heat_capacity(temperature, LARGE_D)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(s)) and np.all(np.isfinite(cv))
    assert np.all((u > 0.0) & (u < 1.0))
    # C_V > 0 and below its T -> 0 value R; U and S rise with T (dS = C_V dT / T > 0). S rounds
    # at ~|S| eps ~ 4e-11 where it has flattened out at high T.
    assert np.all((cv > 0.0) & (cv < th.gas_constant(LARGE_D)))
    assert np.all(np.diff(u) > 0.0)
    assert np.all(np.diff(s) > -1e-9)
    # Uniform distribution maximizes entropy on the sphere.
    assert np.all(s <= th.sphere_log_area(LARGE_D) + 1e-9)
    # At T = 1e-6, U differs from (d-1)T/2 by the relative (d-3)T/4 ~ 1.1%.
    assert u[0] / th.vmf_mean_loss_asymptotic(1e-6, LARGE_D) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("d", [3, 10, LARGE_D])
def test_vmf_high_temperature_tends_to_uniform_sphere(d):
    temperature = np.array([1.0, 10.0, 100.0, 1000.0])
    kappa = 1.0 / temperature
    s = th.vmf_sphere_entropy(temperature, d)
    u = th.vmf_mean_loss(temperature, d)
    # Small-k expansion: A = k/d + O(k^3), S = log|S^(d-1)| - k^2/(2d) + O(k^4). The O(k^4)
    # remainder is ~k^4/d^2 <= 1e-2 at k = 1, d = 3; S has round-off ~|S| eps ~ 4e-11 at large d.
    residual = s - (th.sphere_log_area(d) - kappa**2 / (2.0 * d))
    assert np.all(np.abs(residual) <= 1e-9 + 2.0 * kappa**4 / d**2)
    # A = k/d - k^3/(d^2 (d+2)) + ...: relative remainder below k^2.
    assert np.all(np.abs((1.0 - u) / (kappa / d) - 1.0) <= kappa**2 + 1e-9)


def test_sphere_log_area_closed_forms():
    np.testing.assert_allclose(
        th.sphere_log_area(np.array([2, 3, 4, 5])),
        np.log([2.0 * np.pi, 4.0 * np.pi, 2.0 * np.pi**2, 8.0 * np.pi**2 / 3.0]),
        rtol=1e-14,
    )
    # |S^(d+1)| = 2 pi |S^(d-1)| / d, checked up to very large d (gammaln is accurate there).
    d = np.array([3.0, 17.0, 1000.0, LARGE_D])
    np.testing.assert_allclose(
        th.sphere_log_area(d + 2), th.sphere_log_area(d) + np.log(2.0 * np.pi / d), rtol=1e-13
    )


# --- heat capacities and the adiabat -------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 10, 100])
def test_vmf_heat_capacity_is_derivative_of_energy_and_entropy(d):
    temperature = np.logspace(-3, 1, 9)
    h = 1e-4  # relative step: truncation h^2 ~ 1e-8, round-off eps |S| / h ~ 1e-10
    up, down = temperature * (1.0 + h), temperature * (1.0 - h)
    cv = th.vmf_heat_capacity(temperature, d)
    du_dt = (th.vmf_mean_loss(up, d) - th.vmf_mean_loss(down, d)) / (2.0 * h * temperature)
    ds_dt = (th.vmf_sphere_entropy(up, d) - th.vmf_sphere_entropy(down, d)) / (
        2.0 * h * temperature
    )
    # C_V = dU/dT and, for the Gibbs distribution at fixed V, dS = dU / T: T dS/dT = C_V.
    # C_V reaches ~3e-3 at T = 10, d = 3, so the absolute floor is well below it.
    np.testing.assert_allclose(cv, du_dt, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(cv, temperature * ds_dt, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize(
    ("d", "temperature"), [(3, 1e-4), (10, 1e-4), (100, 1e-5), (LARGE_D, 1e-6)]
)
def test_vmf_heat_capacity_tends_to_gas_constant_at_low_temperature(d, temperature):
    # C_V = R (1 - (d-3) T / 2 + O(d^2 T^2)), from U = R T (1 - (d-3) T / 4); d = 3 has no O(T).
    deviation = (d - 3) * temperature / 2.0
    ratio = th.vmf_heat_capacity(temperature, d) / th.heat_capacity_v(d)
    # 1 - A^2 - (d-1) A / k cancels to (d-1)/(2k^2): an error e_A in A costs 4 e_A k^2/(d-1)
    # relative; e_A ~ 1e-16 for small orders, ~1e-12 for scipy's ive at order 2e4 (measured):
    # <= 1e-4 at these (d, T). The O(d^2 T^2) remainder is covered by 5 deviation^2.
    assert ratio == pytest.approx(1.0 - deviation, abs=1e-4 + 5.0 * deviation**2)


@pytest.mark.xfail(strict=True, reason="known limitation: C_V cancels catastrophically at k >> d")
def test_vmf_heat_capacity_large_d_very_low_temperature():
    # At d = 43692, T = 1e-8 (k = 1e8) the error 4 e_A k^2 / (d-1) ~ 1 (e_A ~ 1e-12 from scipy's
    # ive at order 2e4): C_V comes out ~2.7 R instead of ~R. U and S are unaffected (A enters
    # them without the cancellation). Remove this marker if C_V gets a stable low-T evaluation.
    ratio = th.vmf_heat_capacity(1e-8, LARGE_D) / th.heat_capacity_v(LARGE_D)
    assert ratio == pytest.approx(1.0 - (LARGE_D - 3) * 1e-8 / 2.0, abs=1e-3)


def test_heat_capacities_and_adiabatic_index():
    d = np.array([2, 3, 10, LARGE_D])
    np.testing.assert_array_equal(th.heat_capacity_v(d), (d - 1) / 2.0)
    np.testing.assert_allclose(th.heat_capacity_p(d) - th.heat_capacity_v(d), th.gas_constant(d))
    assert th.heat_capacity_v(3) == 1.0
    assert th.adiabatic_index(3) == 2.0
    np.testing.assert_allclose(th.adiabatic_index(d[1:]), 2.0, rtol=1e-15)
    # Away from T -> 0 (eq. 97 with the exact C_V): C_p - C_V = R still, gamma = 1 + R / C_V.
    cv = th.vmf_heat_capacity(np.array([0.1, 1.0, 5.0]), 3)
    np.testing.assert_allclose(th.heat_capacity_p(3, cv) - cv, th.gas_constant(3), rtol=1e-14)
    np.testing.assert_allclose(th.adiabatic_index(3, cv), 1.0 + 1.0 / cv, rtol=1e-14)


@pytest.mark.parametrize("d", [3, 10])
def test_adiabat_fixed_lr(d):
    rng = np.random.default_rng(1)
    eta, lam, sigma2 = 10 ** rng.uniform(-3, -1, 20), 10 ** rng.uniform(-3, -1, 20), 0.7
    gamma = th.adiabatic_index(d)
    r = th.stationary_radius_fixed_lr(eta, lam, sigma2, d)
    invariant = th.adiabatic_invariant(lam, th.volume(r), gamma)
    # eq. 31: p V^gamma = lambda (r*^2/2)^2 = eta sigma^2 (d-1) / 8, exactly proportional to eta.
    np.testing.assert_allclose(invariant / eta, sigma2 * (d - 1) / 8.0, rtol=1e-13)

    # Along an adiabat (eta fixed, lambda varied) the asymptotic total entropy stays constant.
    lam_path = np.logspace(-3, -1, 7)
    r_path = th.stationary_radius_fixed_lr(0.01, lam_path, sigma2, d)
    invariant_path = th.adiabatic_invariant(lam_path, th.volume(r_path), gamma)
    np.testing.assert_allclose(invariant_path, invariant_path[0], rtol=1e-13)
    t_path = th.temperature_fixed_lr(0.01, lam_path, sigma2, d)
    s_path = th.total_entropy(th.vmf_sphere_entropy_asymptotic(t_path, d), r_path, d)
    # S ~ (d-1) * O(5): a few ulps of each term.
    np.testing.assert_allclose(s_path, s_path[0], rtol=0, atol=1e-12 * d)


# --- temperature, radius, pressure: the ideal gas ------------------------------------------------


def _random_hyperparameters(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return (
        10 ** rng.uniform(-4, 0, n),  # eta or eta_eff
        10 ** rng.uniform(-5, -1, n),  # lambda
        10 ** rng.uniform(-2, 2, n),  # sigma^2
        rng.choice([2, 3, 10, 1000, LARGE_D], n),  # d
    )


def test_fixed_lr_temperature_radius_and_ideal_gas_law():
    eta, lam, sigma2, d = _random_hyperparameters()
    temperature = th.temperature_fixed_lr(eta, lam, sigma2, d)
    radius = th.stationary_radius_fixed_lr(eta, lam, sigma2, d)
    # Products of a few correctly rounded operations: 1e-13 relative is generous.
    np.testing.assert_allclose(
        temperature, np.sqrt(eta * lam * sigma2 / (2.0 * (d - 1))), rtol=1e-13
    )
    np.testing.assert_allclose(radius**4, eta * sigma2 * (d - 1) / (2.0 * lam), rtol=1e-13)
    # eq. 20: T = tau / r*^2 with tau = eta sigma^2 / 2.
    np.testing.assert_allclose(temperature, eta * sigma2 / 2.0 / radius**2, rtol=1e-13)
    # eq. 21: pV = RT with p = lambda.
    np.testing.assert_allclose(
        lam * th.volume(radius), th.gas_constant(d) * temperature, rtol=1e-13
    )
    np.testing.assert_allclose(
        th.ideal_gas_pressure(temperature, th.volume(radius), d), lam, rtol=1e-13
    )


def test_fixed_elr_temperature_radius_and_ideal_gas_law():
    eta_eff, lam, sigma2, d = _random_hyperparameters(seed=1)
    temperature = th.temperature_fixed_elr(eta_eff, sigma2)
    radius = th.stationary_radius_fixed_elr(eta_eff, lam, sigma2, d)
    np.testing.assert_allclose(temperature, eta_eff * sigma2 / 2.0, rtol=1e-15)
    # eq. 12: r* = sqrt(T (d-1) / lambda); eq. 13: pV = RT.
    np.testing.assert_allclose(radius**2, temperature * (d - 1) / lam, rtol=1e-13)
    np.testing.assert_allclose(
        lam * th.volume(radius), th.gas_constant(d) * temperature, rtol=1e-13
    )
    # Fixed-ELR stationarity is where the fixed-sphere effective pressure equals lambda.
    np.testing.assert_allclose(
        th.effective_pressure_sphere(eta_eff, radius, sigma2, d), lam, rtol=1e-13
    )


def test_fixed_sphere_effective_pressure_is_ideal_gas_pressure():
    eta_eff, _, sigma2, d = _random_hyperparameters(seed=2)
    radius = 2.0 ** np.random.default_rng(3).uniform(-2, 2, eta_eff.shape)
    temperature = th.temperature_fixed_sphere(eta_eff, sigma2)
    np.testing.assert_array_equal(temperature, th.temperature_fixed_elr(eta_eff, sigma2))
    pressure = th.effective_pressure_sphere(eta_eff, radius, sigma2, d)
    # eq. 84: lambda_eff = T (d-1) / (2V); also eq. 121 with Tr Sigma = sigma^2 (d-1).
    np.testing.assert_allclose(
        pressure, th.ideal_gas_pressure(temperature, th.volume(radius), d), rtol=1e-13
    )
    np.testing.assert_allclose(
        pressure, th.effective_pressure_from_trace(eta_eff, radius, sigma2 * (d - 1)), rtol=1e-13
    )


def test_volume_radius_roundtrip_and_total_entropy():
    radius = np.array([0.25, 1.0, 3.0])
    np.testing.assert_allclose(th.volume(radius), radius**2 / 2.0, rtol=1e-15)
    np.testing.assert_allclose(th.radius_from_volume(th.volume(radius)), radius, rtol=1e-15)
    # eq. 28: S = S_sphere + (d-1) log r; the unit sphere adds nothing.
    assert th.total_entropy(1.5, 1.0, 10) == 1.5
    np.testing.assert_allclose(th.total_entropy(1.5, radius, 10), 1.5 + 9 * np.log(radius))
    assert th.helmholtz_energy(2.0, 0.5, 3.0) == pytest.approx(0.5)
    assert th.gibbs_energy(2.0, 0.5, 3.0, 0.1, 4.0) == pytest.approx(0.9)


# --- trace form and the discretization correction (appendix G) ------------------------------------


def test_radius_from_trace_matches_isotropic_radii():
    eta, lam, sigma2, d = _random_hyperparameters(seed=4)
    trace = sigma2 * (d - 1)  # isotropic noise: Tr Sigma = sigma^2 (d - 1)
    np.testing.assert_allclose(
        th.stationary_radius_from_trace("fixed-lr", eta, lam, trace),
        th.stationary_radius_fixed_lr(eta, lam, sigma2, d),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        th.stationary_radius_from_trace("fixed-elr", eta, lam, trace),
        th.stationary_radius_fixed_elr(eta, lam, sigma2, d),
        rtol=1e-13,
    )


def test_discretization_corrections():
    eta, lam, sigma2, d = _random_hyperparameters(seed=5)
    trace = sigma2 * (d - 1)
    radius = np.full_like(eta, 1.7)
    zero = np.zeros_like(eta)
    grad2 = 0.3 * trace  # any positive E||grad L(w_bar)||^2

    # With no mean gradient the discrete radii and pressure are the SDE ones (eq. 119-121) ...
    np.testing.assert_allclose(
        th.corrected_radius_fixed_lr(eta, lam, trace, zero),
        th.stationary_radius_from_trace("fixed-lr", eta, lam, trace),
        rtol=1e-14,
    )
    np.testing.assert_allclose(
        th.corrected_radius_fixed_elr(eta, lam, trace, zero),
        th.stationary_radius_from_trace("fixed-elr", eta, lam, trace),
        rtol=1e-14,
    )
    np.testing.assert_allclose(
        th.corrected_effective_pressure(eta, radius, trace, zero),
        th.effective_pressure_from_trace(eta, radius, trace),
        rtol=1e-14,
    )
    # ... and the mean gradient only adds to Tr Sigma, so everything grows, by a known factor.
    lr = th.corrected_radius_fixed_lr(eta, lam, trace, grad2)
    elr = th.corrected_radius_fixed_elr(eta, lam, trace, grad2)
    pressure = th.corrected_effective_pressure(eta, radius, trace, grad2)
    assert np.all(lr > th.stationary_radius_from_trace("fixed-lr", eta, lam, trace))
    assert np.all(elr > th.stationary_radius_from_trace("fixed-elr", eta, lam, trace))
    assert np.all(pressure > th.effective_pressure_from_trace(eta, radius, trace))
    np.testing.assert_allclose(
        lr, th.stationary_radius_from_trace("fixed-lr", eta, lam, trace + grad2), rtol=1e-14
    )
    np.testing.assert_allclose(
        elr, th.stationary_radius_from_trace("fixed-elr", eta, lam, trace + grad2), rtol=1e-14
    )
    np.testing.assert_allclose(
        pressure, th.effective_pressure_from_trace(eta, radius, trace + grad2), rtol=1e-14
    )


def test_radius_from_trace_rejects_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        th.stationary_radius_from_trace("fixed-sphere", 0.1, 0.01, 3.0)
    with pytest.raises(ValueError, match="protocol"):
        th.stationary_radius_from_trace("fixed_lr", 0.1, 0.01, 3.0)


# --- thermodynamic potentials -------------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 100])
def test_gibbs_radius_part_is_minimized_at_ideal_gas_volume(d):
    temperature, pressure = 0.03, 0.02
    v_star = th.gas_constant(d) * temperature / pressure
    volumes = v_star * np.exp(np.linspace(-1.0, 1.0, 2001))  # log step 1e-3
    # G with U and S_sphere held fixed; the radius enters via S = S_sphere + (d-1) log r (eq. 14).
    s_total = th.total_entropy(0.0, th.radius_from_volume(volumes), d)
    g = th.gibbs_energy(0.0, temperature, s_total, pressure, volumes)
    np.testing.assert_allclose(
        g, -temperature * (d - 1) / 2.0 * np.log(2.0 * volumes) + pressure * volumes, rtol=1e-12
    )
    # The grid's argmin lies within one log step of V = RT/p.
    assert abs(np.log(volumes[np.argmin(g)] / v_star)) <= 1e-3 + 1e-12


@pytest.mark.parametrize("d", [3, 10])
def test_vmf_minimizes_helmholtz_energy_among_vmf_states(d):
    # eq. 7 / T4: at temperature T the Gibbs (VMF) state at T has the lowest F = U - T S.
    temperature = 0.2
    trial = temperature * np.exp(np.linspace(-1.5, 1.5, 301))  # includes T itself (index 150)
    f = th.helmholtz_energy(
        th.vmf_mean_loss(trial, d), temperature, th.vmf_sphere_entropy(trial, d)
    )
    assert np.argmin(f) == 150


def test_fixed_lr_stationary_states_minimize_gibbs_on_paper_grid():
    # V2 (eq. 22), as in fig. 1e: d = 3, sigma = 1, 17 log-spaced eta and lambda in [1e-3, 1e-1].
    d, sigma2 = 3, 1.0
    grid = np.logspace(-3, -1, 17)
    eta, lam = np.meshgrid(grid, grid, indexing="ij")  # (17, 17)
    temperature = th.temperature_fixed_lr(eta, lam, sigma2, d)
    radius = th.stationary_radius_fixed_lr(eta, lam, sigma2, d)
    energy = th.vmf_mean_loss(temperature, d)
    entropy = th.total_entropy(th.vmf_sphere_entropy(temperature, d), radius, d)
    volume = th.volume(radius)
    for i, j in [(0, 0), (8, 8), (3, 12), (16, 0), (16, 16)]:
        g = th.gibbs_energy(energy, temperature[i, j], entropy, lam[i, j], volume)
        assert np.unravel_index(np.argmin(g), g.shape) == (i, j)


# --- Maxwell relations ----------------------------------------------------------------------------


def _fixed_lr_entropy(log_eta, log_lam, d, *, exact, sigma2=None):
    """Total stationary entropy S(eta, lambda) of the isotropic fixed-LR model (eq. 19-20, 28).

    ``sigma2`` is an optional function of eta * lambda (the paper's sigma(eta lambda), eq. 86).
    """
    eta, lam = np.exp(log_eta), np.exp(log_lam)
    s2 = 0.5 if sigma2 is None else sigma2(eta * lam)
    temperature = th.temperature_fixed_lr(eta, lam, s2, d)
    sphere = (th.vmf_sphere_entropy if exact else th.vmf_sphere_entropy_asymptotic)(temperature, d)
    return th.total_entropy(sphere, th.stationary_radius_fixed_lr(eta, lam, s2, d), d)


@pytest.mark.parametrize("d", [3, 100, LARGE_D])
def test_maxwell_fixed_lr_isotropic_slopes(d):
    log_eta, log_lam, h = np.log(0.01), np.log(0.003), 1e-3

    def s(de, dl):
        return _fixed_lr_entropy(log_eta + de, log_lam + dl, d, exact=False)

    d_eta = (s(h, 0) - s(-h, 0)) / (2 * h)
    d_lam = (s(0, h) - s(0, -h)) / (2 * h)
    slope_eta, slope_lam = th.entropy_slopes_fixed_lr_isotropic(d)
    # S is exactly linear in log eta, log lambda here; round-off eps |S| / h ~ 1e-12 (d-1).
    tol = 1e-9 * (d - 1)
    assert d_eta == pytest.approx(slope_eta, abs=tol)  # eq. 29: (d-1)/2
    assert d_lam == pytest.approx(slope_lam, abs=tol)  # eq. 29: 0
    assert slope_eta == pytest.approx((d - 1) / 2.0) and slope_lam == 0.0
    assert d_eta - d_lam == pytest.approx(th.maxwell_target_fixed_lr(d), abs=tol)  # eq. 23


@pytest.mark.parametrize("d", [3, 10])
def test_maxwell_fixed_lr_holds_with_exact_entropy_and_varying_noise(d):
    # eq. 86-96: the difference of slopes is (d-1)/2 for any S_sphere(T) and any sigma(eta lambda).
    def sigma2(x):
        return 1.0 + 3.0 * x**0.3

    log_eta, log_lam, h = np.log(0.05), np.log(0.02), 1e-4

    def s(de, dl):
        return _fixed_lr_entropy(log_eta + de, log_lam + dl, d, exact=True, sigma2=sigma2)

    d_eta = (s(h, 0) - s(-h, 0)) / (2 * h)
    d_lam = (s(0, h) - s(0, -h)) / (2 * h)
    # Central differences: truncation ~h^2 S''' ~ 1e-8, round-off eps |S| / h ~ 1e-11.
    assert d_eta - d_lam == pytest.approx(th.maxwell_target_fixed_lr(d), abs=1e-6)
    # Here T is not small: the individual slopes are off eq. 29, only their difference is fixed.
    assert abs(d_lam) > 1e-3


@pytest.mark.parametrize(("d", "exact"), [(3, False), (3, True), (10, True), (LARGE_D, False)])
def test_maxwell_fixed_elr(d, exact):
    eta_eff, sigma2, h = 0.02, 1.3, 1e-4
    temperature = th.temperature_fixed_elr(eta_eff, sigma2)
    sphere = (th.vmf_sphere_entropy if exact else th.vmf_sphere_entropy_asymptotic)(temperature, d)

    def s(log_lam):
        radius = th.stationary_radius_fixed_elr(eta_eff, np.exp(log_lam), sigma2, d)
        return th.total_entropy(sphere, radius, d)

    slope = (s(np.log(0.01) + h) - s(np.log(0.01) - h)) / (2 * h)
    # S is exactly linear in log lambda at fixed eta_eff; round-off eps |S| / h ~ 1e-11 (d-1).
    assert slope == pytest.approx(th.maxwell_target_fixed_elr(d), abs=1e-8 * (d - 1))  # eq. 85
    assert th.maxwell_target_fixed_elr(d) == -(d - 1) / 2.0


# --- API conventions ------------------------------------------------------------------------------


def test_gas_constant():
    assert th.gas_constant(3) == 1.0
    np.testing.assert_array_equal(th.gas_constant(np.array([2, 11])), [0.5, 5.0])
    assert th.maxwell_target_fixed_lr(11) == 5.0


@pytest.mark.parametrize("func", [th.vmf_mean_loss, th.vmf_sphere_entropy, th.vmf_heat_capacity])
def test_vmf_broadcasts_over_temperature_and_dimension(func):
    temperature = np.array([1e-5, 1e-3, 0.1, 2.0, 1e3])[:, None]  # (5, 1)
    d = np.array([2, 3, 10, 1000, LARGE_D])  # (5,): mixes the ive and the expansion branches
    out = func(temperature, d)
    assert out.shape == (5, 5)
    expected = np.array([[func(t, k) for k in d] for t in temperature[:, 0]])
    np.testing.assert_array_equal(out, expected)


SCALAR_CALLS = [
    (th.gas_constant, (3,)),
    (th.temperature_fixed_lr, (0.1, 0.01, 1.0, 3)),
    (th.temperature_fixed_elr, (0.1, 1.0)),
    (th.temperature_fixed_sphere, (0.1, 1.0)),
    (th.stationary_radius_fixed_lr, (0.1, 0.01, 1.0, 3)),
    (th.stationary_radius_fixed_elr, (0.1, 0.01, 1.0, 3)),
    (th.stationary_radius_from_trace, ("fixed-lr", 0.1, 0.01, 2.0)),
    (th.corrected_radius_fixed_lr, (0.1, 0.01, 2.0, 0.5)),
    (th.corrected_radius_fixed_elr, (0.1, 0.01, 2.0, 0.5)),
    (th.volume, (2.0,)),
    (th.radius_from_volume, (2.0,)),
    (th.effective_pressure_sphere, (0.1, 2.0, 1.0, 3)),
    (th.effective_pressure_from_trace, (0.1, 2.0, 2.0)),
    (th.corrected_effective_pressure, (0.1, 2.0, 2.0, 0.5)),
    (th.ideal_gas_pressure, (0.1, 2.0, 3)),
    (th.total_entropy, (1.0, 2.0, 3)),
    (th.sphere_log_area, (3,)),
    (th.vmf_mean_resultant, (2.0, 3)),
    (th.vmf_mean_loss, (0.1, 3)),
    (th.vmf_sphere_entropy, (0.1, 3)),
    (th.vmf_mean_loss_asymptotic, (0.1, 3)),
    (th.vmf_sphere_entropy_asymptotic, (0.1, 3)),
    (th.vmf_heat_capacity, (0.1, 3)),
    (th.heat_capacity_v, (3,)),
    (th.heat_capacity_p, (3,)),
    (th.adiabatic_index, (3,)),
    (th.adiabatic_invariant, (0.1, 2.0, 2.0)),
    # The expansion branch at large d used to fail on 0-d input (NumPy scalar item assignment).
    (th.vmf_mean_resultant, (1e-3, LARGE_D)),
    (th.vmf_mean_loss, (1e3, LARGE_D)),
    (th.vmf_sphere_entropy, (1e3, LARGE_D)),
    (th.vmf_heat_capacity, (1e-5, LARGE_D)),
]


@pytest.mark.parametrize(
    ("func", "args"),
    SCALAR_CALLS,
    ids=[f"{f.__name__}-{i}" for i, (f, _) in enumerate(SCALAR_CALLS)],
)
def test_scalar_in_scalar_out(func, args):
    out = func(*args)
    assert np.ndim(out) == 0
    assert np.isfinite(float(out))


@pytest.mark.parametrize("func", [th.vmf_mean_loss, th.vmf_sphere_entropy, th.vmf_heat_capacity])
@pytest.mark.parametrize("temperature", [0.0, -1.0, np.array([0.1, 0.0]), [1.0, -2.0]])
def test_vmf_rejects_nonpositive_temperature(func, temperature):
    with pytest.raises(ValueError, match="temperature"):
        func(temperature, 3)


def test_all_public_names_exist():
    for name in th.__all__:
        value = getattr(th, name)
        # functions and classes, or a constant spelled in capitals (the optimizer names)
        assert callable(value) or (name.isupper() and isinstance(value, tuple))


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_temperature_must_be_positive_and_finite_everywhere(bad):
    for fn in (th.vmf_mean_loss, th.vmf_sphere_entropy, th.vmf_heat_capacity,
               th.vmf_mean_loss_asymptotic, th.vmf_sphere_entropy_asymptotic):
        with pytest.raises(ValueError, match="temperature must be positive"):
            fn(bad, 3)


def test_mu_norm_must_be_positive():
    with pytest.raises(ValueError, match="mu_norm"):
        th.vmf_mean_loss(0.1, 3, mu_norm=0.0)
