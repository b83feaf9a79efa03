"""Momentum, Nesterov and AdamW in the engine: the same weights as torch.optim on the same
parameters and batches, per-configuration state in the batch, checkpoints, refusals, and the
optimizer's theory in the logged columns.

Runs use scikit-learn's digits with a ConvNet of width 2 (d = 1530), a few steps each.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thermosgd.nn import Engine, TrainConfig, scale_invariant_parameters, train
from thermosgd.theory import optimizers as opt_theory

TINY = {"model": "convnet", "width": 2, "iterations": 40, "log_every": 20,
        "log_linear_until": 40, "log_points": 0, "queue_size": 4, "queue_every": 5,
        "stationary_logs": 2, "device": "cpu"}
# (optimizer, protocol, rate, weight decay, momentum / beta1)
CASES = [("momentum", "fixed-lr", 0.05, 1e-2, 0.9), ("nesterov", "fixed-lr", 0.05, 1e-2, 0.8),
         ("adamw", "fixed-lr", 2e-3, 1e-1, 0.9), ("momentum", "fixed-elr", 0.005, 1e-2, 0.9),
         ("nesterov", "fixed-elr", 0.005, 1e-2, 0.5)]
STEPS = 6


def _config(optimizer, protocol, rate, wd, beta, seed=0, **extra):
    return TrainConfig(protocol=protocol, learning_rate=rate, weight_decay=wd,
                       optimizer=optimizer, momentum=beta, seed=seed, **(TINY | extra))


def _torch_reference(config, digits, steps):
    """The same start and batches, stepped by torch.optim on the model's own parameters."""
    reference = Engine([TrainConfig(**(config.to_dict() | {
        "optimizer": "sgd", "momentum": None, "beta2": None, "eps": None}))], digits)
    model, params = reference.model, scale_invariant_parameters(reference.model)
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.momentum,
                                config.beta2), eps=config.eps, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                              nesterov=config.optimizer == "nesterov",
                              weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    batches = torch.randint(0, digits.num_train, (steps, config.batch_size), generator=gen)
    for idx in batches:
        if config.protocol == "fixed-elr":  # eq. 8: eta = eta_eff ||w||^2 at every step
            norm2 = sum(p.detach().square().sum() for p in params)
            opt.param_groups[0]["lr"] = config.learning_rate * float(norm2)
        opt.zero_grad()
        F.cross_entropy(model(digits.train_x[idx]), digits.train_y[idx]).backward()
        opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return flat, opt


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("mechanism", ["loop", "vmap"])
def test_engine_steps_as_torch_optim(digits, case, mechanism):
    """Two configurations in one engine (different rates and momenta) against torch.optim.SGD /
    AdamW run on each alone. The update rules are the same elementwise operations; only their
    order of float32 rounding differs (e.g. g * (g (1 - beta2)) against (g g)(1 - beta2)), and
    vmap's convolutions sum in another order: a relative 1e-5 after six steps, where a wrong
    rule (missing bias correction, weight decay outside the buffer) moves weights by > 1e-3.
    vmap is compared after two steps: its differently rounded gradients (1e-7) grow by ~10x a
    step under momentum 0.9 (measured against the loop), as any perturbation does here."""
    optimizer, protocol, rate, wd, beta = case
    steps = STEPS if mechanism == "loop" else 2
    configs = [_config(optimizer, protocol, rate, wd, beta, seed=0),
               _config(optimizer, protocol, 1.5 * rate, wd, beta / 2, seed=1)]
    engine = Engine(configs, digits, mechanism=mechanism)
    engine.advance(steps)
    for j, config in enumerate(configs):
        expected, opt = _torch_reference(config, digits, steps)
        torch.testing.assert_close(engine.weights[j], expected, rtol=1e-5, atol=1e-6)
        if optimizer == "adamw":  # the measured preconditioner: torch's second moments
            v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1)
                           for p in opt.param_groups[0]["params"]])
            c = (v.double() / (1 - config.beta2 ** steps)).sqrt().mean() + config.eps
            assert float(engine.optimizer.preconditioner()[j]) == pytest.approx(float(c),
                                                                                rel=1e-4)


