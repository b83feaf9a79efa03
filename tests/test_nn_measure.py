"""Log schedule, the Tr Sigma / full-gradient estimator against closed forms, state columns."""

import numpy as np
import pandas as pd
import pytest
import torch

from thermosgd import theory
from thermosgd.nn import measure
from thermosgd.results.rundir import stationary_summary
from thermosgd.protocols import make_protocol


def test_log_schedule_is_the_papers():
    """Appendix F: every 200 iterations up to 1e4 (50 logs), then 150 log-spaced to the end."""
    points = measure.log_schedule(1_000_000)
    assert len(points) == 200
    assert points[:50].tolist() == list(range(200, 10_001, 200))
    assert points[-1] == 1_000_000 and np.all(np.diff(points) > 0)
    ratios = points[51:] / points[50:-1]
    np.testing.assert_allclose(ratios, 100 ** (1 / 150), rtol=2e-3)  # rounding to integers


def test_log_schedule_short_runs_end_at_the_last_iteration():
    assert measure.log_schedule(450, every=200).tolist() == [200, 400, 450]
    assert measure.log_schedule(7).tolist() == [7]
    with pytest.raises(ValueError):
        measure.log_schedule(0)


class _Linear(torch.nn.Module):
    """Logits = W x without normalization: a batch gradient is exactly the mean of per-sample
    gradients, so the population covariance is known in closed form."""

    def __init__(self, features, classes):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, features, dtype=torch.float64))
        self.register_buffer("running", torch.zeros(3))

    def forward(self, x):
        self.running.add_(1.0)  # a buffer that the measurement must leave untouched
        return x @ self.weight.T


def test_trace_and_full_gradient_match_the_population_values():
    """Tr Sigma (unbiased for a with-replacement batch of B) and ||grad L||^2 against the exact
    population values from per-sample gradients; the reported standard error must cover it.

    Radius 2 checks the P1 rescaling: both are reported for w_bar, i.e. times ||w||^2."""
    torch.manual_seed(1)
    n, b, features, classes = 600, 16, 5, 3
    x = torch.randn(n, features, dtype=torch.float64)
    y = torch.randint(0, classes, (n,))
    model = _Linear(features, classes)
    with torch.no_grad():
        model.weight.mul_(2.0 / model.weight.norm())
    params = [model.weight]
    per_sample = torch.stack([torch.autograd.grad(
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)[0].reshape(-1)
        for i in range(n)])  # (n, d)
    mean = per_sample.mean(0)
    trace_exact = 4.0 * (per_sample - mean).square().sum(1).mean().item() / b
    grad2_exact = 4.0 * (mean @ mean).item()
    model.running.zero_()
    stats = measure.gradient_statistics(model, params, x, y, batch_size=b, passes=40,
                                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.running, torch.zeros(3))
    assert stats["radius"] == pytest.approx(2.0)
    # 40 passes x 37 batches: relative SE ~ 1.5 %; 4 reported SEs is a generous band
    assert abs(stats["trace_cov"] - trace_exact) < 4 * stats["trace_cov_se"]
    assert stats["trace_cov_se"] < 0.05 * trace_exact
    assert stats["full_grad_norm2"] == pytest.approx(grad2_exact, rel=0.02)


def test_pass_estimator_is_unbiased_over_random_partitions():
    """E of the one-pass estimate over many random partitions equals sigma_pop^2 / B, including
    the finite-population factors (n - 1) / n and (n - K B) / (n - 1) (module docstring)."""
    rng = np.random.default_rng(0)
    n, b, d = 50, 8, 4  # K = 6 batches, 2 samples left out of each pass
    pop = rng.normal(size=(n, d)) + 1.0
    target_trace = ((pop - pop.mean(0)) ** 2).sum(1).mean() / b
    target_grad2 = float(pop.mean(0) @ pop.mean(0))
    k = n // b
    traces, grads = [], []
    for _ in range(20000):
        g = pop[rng.permutation(n)[: k * b]].reshape(k, b, d).mean(1)
        t, g2 = measure._pass_estimates(torch.from_numpy(g.sum(0)),
                                        torch.tensor(float((g * g).sum())), float(k), n, b)
        traces.append(float(t))
        grads.append(float(g2))
    # 20000 draws: Monte-Carlo relative SE ~ 0.5 % (trace), << 0.5 % (gradient)
    assert np.mean(traces) == pytest.approx(target_trace, rel=0.02)
    assert np.mean(grads) == pytest.approx(target_grad2, rel=0.01)


@pytest.mark.parametrize("name,second", [("fixed-lr", 1e-3), ("fixed-elr", 1e-3),
                                         ("fixed-sphere", 2.0)])
def test_state_columns_follow_the_protocols_theory(name, second):
    d, trace, grad2, stoch, radius = 1001, 50.0, 2.0, 60.0, 1.7
    protocol = make_protocol(name, 0.01, second)
    cols = measure.state_columns(protocol, d, radius=radius, trace_cov=trace,
                                 full_grad_norm2=grad2, stoch_grad_norm2=stoch, lambda_eff=3e-3)
    sigma2 = trace / (d - 1)
    assert cols["sigma2"] == sigma2
    assert cols["temperature"] == pytest.approx(float(protocol.temperature(sigma2, d)))
    assert cols["volume"] == pytest.approx(radius**2 / 2)
    if name == "fixed-lr":  # eq. 20 and 119
        assert cols["radius_theory"] == pytest.approx((0.01 * trace / (2 * second)) ** 0.25)
        assert cols["radius_theory_corrected"] == pytest.approx(
            (0.01 * stoch / (2 * second)) ** 0.25)
        assert cols["radius_theory_corrected_logpoint"] == pytest.approx(
            theory.corrected_radius_fixed_lr(0.01, second, trace, grad2))
    elif name == "fixed-elr":  # eq. 12 and 120
        assert cols["radius_theory"] == pytest.approx((0.01 * trace / (2 * second)) ** 0.5)
        assert cols["radius_theory_corrected"] == pytest.approx(
            (0.01 * stoch / (2 * second)) ** 0.5)
        assert cols["radius_theory_corrected_logpoint"] == pytest.approx(
            theory.corrected_radius_fixed_elr(0.01, second, trace, grad2))
    else:
        assert cols["pressure"] == 3e-3 and cols["radius_theory"] == second
        # ideal-gas lambda_eff = T (d - 1) / (2 V) = eta_eff Tr Sigma / (2 r^2) (eq. 84, 121)
        assert cols["lambda_eff_theory"] == pytest.approx(
            theory.ideal_gas_pressure(cols["temperature"], second**2 / 2, d))
        assert cols["lambda_eff_theory_corrected"] == pytest.approx(
            0.01 * stoch / (2 * second**2))
        assert cols["lambda_eff_theory_corrected_logpoint"] == pytest.approx(
            theory.corrected_effective_pressure(0.01, second, trace, grad2))


def test_stationary_summary_skips_missing_entropy():
    table = pd.DataFrame({"iteration": [1, 2, 3, 4], "radius": [9.0, 1.0, 2.0, 3.0],
                          "entropy": [np.nan, np.nan, 5.0, 7.0]})
    summary = stationary_summary(table, logs=3)
    assert summary == {"radius": 2.0, "entropy": 6.0}
    assert stationary_summary(table.assign(entropy=np.nan), logs=2)["entropy"] is None
