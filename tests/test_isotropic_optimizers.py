"""The isotropic simulator under heavy-ball and Nesterov momentum and AdamW: the compiled step
against torch.optim itself, SGD unchanged, and stationary values against the closed forms."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
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


def _small(protocol, optimizer, **kw):
    base = dict(seeds=(0,), iterations=100_000, log_every=50, stationary_logs=1000,
                queue_size=300, queue_every=50, entropy_every=25_000, entropy_average=3,
                optimizer=optimizer)
    if protocol == "fixed-sphere":
        base.update(learning_rates=(0.001, 0.003), radii=(0.5, 2.0))
    else:
        base.update(learning_rates=(0.003, 0.01), weight_decays=(0.01, 0.04))
    return IsotropicConfig(protocol=protocol, **(base | kw))


@pytest.mark.parametrize("protocol,name", [("fixed-lr", "momentum"), ("fixed-lr", "nesterov"),
                                           ("fixed-elr", "momentum"),
                                           ("fixed-sphere", "momentum")])
def test_momentum_stationary_state_is_sgd_at_the_longer_step(protocol, name):
    """d = 3, beta = 0.9: r* (or lambda_eff on the sphere), U and the angle per step against
    the SGD-equivalent closed forms. eta' lambda >= 3e-4 relaxes within ~1e4 steps; tolerances
    ~3x the seed-to-seed spread of 1e5-step runs, plus ~2 % of discretization bias at the
    largest step (T = 0.05)."""
    table = simulate(_small(protocol, make_optimizer(name, momentum=0.9)), progress=False).table
    assert (table["status"] == "finished").all() and (table["optimizer"] == name).all()
    quantity = "lambda_eff" if protocol == "fixed-sphere" else "radius"
    np.testing.assert_allclose(table[quantity], table[f"{quantity}_theory"], rtol=0.06)
    np.testing.assert_allclose(table["U"], table["U_theory"], rtol=0.12)
    np.testing.assert_allclose(table["angular_update"], table["angular_update_theory"],
                               rtol=0.06)


def test_adamw_in_higher_dimension_holds_the_noise_independent_radius():
    """d = 20: the noise spreads over the coordinates, so r*^2 = eta d / (2 lambda) and
    c = sqrt(Tr Sigma / d) / r*; Z = pV/(RT) with p = lambda c is 1. AdamW's step is
    eta-sized whatever the noise, so the tolerances are those of momentum."""
    cfg = _small("fixed-lr", make_optimizer("adamw", momentum=0.9), dim=20,
                 learning_rates=(0.003, 0.01), weight_decays=(0.03, 0.1))
    table = simulate(cfg, progress=False).table
    np.testing.assert_allclose(table["radius"], table["radius_theory"], rtol=0.03)
    np.testing.assert_allclose(table["preconditioner"], table["preconditioner_theory"], rtol=0.03)
    np.testing.assert_allclose(table["compressibility"], 1.0, atol=0.06)
    np.testing.assert_allclose(table["angular_update"], table["angular_update_theory"],
                               rtol=0.06)


def test_config_keeps_adamw_to_fixed_lr_and_reads_its_record():
    adamw = make_optimizer("adamw")
    for protocol in ("fixed-elr", "fixed-sphere"):
        with pytest.raises(ValueError, match="adamw is defined for the fixed-lr protocol only"):
            _small(protocol, adamw)
    config = _small("fixed-lr", adamw.to_dict())
    assert config.optimizer == adamw
    assert dataclasses.replace(config, optimizer="sgd").optimizer == make_optimizer("sgd")


TINY = ["--iterations", "6000", "--queue-size", "40", "--queue-every", "25",
        "--entropy-every", "2000", "--entropy-average", "2", "--stationary-logs", "40",
        "--no-progress"]
LR = ["--protocol", "fixed-lr", "--lr", "0.01", "0.03", "--wd", "0.01", "0.1"]


@pytest.mark.parametrize("args,message", [
    (LR + ["--optimizer", "momentum", "--momentum", "1.0"], "momentum must lie in [0, 1)"),
    (LR + ["--optimizer", "momentum", "--momentum", "-0.1"], "momentum must lie in [0, 1)"),
    (LR + ["--optimizer", "adamw", "--beta2", "1.0"], "beta2 must lie in (0, 1)"),
    (LR + ["--optimizer", "nesterov", "--momentum", "0"], "Nesterov momentum needs momentum"),
    (LR + ["--optimizer", "sgd", "--momentum", "0.9"], "plain SGD has no momentum"),
    (LR + ["--optimizer", "momentum", "--beta2", "0.9"], "beta2 and eps apply to adamw only"),
    (["--protocol", "fixed-elr", "--lr", "0.01", "--wd", "0.01", "--optimizer", "adamw"],
     "adamw is defined for the fixed-lr protocol only"),
    (["--protocol", "fixed-sphere", "--lr", "0.01", "--radius", "1", "--optimizer", "adamw"],
     "adamw is defined for the fixed-lr protocol only"),
])
def test_bad_optimizer_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    from thermosgd.cli import main

    out = tmp_path / "run"
    commands = [["simulate", *args]]
    if "--protocol" not in args[args.index("--optimizer"):] and "protocol only" not in message:
        # reproduce runs the protocols the optimizer defines (AdamW: fixed LR), so only the
        # optimizer's own options can be wrong there
        commands.append(["reproduce", "isotropic", *args[args.index("--optimizer"):]])
    for command in commands:
        with pytest.raises(SystemExit) as exc:
            main([*command, "--out", str(out), "--no-progress"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_sgd_and_momentum_report_side_by_side(tmp_path, capsys):
    """A folder holding an SGD and a momentum result: each is checked against its own theory,
    and the report puts their checks in one table."""
    from thermosgd.cli import main

    for name, extra in (("sgd", []), ("momentum", ["--optimizer", "momentum", "--momentum",
                                                   "0.5"])):
        assert main(["simulate", *LR, *extra, "--out", str(tmp_path / name), *TINY]) == 0
    table = pd.read_csv(tmp_path / "momentum" / "fixed-lr" / "stationary.csv")
    assert set(table["optimizer"]) == {"momentum"} and set(table["momentum"]) == {0.5}
    assert {"angular_update", "angular_update_theory"} <= set(table.columns)
    assert main(["report", str(tmp_path), "--bootstrap", "0"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Side by side: fixed LR" in report
    assert "| check | sgd (sgd) | momentum (momentum(beta=0.5)) |" in report  # SGD first
    assert "momentum(beta=0.5)" in report.split("## Side by side")[0]  # the setup's summary


def test_a_grid_over_beta_runs_each_beta_as_alone(tmp_path, capsys):
    """momenta=(0.5, 0.9) adds a beta axis (after lambda, before the seed); each point follows the
    trajectory it has in a run of its beta alone (common noise: the stream does not depend on
    beta), with its own beta's theory. The CLI takes several --momentum values, and the report
    analyses each beta apart and side by side."""
    from thermosgd.cli import main
    from thermosgd.isotropic import grid_momenta

    base = _small("fixed-lr", make_optimizer("momentum", momentum=0.5), iterations=30_000,
                  stationary_logs=200, queue_size=100, entropy_every=10_000, entropy_average=1)
    grid = dataclasses.replace(base, momenta=(0.5, 0.9))
    assert grid.grid_size == 8 and grid_momenta(grid).tolist() == [0.5, 0.9] * 4
    both = simulate(grid, progress=False).table
    alone = simulate(dataclasses.replace(base, optimizer=make_optimizer("momentum", momentum=0.9)),
                     progress=False).table
    part = both[both["momentum"] == 0.9].reset_index(drop=True)
    for column in ("radius", "U", "radius_theory", "angular_update_theory"):
        np.testing.assert_array_equal(part[column].to_numpy(), alone[column].to_numpy())
    with pytest.raises(ValueError, match="momenta .* repeats a value|repeats a value"):
        dataclasses.replace(base, momenta=(0.5, 0.5))
    with pytest.raises(ValueError, match="momentum must lie in"):
        dataclasses.replace(base, momenta=(0.5, 1.0))
    out = tmp_path / "betas"
    assert main(["simulate", *LR, "--optimizer", "momentum", "--momentum", "0.5", "0.9",
                 "--out", str(out), *TINY]) == 0
    assert set(pd.read_csv(out / "fixed-lr" / "stationary.csv")["momentum"]) == {0.5, 0.9}
    assert main(["report", str(out), "--bootstrap", "0"]) == 0
    report = (out / "report.md").read_text()
    assert "## Side by side: fixed LR" in report and "momentum(beta=0.9)" in report