def test_a_wrong_rule_is_caught_by_the_reference(digits):
    """The tolerance above separates: weight decay outside the momentum buffer (SGDW-style)
    differs from torch's SGD by far more than 1e-5 after six steps."""
    config = _config("momentum", "fixed-lr", 0.05, 1e-2, 0.9)
    engine = Engine([config], digits)
    original = engine.optimizer.step

    def decoupled(w, g):
        return original(w, g - engine.optimizer.wd * w) - 0.05 * 1e-2 * w
    engine.optimizer.step = decoupled
    engine.advance(STEPS)
    expected, _ = _torch_reference(config, digits, STEPS)
    assert not torch.allclose(engine.weights[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer,beta", [("momentum", 0.9), ("adamw", 0.9)])
def test_loop_batch_is_bitwise_each_configuration_alone(digits, optimizer, beta):
    """Per-configuration state in (G, d) rows: a batch with different momenta equals each
    configuration trained alone, bit for bit (same kernels, same order)."""
    rate = 2e-3 if optimizer == "adamw" else 0.05
    configs = [_config(optimizer, "fixed-lr", rate * (1 + i), 1e-2, beta - 0.2 * i, seed=i)
               for i in range(3)]
    batch = Engine(configs, digits, mechanism="loop")
    batch.advance(20)
    assert batch.close_window() == {}
    for j, config in enumerate(configs):
        alone = Engine([config], digits)
        alone.advance(20)
        alone.close_window()
        assert torch.equal(batch.weights[j], alone.weights[0])
        for key, state in alone.optimizer.state.items():
            assert torch.equal(batch.optimizer.state[key][j], state[0]), key
        assert batch.windows[j] == pytest.approx(alone.windows[0], rel=0, abs=0, nan_ok=True)


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_checkpoint_carries_the_state_and_resumes_bitwise(digits, tmp_path, optimizer):
    """A run saved at step 20 and resumed in a new engine ends where the uninterrupted one does,
    bit for bit: the buffers (and AdamW's step count) travel in the checkpoint."""
    config = _config(optimizer, "fixed-lr", 1e-2, 1e-2, 0.9)
    whole = Engine([config], digits)
    whole.advance(20)
    whole.close_window()
    whole.save([tmp_path])
    whole.advance(40)
    resumed = Engine([config], digits)
    resumed.load([tmp_path])
    assert resumed.iteration == 20 and resumed.optimizer.steps == 20
    resumed.advance(40)
    assert torch.equal(resumed.weights, whole.weights)
    for key, state in whole.optimizer.state.items():
        assert torch.equal(resumed.optimizer.state[key], state), key


def test_an_sgd_checkpoint_does_not_resume_as_momentum(digits, tmp_path):
    sgd = TrainConfig(protocol="fixed-lr", learning_rate=0.05, weight_decay=1e-2, **TINY)
    engine = Engine([sgd], digits)
    engine.advance(20)
    engine.close_window()
    engine.save([tmp_path])
    momentum = Engine([_config("momentum", "fixed-lr", 0.05, 1e-2, 0.9)], digits)
    # the checkpoint's own record names the plain-SGD run before its missing state is noticed
    with pytest.raises(ValueError, match="optimizer 'sgd' -> 'momentum'|holds no momentum state"):
        momentum.load([tmp_path])


def test_a_run_logs_the_optimizers_theory(digits):
    """Every log row carries the measured angle per step and the optimizer's predictions."""
    config = _config("momentum", "fixed-lr", 0.05, 1e-2, 0.9)
    result = train(config, dataset=digits, progress=False)
    row = result.metrics.iloc[-1]
    opt = config.optimizer_record
    r, d = row["radius"], result.summary["d"]
    # float64 formulas on the logged float inputs: equal to rounding
    assert row["radius_theory"] == pytest.approx(float(opt_theory.optimizer_radius_fixed_lr(
        opt, 0.05, 1e-2, row["trace_cov"], d)), rel=1e-12)
    weight = 0.1 / 1.9  # heavy ball's (1 - beta) / (1 + beta)
    q = row["stoch_grad_norm2"] - (1 - weight) * row["full_grad_norm2"]
    assert row["radius_theory_corrected"] == pytest.approx(float(
        opt_theory.optimizer_radius_fixed_lr(opt, 0.05, 1e-2, q, d)), rel=1e-12)
    assert row["radius_theory_corrected_sgd_form"] == pytest.approx(float(
        opt_theory.optimizer_radius_fixed_lr(opt, 0.05, 1e-2, row["stoch_grad_norm2"], d)),
        rel=1e-12)
    assert row["temperature"] == pytest.approx(float(opt_theory.optimizer_temperature_fixed_lr(
        opt, 0.05, 1e-2, row["sigma2"], d)), rel=1e-12)
    assert row["angular_update_theory"] == pytest.approx(math.sqrt(2 * 0.05 * 1e-2 / 1.9))
    assert 0 < row["angular_update"] < 1 and math.isnan(row["preconditioner"])
    assert r > 0


def test_angle_per_step_is_exact_for_a_known_rotation(digits):
    """The window's angle is 2 asin(chord / 2) of the unit vectors: a rotation by 1e-5 rad in
    float32 weights reads 1e-5 to float32's resolution of the direction (~1e-7 / 1e-5)."""
    from thermosgd.nn.accumulate import WindowSums

    sums = WindowSums(1, "cpu")
    a = torch.zeros(1, 100)
    a[0, 0] = 3.0
    b = a.clone()
    b[0, 0], b[0, 1] = 3.0 * math.cos(1e-5), 3.0 * math.sin(1e-5)
    sums.add(a, torch.zeros_like(a), torch.zeros(1))
    sums.rotate(a, b)
    angle = sums.close(b, 0).means[0]["angular_update"]
    assert angle == pytest.approx(1e-5, rel=1e-2)


@pytest.mark.parametrize("kwargs,message", [
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; choose one of sgd, momentum, nesterov"),
    ({"optimizer": "momentum", "momentum": 1.0}, r"momentum must lie in \[0, 1\)"),
    ({"optimizer": "nesterov", "momentum": 0.0}, "Nesterov momentum needs momentum in"),
    ({"optimizer": "adamw", "beta2": 1.0}, r"beta2 must lie in \(0, 1\)"),
    ({"optimizer": "momentum", "beta2": 0.9}, "beta2 and eps apply to adamw only"),
    ({"momentum": 0.5}, "plain SGD has no momentum"),
    ({"protocol": "fixed-elr", "optimizer": "adamw"},
     "fixed-elr protocol takes the optimizer.s. sgd, momentum, nesterov, not adamw"),
])
def test_bad_optimizer_options_are_one_line_errors(kwargs, message):
    base = {"protocol": "fixed-lr", "learning_rate": 0.1, "weight_decay": 1e-2}
    with pytest.raises(ValueError, match=message):
        TrainConfig(**(base | kwargs))


def test_the_sphere_takes_plain_sgd_only():
    with pytest.raises(ValueError, match="fixed-sphere protocol takes the optimizer.s. sgd, "
                                         "not momentum"):
        TrainConfig(protocol="fixed-sphere", learning_rate=0.01, radius=1.0, optimizer="momentum")


def test_defaults_are_torchs_and_sgd_records_no_optimizer_options():
    sgd = TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2, momentum=0)
    assert (sgd.momentum, sgd.beta2, sgd.eps) == (None, None, None)
    adamw = TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2,
                        optimizer="adamw")
    assert (adamw.momentum, adamw.beta2, adamw.eps) == (0.9, 0.999, 1e-8)
    assert adamw.optimizer_record == opt_theory.Optimizer("adamw", 0.9, 0.999, 1e-8)
    assert np.isclose(TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2,
                                  optimizer="momentum").momentum, 0.9)
