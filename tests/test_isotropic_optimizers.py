"""The isotropic simulator under heavy-ball and Nesterov momentum and AdamW: the compiled step
against torch.optim itself, SGD unchanged, and stationary values against the closed forms."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from thermosgd.isotropic import IsotropicConfig, _rng, simulate, unit_vector
from thermosgd.isotropic._kernel import OPTIMIZER_CODES, _advance
from thermosgd.isotropic.simulator import _optimizer_arrays
from thermosgd.protocols import make_protocol
from thermosgd.results.compat import read_stationary
from thermosgd.theory import make_optimizer

V0_1 = Path(__file__).parent / "data" / "v0_1" / "isotropic"


def _torch_reference(name, protocol, w, state, mu, sigma, steps, optimizer):
    """The same noisy gradients (eq. 24) fed to torch.optim.SGD / AdamW; fixed ELR sets the
    learning rate eta_eff |w|^2 before each step, the sphere projects after it."""
    import torch

    param = torch.nn.Parameter(torch.tensor(w[0], dtype=torch.float64))
    rate = float(protocol.rate[0])
    other = float(np.asarray(protocol.weight_decay_or_radius)[0])
    wd = 0.0 if name == "fixed-sphere" else other
    if optimizer.name == "adamw":
        opt = torch.optim.AdamW([param], lr=rate, betas=(optimizer.momentum, optimizer.beta2),
                                eps=optimizer.eps, weight_decay=wd, foreach=False)
    else:
        opt = torch.optim.SGD([param], lr=rate, momentum=optimizer.momentum, weight_decay=wd,
                              nesterov=optimizer.name == "nesterov", foreach=False)
    for _ in range(steps):
        eps = np.empty(w.shape[1])
        _rng.fill_normal(state[0], eps)
        x = param.detach().numpy()
        r = np.linalg.norm(x)
        wb = x / r
        grad = (mu - (mu @ wb) * wb) / r + sigma * (eps - (eps @ wb) * wb) / r  # eq. 24
        param.grad = torch.tensor(grad)
        if name == "fixed-elr":
            opt.param_groups[0]["lr"] = rate * r * r
        elif name == "fixed-sphere":
            opt.param_groups[0]["lr"] = rate * other * other
        opt.step()
        if name == "fixed-sphere":
            with torch.no_grad():
                param.mul_(other / param.norm())
    return param.detach().numpy()[None, :]


@pytest.mark.parametrize("name,second,optimizer", [
    ("fixed-lr", 0.02, make_optimizer("momentum", momentum=0.8)),
    ("fixed-lr", 0.02, make_optimizer("nesterov", momentum=0.7)),
    ("fixed-elr", 0.02, make_optimizer("momentum", momentum=0.9)),
    ("fixed-sphere", 1.7, make_optimizer("nesterov", momentum=0.9)),
    ("fixed-lr", 0.02, make_optimizer("adamw", momentum=0.9, beta2=0.99, eps=1e-3)),
])
def test_kernel_step_is_torch_optim(name, second, optimizer):
    """The compiled loop's optimizer is torch.optim's, step for step (bias correction included:
    30 steps with beta2 = 0.99 keep 1 - beta2^t far from 1)."""
    d, sigma, rate, steps = 4, 0.8, 0.05, 30
    protocol = make_protocol(name, np.array([rate]), np.array([second]))
    mu = unit_vector(d, 0, 0)
    w = unit_vector(d, 0, 1)[None, :] * (second if name == "fixed-sphere" else 1.3)
    state = _rng.seed_states([(5,)])
    expected = _torch_reference(name, protocol, w.copy(), state.copy(), mu, sigma, steps,
                                optimizer)
    code, hyper, cuts = _optimizer_arrays(optimizer, 1, name == "fixed-sphere")
    logs = [np.zeros((1, 1), np.float32) for _ in range(3)]
    buf = np.zeros((1, d))
    sq = np.zeros((1, d if optimizer.adaptive else 0))
    _advance(w, state, np.ones(1, bool), mu, protocol.code, protocol.rate,
             np.asarray(protocol.weight_decay_or_radius, float), sigma, 0, steps, 10**9, 10**9,
             *logs, np.zeros((1, 1, d)), _rng.ZIG_X, _rng.ZIG_RATIO, code, hyper, cuts, buf, sq,
             np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))
    assert code == OPTIMIZER_CODES[optimizer.name]
    # the same arithmetic up to the order of floating-point operations over 30 steps
    np.testing.assert_allclose(w, expected, rtol=1e-11)


@pytest.mark.parametrize("protocol", ["fixed-lr", "fixed-elr", "fixed-sphere"])
def test_sgd_trajectories_are_those_pinned_by_0_1(protocol):
    """Plain SGD is bit for bit what thermosgd 0.1 wrote (tests/data/v0_1): the optimizer
    machinery leaves the paper's update alone."""
    config = json.loads((V0_1 / protocol / "config.json").read_text())["config"]
    table = simulate(IsotropicConfig(**config), progress=False).table
    pinned = read_stationary(V0_1 / protocol / "stationary.csv")
    for column in ("radius", "U", "lambda_eff", "radius_theory", "temperature", "pressure"):
        np.testing.assert_array_equal(table[column].to_numpy(), pinned[column].to_numpy())
    assert (table["optimizer"] == "sgd").all()
