"""thermosgd.Monitor on tiny models: groups, measurements against direct computation,
predictions, bad input, the run directory and the host syncs."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from _monitor_models import BnNet
from torch import nn

import thermosgd
from thermosgd.nn.monitor import Monitor
from thermosgd.results import monitordir
from thermosgd.theory import optimizers as opt_theory


class Tiny(nn.Module):
    """conv -> BN (per channel), linear -> LayerNorm (per layer), conv -> GroupNorm (per group),
    and a conv behind a ReLU (not scale-invariant), a head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)  # its bias cancels in BatchNorm
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.g2 = nn.GroupNorm(2, 4)
        self.c3 = nn.Conv2d(4, 4, 1)  # feeds a ReLU first: not scale-invariant
        self.b3 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.g2(self.c2(x)))
        x = self.b3(F.relu(self.c3(x)))
        return self.head(F.relu(self.ln(self.fc(x.mean((2, 3))))))


def _data(n=64, shape=(5,), classes=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def _train(model, opt, x, y, steps, batch=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_groups_follow_the_normalization():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    mon = Monitor(model, opt, example=torch.randn(2, 1, 4, 4))
    assert mon.groups == ([f"c1.weight[{c}]" for c in range(4)]  # BatchNorm: per channel
                          + ["c2.weight[g0]", "c2.weight[g1]"]  # GroupNorm(2): per group
                          + ["fc.weight"])  # LayerNorm over the features: the layer
    assert "c3.weight" in mon.not_scale_invariant and "head.weight" in mon.not_scale_invariant
    assert "c1.bias" in mon.not_scale_invariant  # cancels in the channel mean: not in a group
    assert "fc.bias" not in mon.not_scale_invariant  # LayerNorm: jointly with the weight
    merged = Monitor(model, opt, example=torch.randn(2, 1, 4, 4), granularity="layer")
    assert merged.groups == ["c1.weight", "c2.weight", "fc.weight"]
    by_hand = Monitor(model, opt, groups={"c3.weight": "channel", "fc.weight": "layer"})
    assert by_hand.groups == [f"c3.weight[{c}]" for c in range(4)] + ["fc.weight"]
    for m in (mon, merged, by_hand):
        m.close()
    with pytest.raises(ValueError, match="not a parameter"):
        Monitor(model, opt, groups=["conv9.weight"])


class InPlaceResidual(nn.Module):
    """A conv whose output gets a residual added in place before its BatchNorm: the norm's
    input is the conv's output object, but not the conv's output any more."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        out = self.c(x)
        out += x
        return self.head(self.bn(out).mean((2, 3)))


def _logits_after_scaling(model, x, name, row, factor):
    with torch.no_grad():
        param = dict(model.named_parameters())[name]
        saved = param.clone()
        param[row] *= factor
        out = model(x)
        param.copy_(saved)
    return out


def test_a_layer_output_that_also_feeds_a_shortcut_is_not_a_group():
    from thermosgd.nn.models import build_model

    model = build_model("resnet18", width=2)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = [f"blocks.{b}.conv1.weight[{c}]" for b in range(8)
                for c in range(model.blocks[b].conv1.weight.shape[0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Monitor(model, opt, example=x[:2]) as mon:
            # the stem feeds block 0's BatchNorm and, unnormalized, its identity shortcut
            assert mon.groups == expected
            assert "stem.weight" in mon.not_scale_invariant
        with Monitor(model, opt) as first_step:  # found on a training step's forward pass
            loss = F.cross_entropy(model(x), torch.arange(8) % 10)
            loss.backward()
            opt.step()
            assert first_step.groups == expected
    model.train()
    base = model(x).detach()
    kept = _logits_after_scaling(model, x, "blocks.3.conv1.weight", 1, 5.0)
    moved = _logits_after_scaling(model, x, "stem.weight", 1, 5.0)
    assert torch.allclose(kept, base, rtol=1e-4, atol=1e-5)  # a group: the loss does not move
    assert (moved - base).abs().max() > 1e-2  # the stem's channel is not scale-invariant


def test_an_output_changed_in_place_before_its_norm_is_not_a_group():
    model = InPlaceResidual()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Monitor(model, opt, example=torch.randn(2, 2, 4, 4)) as mon:
            assert mon.groups == []
            assert "c.weight" in mon.not_scale_invariant


def test_groups_are_found_on_the_first_step_and_are_scale_invariant():
    torch.manual_seed(0)
    model, (x, y) = Tiny(), _data(32, (1, 4, 4), 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    with Monitor(model, opt, every=2, noise_window=2) as mon:
        with pytest.raises(RuntimeError, match="first forward pass"):
            mon.groups
        _train(model, opt, x, y, 8)
    state = mon.state()
    si = state[state["scale_invariant"] & ~state["group"].isin(["all"])]
    # P2: grad L . w = 0 up to float32 rounding and BatchNorm's eps
    assert np.abs(si["grad_cosine"]).max() < 1e-3
    assert abs(state.set_index("group").loc["other", "grad_cosine"]) > 1e-3


def test_measurements_match_a_direct_computation():
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-3)
    seen = []  # (w0, grad) before, w1 after every step, in float64

    def before(o, args, kwargs):
        seen.append([model.fc.weight.detach().double().clone(), model.fc.weight.grad.double()])

    def after(o, args, kwargs):
        seen[-1].append(model.fc.weight.detach().double().clone())

    opt.register_step_pre_hook(before)
    opt.register_step_post_hook(after)
    with Monitor(model, opt, every=4, noise_window=4, flush_every=3) as mon:
        _train(model, opt, x, y, 12)
    state = mon.state().set_index("group")
    w0, g, w1 = seen[11]
    grads = torch.stack([s[1] for s in seen[8:12]])  # the last window: steps 9..12, (4, 3, 5)
    for c in range(3):
        row = state.loc[f"fc.weight[{c}]"]
        r0, r1 = w0[c].norm(), w1[c].norm()
        chord = (w1[c] / r1 - w0[c] / r0).norm()
        u = w1[c] - w0[c]
        k = grads[:, c].shape[0]
        spread = ((grads[:, c] - grads[:, c].mean(0)) ** 2).sum() / (k - 1)
        # float32 weights and sums: 1e-5 relative, well above float64 rounding
        assert row["norm"] == pytest.approx(float(r0), rel=1e-5)
        assert row["angular_update"] == pytest.approx(float(2 * torch.asin(chord / 2)), rel=1e-4)
        assert row["radial_share"] == pytest.approx(float((u @ w0[c]) ** 2 / r0**2 / (u @ u)),
                                                    rel=1e-3)
        assert row["trace_cov"] == pytest.approx(float(r0**2 * spread), rel=1e-4)
        assert row["stoch_grad_norm2"] == pytest.approx(
            float(r0**2 * (grads[:, c] ** 2).sum((1,)).mean()), rel=1e-4)
        theory = opt_theory.make_optimizer("momentum", 0.9)
        assert row["radius_theory"] == pytest.approx(float(opt_theory.optimizer_radius_fixed_lr(
            theory, 0.2, 5e-3, row["trace_cov"], 5)), rel=1e-9)
        assert row["angular_update_theory"] == pytest.approx(math.sqrt(2 * 0.2 * 5e-3 / 1.9))
        assert row["relaxation_steps"] == pytest.approx(0.1 / (4 * 0.2 * 5e-3))
        assert row["compressibility"] == pytest.approx((row["norm"] / row["radius_theory"]) ** 4,
                                                       rel=1e-9)
    union = state.loc["all"]
    assert union["norm"] == pytest.approx(float(w0.norm()), rel=1e-5)
    assert union["d"] == 15 and union["noise_steps"] == 4
    assert set(state.index) == {"fc.weight[0]", "fc.weight[1]", "fc.weight[2]", "other", "all"}


def test_adamw_preconditioner_is_the_mean_root_second_moment():
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    with Monitor(model, opt, every=5) as mon:
        _train(model, opt, x, y, 10)
    state = mon.state().set_index("group")
    s = opt.state[model.fc.weight]
    v_hat = s["exp_avg_sq"] / (1 - 0.999 ** float(s["step"]))
    for c in range(3):
        c_hat = float(v_hat[c].sqrt().mean()) + 1e-8
        assert state.loc[f"fc.weight[{c}]", "preconditioner"] == pytest.approx(c_hat, rel=1e-5)
        assert state.loc[f"fc.weight[{c}]", "pressure"] == pytest.approx(0.1 * c_hat, rel=1e-5)
    assert state.loc["fc.weight[0]", "angular_update_theory"] == pytest.approx(
        math.sqrt(2 * 1e-2 * 0.1 * 0.1 / 1.9))


def test_an_unknown_optimizer_is_measured_without_predictions(tmp_path):
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, weight_decay=1e-3)
    with pytest.warns(UserWarning, match="RMSprop is not described by the theory"):
        mon = Monitor(model, opt, every=2, out=tmp_path / "run")
    with mon:
        _train(model, opt, x, y, 4)
    state = mon.state()
    assert state["norm"].notna().all() and state["radius_theory"].isna().all()
    note = json.loads((tmp_path / "run" / "config.json").read_text())["optimizers"][0]["note"]
    assert "RMSprop" in note


def test_a_model_without_scale_invariant_groups_warns_and_is_measured():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, every=2) as mon:
        with pytest.warns(UserWarning, match="no scale-invariant group"):
            _train(model, opt, x, y, 4)
    state = mon.state()
    assert mon.groups == [] and list(state["group"]) == ["other", "all"]
    assert state.set_index("group").loc["other", "norm"] > 0


@pytest.mark.parametrize("options,match", [
    ({"every": 0}, "every must be an integer >= 1"),
    ({"every": 2.5}, "every must be an integer"),
    ({"noise_window": 1}, "noise_window must be an integer >= 2"),
    ({"groups": "all"}, "groups must be"),
    ({"granularity": "row"}, "granularity must be"),
])
def test_bad_options_say_what_to_change(tmp_path, options, match):
    model = BnNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        Monitor(model, opt, out=tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()  # nothing half written


def test_no_parameters_and_other_results_are_refused(tmp_path):
    with pytest.raises(ValueError, match="has no parameters"):
        Monitor(nn.ReLU(), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    model = BnNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = tmp_path / "sweep"
    other.mkdir()
    (other / "thermosgd.json").write_text(json.dumps({"kind": "sweep", "schema": "0.2"}))
    with pytest.raises(ValueError, match="holds a thermosgd 'sweep' output"):
        Monitor(model, opt, out=other)
    assert sorted(p.name for p in other.iterdir()) == ["thermosgd.json"]
    Monitor(model, opt, out=tmp_path / "mine").close()
    with pytest.raises(ValueError, match="overwrite=True"):
        Monitor(model, opt, out=tmp_path / "mine")
    assert opt._optimizer_step_pre_hooks.__len__() == 0  # refused monitors attach nothing


def test_an_exception_flushes_and_closes(tmp_path):
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    with pytest.raises(KeyboardInterrupt):
        with Monitor(model, opt, every=1, flush_every=100, out=tmp_path / "run") as mon:
            _train(model, opt, x, y, 7)
            raise KeyboardInterrupt
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["logs"] == 7
    metrics = monitordir.read_metrics(tmp_path / "run")
    assert sorted(metrics["step"].unique()) == list(range(1, 8))
    _train(model, opt, x, y, 2)  # the hooks are gone
    assert mon.step == 7
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_run_directory_is_analysed_plotted_and_reported(tmp_path):
    from thermosgd.cli import main

    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-3)
    out = tmp_path / "run"
    with Monitor(model, opt, every=5, flush_every=4, out=out):
        _train(model, opt, x, y, 60)
    metrics = monitordir.read_metrics(out)
    assert len(list((out / "metrics").glob("*.parquet"))) == 3  # 12 logs, 4 per flush
    assert {"step", "group", "norm", "angular_update", "temperature", "radius_theory",
            "angular_update_theory"} <= set(metrics.columns)
    assert len(metrics) == 12 * 5
    assert main(["analyze", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "figures" / "monitor.png").is_file()
    report = (out / "report.md").read_text()
    assert "norm vs r*" in report and "monitor.png" in report
    assert "thermosgd.Monitor" in report and "Each grid point" not in report  # its own intro
    table = pd.read_csv(out / "analysis_table.csv")
    assert set(table["group"]) == {"fc.weight[0]", "fc.weight[1]", "fc.weight[2]", "other", "all"}


def test_host_syncs_only_at_flushes(monkeypatch):
    """Count the host reads of tensors (item, cpu, tolist, bool/float/int, to('cpu')) in the
    same loop without and with the monitor: the difference is one per flush. (``numpy()``
    needs a host tensor, so a device tensor reaches it only through these.)"""
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    _train(model, opt, x, y, 1)
    counts = {"n": 0}
    for name in ("item", "cpu", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            counts["n"] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    original_to = torch.Tensor.to

    def to(self, *a, **k):
        if any(str(v) == "cpu" for v in (*a, *k.values())):
            counts["n"] += 1
        return original_to(self, *a, **k)
    monkeypatch.setattr(torch.Tensor, "to", to)
    _train(model, opt, x, y, 25)
    baseline = counts["n"]
    mon = Monitor(model, opt, every=1, flush_every=10, noise_window=3)
    _train(model, opt, x, y, 1)  # the groups are set up on the first step (host tensors)
    counts["n"] = 0
    _train(model, opt, x, y, 25, seed=1)
    assert mon.flushes == 2 and counts["n"] - baseline == mon.flushes
    mon.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_between_flushes_on_cuda():
    model = BnNet().cuda()
    x, y = (t.cuda() for t in _data())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    _train(model, opt, x, y, 2)
    mon = Monitor(model, opt, every=2, flush_every=1000, noise_window=2)
    torch.cuda.set_sync_debug_mode("error")
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        for _ in range(20):
            idx = torch.randint(0, len(x), (16,), device="cuda", generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert mon.flushes == 0
    assert len(mon.state()) == 5


def test_public_name_is_lazy():
    assert thermosgd.Monitor is Monitor
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "Monitor" in dir(thermosgd)


def test_regimes_on_synthetic_histories():
    from thermosgd.nn._monitor_theory import classify

    steps, ones = np.arange(20) * 10.0, np.ones((20, 1))
    shrinking = np.exp(-0.02 * np.arange(20))[:, None]
    assert classify(steps, ones, ones, 0 * ones, ones) == ["equilibrium"]
    assert classify(steps, ones, ones, np.full((20, 1), np.inf), ones) == ["idle"]
    assert classify(steps, ones, ones, np.full((20, 1), np.nan), ones) == [""]
    # the norm falls 32 % over the window while the angle exceeds its equilibrium
    assert classify(steps, shrinking, ones, 0.3 * ones, 1.5 * ones) == ["collapsing"]
    # Tr Sigma falls 61 % with the norm above its prediction: appendix H
    assert classify(steps, ones, shrinking**2.5, 0.3 * ones, ones) == ["converging"]
    assert classify(steps, ones, ones, 0.3 * ones, ones) == ["relaxing"]


def test_entropy_of_small_groups():
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-3)
    with Monitor(model, opt, every=1, flush_every=30, entropy_queue=20, entropy_max_dim=5) as mon:
        _train(model, opt, x, y, 30)
    rows = monitordir.read_metrics(mon.out) if mon.out else mon.state()
    group = rows[rows["group"] == "fc.weight[0]"]
    assert np.isfinite(group["entropy_sphere"]).sum() == 1  # once, when the queue was full
    s, r = float(group["entropy_sphere"].iloc[-1]), float(group["entropy"].iloc[-1])
    assert math.isfinite(s) and math.isfinite(r)
    assert rows[rows["group"] == "all"]["entropy"].isna().all()  # d = 15 > entropy_max_dim
