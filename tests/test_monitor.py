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
from thermosgd.monitor.api import Monitor
from thermosgd.results import monitordir
from thermosgd.theory import optimizers as opt_theory


class Tiny(nn.Module):
    """conv -> BN (per channel), linear -> LayerNorm (per layer), conv -> GroupNorm (per group),
    and a conv behind a GELU (not scale-invariant: a ReLU, positively homogeneous, would keep
    the conv with its bias scale-invariant), a head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)  # its bias cancels in BatchNorm
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.g2 = nn.GroupNorm(2, 4)
        self.c3 = nn.Conv2d(4, 4, 1)  # feeds a GELU first: not scale-invariant
        self.b3 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.g2(self.c2(x)))
        x = self.b3(F.gelu(self.c3(x)))
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


def _record_fc_steps(model, opt) -> list:
    """[w0, grad] before and w1 after every step of ``model.fc.weight``, in float64."""
    seen = []

    def before(o, args, kwargs):
        seen.append([model.fc.weight.detach().double().clone(), model.fc.weight.grad.double()])

    def after(o, args, kwargs):
        seen[-1].append(model.fc.weight.detach().double().clone())

    opt.register_step_pre_hook(before)
    opt.register_step_post_hook(after)
    return seen


def test_measurements_match_a_direct_computation():
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-3)
    seen = _record_fc_steps(model, opt)
    head_before = []
    opt.register_step_pre_hook(lambda o, a, k: head_before.append(model.head.weight.norm().item()))
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
        # heavy ball's discrete balance from the step itself: v_g = -u / eta - c w0, c the
        # weight decay the buffer carries at stationarity, lambda / (1 - beta)
        vg = -u / 0.2 - 5e-3 / 0.1 * w0[c]
        q = float(r0**2 * (1 - 0.81) * (vg @ vg))  # (1 - beta^2) E|b|^2 on the unit sphere
        stoch = float(r0**2 * (grads[:, c] ** 2).sum((1,)).mean())
        full = (stoch - q) / (1 - 1 / 19)  # Q = Tr Sigma + w F, E|g_B|^2 = Tr Sigma + F
        # float32 weights and sums: 1e-5 relative, well above float64 rounding; the split
        # subtracts two close numbers: 1e-3
        assert row["norm"] == pytest.approx(float(r0), rel=1e-5)
        assert row["angular_update"] == pytest.approx(float(2 * torch.asin(chord / 2)), rel=1e-4)
        assert row["radial_share"] == pytest.approx(float((u @ w0[c]) ** 2 / r0**2 / (u @ u)),
                                                    rel=1e-3)
        assert row["stoch_grad_norm2"] == pytest.approx(stoch, rel=1e-4)
        assert row["full_grad_norm2"] == pytest.approx(max(full, 0.0), rel=1e-3, abs=1e-3 * stoch)
        assert row["trace_cov"] == pytest.approx(stoch - max(full, 0.0), rel=1e-3)
        theory = opt_theory.make_optimizer("momentum", 0.9)
        assert row["radius_theory"] == pytest.approx(float(opt_theory.optimizer_radius_fixed_lr(
            theory, 0.2, 5e-3, row["trace_cov"], 5)), rel=1e-9)
        assert row["radius_theory_corrected"] == pytest.approx(
            (2.0 * q / (2 * 5e-3)) ** 0.25, rel=1e-4)
        assert row["angular_update_theory"] == pytest.approx(math.sqrt(2 * 0.2 * 5e-3 / 1.9))
        assert row["relaxation_steps"] == pytest.approx(0.1 / (4 * 0.2 * 5e-3))
        # Z = pV / (RT) with the discrete-step temperature: (r / r*)^4
        assert row["compressibility"] == pytest.approx(
            (row["norm"] / row["radius_theory_corrected"]) ** 4, rel=1e-9)
    union = state.loc["all"]
    assert union["norm"] == pytest.approx(float(w0.norm()), rel=1e-5)
    assert union["d"] == 15 and union["noise_steps"] == 4
    # the layer's row sums its three channels' device sums: the layer's own geometry
    layer = state.loc["fc.weight"]
    assert layer["level"] == "layer" and layer["scale_invariant"] and layer["d"] == 15
    assert layer["norm"] == pytest.approx(float(w0.norm()), rel=1e-5)
    u = (w1 - w0).reshape(-1)
    chord = (w1.reshape(-1) / w1.norm() - w0.reshape(-1) / w0.norm()).norm()
    assert layer["angular_update"] == pytest.approx(float(2 * torch.asin(chord / 2)), rel=1e-4)
    assert layer["radial_share"] == pytest.approx(
        float((u @ w0.reshape(-1)) ** 2 / w0.norm() ** 2 / (u @ u)), rel=1e-3)
    # the head's matrix is not scale-invariant: a row of its own, predicted as an approximation
    head = state.loc["head.weight"]
    assert head["level"] == "layer" and not head["scale_invariant"] and head["d"] == 6
    assert head["norm"] == pytest.approx(head_before[11], rel=1e-5)
    assert np.isfinite(head["angular_update_theory"])
    assert state.loc["other", "d"] == 2 and np.isnan(state.loc["other", "radius_theory"])
    assert dict(zip(state.index, state["level"])) == {
        "fc.weight[0]": "group", "fc.weight[1]": "group", "fc.weight[2]": "group",
        "head.weight": "layer", "other": "other", "fc.weight": "layer", "all": "all"}


def test_adamw_radius_and_pressure_come_from_its_own_step():
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    seen = _record_fc_steps(model, opt)
    with Monitor(model, opt, every=5, noise_window=5) as mon:
        _train(model, opt, x, y, 10)
    state = mon.state().set_index("group")
    s = opt.state[model.fc.weight]
    root = (s["exp_avg_sq"].double() / (1 - 0.999 ** float(s["step"]))).sqrt() + 1e-8
    w0, _, w1 = seen[9]
    grads = torch.stack([t[1] for t in seen[5:10]])  # the window: steps 6..10
    for c in range(3):
        a = -(w1[c] - w0[c] + 1e-2 * 0.1 * w0[c]) / 1e-2  # m_hat / (sqrt(v_hat) + eps)
        d_eff = float(19 * (a @ a))  # (1 + beta1) / (1 - beta1) E|a|^2
        weighted = float(((grads[:, c] ** 2).mean(0) / root[c] ** 2).sum())
        share = max((weighted - d_eff) / (1 - 1 / 19) / (weighted - (weighted - d_eff) * 19 / 18),
                    0.0)
        raw_q = float((grads[:, c] ** 2).sum(1).mean()) * (1 + share / 19) / (1 + share)
        row = state.loc[f"fc.weight[{c}]"]
        # float32 state and sums: 1e-4 relative
        assert row["radius_theory_corrected"] == pytest.approx(
            math.sqrt(1e-2 * d_eff / (2 * 0.1)), rel=1e-4)
        assert row["preconditioner"] == pytest.approx(math.sqrt(raw_q / d_eff), rel=1e-3)
        assert row["pressure"] == pytest.approx(0.1 * row["preconditioner"], rel=1e-9)
        assert row["compressibility"] == pytest.approx(
            (row["norm"] / row["radius_theory_corrected"]) ** 2, rel=1e-6)
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
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    with Monitor(model, opt, every=2) as mon:
        with pytest.warns(UserWarning, match="no scale-invariant group"):
            _train(model, opt, x, y, 4)
    state = mon.state()
    # each weight matrix has a row of its own, the biases are "other"
    assert mon.groups == [] and list(state["group"]) == ["0.weight", "2.weight", "other", "all"]
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
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
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
    assert len(metrics) == 12 * 7  # 3 channels, their layer, the head, other, all
    assert main(["analyze", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "figures" / "monitor.png").is_file()
    report = (out / "report.md").read_text()
    assert "norm vs r*" in report and "monitor.png" in report
    assert "thermosgd.Monitor" in report and "Each grid point" not in report  # its own intro
    table = pd.read_csv(out / "analysis_table.csv")
    assert set(table["group"]) == {"fc.weight[0]", "fc.weight[1]", "fc.weight[2]", "fc.weight",
                                   "head.weight", "other", "all"}


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


def _history(w=20, **columns):
    """A synthetic window of the monitor's columns for one group (logs every 10 steps, the
    norm's relaxation time 50 steps: the judged span is the last 6 logs), at equilibrium
    unless ``columns`` say otherwise (a scalar, or one value per log)."""
    base = {"norm": 1.0, "trace_cov": 1.0, "distance": 0.0, "angular_update": 0.1,
            "angular_update_theory": 0.1, "learning_rate": 0.1, "weight_decay": 1e-3,
            "relaxation_steps": 50.0}
    return {k: np.broadcast_to(np.asarray(v, float), (w,)) for k, v in (base | columns).items()}


def _classify(*histories):
    """Every history one group of a single vectorized call."""
    from thermosgd.monitor.predictions import classify

    w = len(histories[0]["norm"])
    return classify(np.arange(w) * 10.0, **{k: np.stack([h[k] for h in histories], 1)
                                             for k in histories[0]})


def test_regimes_on_synthetic_histories():
    first, last = np.arange(20) < 10, np.arange(20) >= 10
    shrinking = np.exp(-0.02 * np.arange(20))
    # r*^4 / r^4 = 2 - e^-2 over the first half, e^-2 over the second: the window's mean r*^4
    # is r^4, and its rms angle (theta^2 / theta*^2 = (r* / r)^4) theta*
    drift = np.where(first, -0.25 * np.log(2 - np.exp(-2)), 0.5)
    cases = [  # (expected regime, the history's columns)
        ("equilibrium", {}),
        ("idle", {"distance": np.inf}),
        ("", {"distance": np.nan}),
        # the norm falls 32 % over the window while the angle exceeds its equilibrium by 50 %
        ("collapsing", {"norm": shrinking, "angular_update": 0.15}),
        # Tr Sigma falls 61 % with the norm 35 % above its prediction (the angle e^-0.6 below)
        ("converging", {"trace_cov": shrinking**2.5, "distance": 0.3,
                        "angular_update": 0.1 * np.exp(-0.6)}),
        ("relaxing", {"distance": 0.3, "angular_update": 0.1 * np.exp(-0.6)}),
        # r / r* = 3 over the first 10 logs, at r* over the last 10 (more than one relaxation
        # time): the hot logs are over
        ("equilibrium", {"distance": np.where(first, np.log(3), 0.0),
                         "angular_update": np.where(first, 0.1 / 9, 0.1)}),
        ("relaxing", {"distance": np.where(last, np.log(3), 0.0),  # the reverse
                      "angular_update": np.where(last, 0.1 / 9, 0.1)}),
        # eta halves at log 10 and the norm has not moved: r* falls by 2^(1/4), the predicted
        # angle by sqrt(2), the measured one (eta |g| / r) by 2
        ("scheduled", {"learning_rate": np.where(first, 0.1, 0.05), "relaxation_steps": 100.0,
                       "distance": np.where(first, 0.0, 0.25 * np.log(2)),
                       "angular_update_theory": np.where(first, 0.1, 0.1 / np.sqrt(2)),
                       "angular_update": np.where(first, 0.1, 0.05)}),
        # the learning rate moved 8 %, but Tr Sigma fell 61 %: the noise dies, not the schedule
        ("converging", {"learning_rate": np.linspace(0.1, 0.092, 20), "relaxation_steps": 100.0,
                        "trace_cov": shrinking**2.5, "distance": 0.3,
                        "angular_update": 0.1 * np.exp(-0.6)}),
        # a slow decay (8 % over the window) that the group follows within the bands
        ("equilibrium", {"learning_rate": np.linspace(0.1, 0.092, 20),
                         "relaxation_steps": 100.0}),
        # eta decayed to 0: r* = 0 and no relaxation, but no group is dead
        ("scheduled", {"learning_rate": np.linspace(0.1, 0.0, 20),
                       "distance": np.where(last, np.inf, 1.0)}),
        ("relaxing", {"angular_update": 0.13}),  # the norm right, the angle 30 % off
        ("relaxing", {"angular_update": 0.07}),
        # r* drifts down over a window shorter than the relaxation time: the window's mean
        # r*^4 and rms angle match their predictions, its newer half is 65 % off
        ("relaxing", {"distance": drift, "relaxation_steps": 1000.0,
                      "angular_update": 0.1 * np.exp(-2 * drift)}),
    ]
    assert _classify(*(_history(**c) for _, c in cases)) == [r for r, _ in cases]
    assert _classify(_history(w=3)) == ["equilibrium"]  # the first logs of a run


@pytest.mark.parametrize("schedule", ["one_cycle", "linear", None])
def test_regimes_under_lr_schedules(tmp_path, schedule):
    """BnNet (relaxation time 25 steps at eta = 0.2) over 300 steps: OneCycleLR warms up to
    eta and anneals to 1e-5 eta; LinearLR decays to eta / 100."""
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-3)
    sched = {"one_cycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=300),
             "linear": lambda: torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.01, 300),
             None: lambda: None}[schedule]()
    gen = torch.Generator().manual_seed(1)
    with Monitor(model, opt, every=1, flush_every=100, out=tmp_path / "run"):
        for _ in range(300):
            idx = torch.randint(0, len(x), (16,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    m = monitordir.read_metrics(tmp_path / "run")
    m = m[m["scale_invariant"]]
    far = m["distance"].abs() > 0.5
    union = m[m["group"] == "all"]["regime"]
    assert far.sum() > 20  # the test sees logs away from equilibrium
    assert not (far & (m["regime"] == "equilibrium")).any()
    if schedule is None:
        assert "scheduled" not in set(m["regime"]) and "equilibrium" in set(union)
    else:  # the last logs lag the annealed learning rate
        assert set(union.iloc[-20:]) == {"scheduled"}


def _stationary_frame(regimes=("equilibrium", "scheduled")):
    """Two groups, 30 logs each: the first turns 0.2 rad at norm 1 and 0.1 rad at norm 2 on
    alternate logs (the same |u| = 0.2 each step); the second 0.05 and 0.15 at norm 1."""
    steps = np.arange(1, 31)
    odd = steps % 2 == 1
    rows = []
    for k, (group, norm, angle) in enumerate([
            ("a", np.where(odd, 1.0, 2.0), np.where(odd, 0.2, 0.1)),
            ("b", np.ones(30), np.where(odd, 0.05, 0.15))]):
        rows.append(pd.DataFrame({
            "step": steps, "group": group, "layer": "L", "scale_invariant": True, "d": 9,
            "norm": norm, "angular_update": angle, "angular_update_theory": angle,
            "angular_update_theory_corrected": np.nan, "radius_theory": norm,
            "radius_theory_corrected": norm, "regime": regimes[k]}))
    return pd.concat(rows, ignore_index=True)


def test_stationary_angles_are_norm_weighted_rms():
    from thermosgd.analysis.monitor import monitor_checks, stationary_groups

    table = stationary_groups(_stationary_frame()).set_index("group")
    # sqrt(E|u|^2 / E|w|^2) = sqrt(2 * 0.04 / 5): the mean angle (0.15) is 19 % above, the plain
    # rms (0.158) 25 % above
    assert table.loc["a", "angular_update"] == pytest.approx(math.sqrt(0.016), rel=1e-12)
    # norm 1: the rms sqrt(0.0125) = 0.112 sits 12 % above the mean angle 0.1
    assert table.loc["b", "angular_update"] == pytest.approx(math.sqrt(0.0125), rel=1e-12)
    # predictions weighted alike: a group that follows its prediction log by log reads 1
    assert (table["angular_update_theory"] == table["angular_update"]).all()
    assert table["angular_update_theory_corrected"].isna().all()
    checks = monitor_checks(table.reset_index())
    assert checks["rms angle per step vs equilibrium"]["max_rel_error"] == pytest.approx(0)
    assert checks["groups equilibrium"] == 1 and checks["groups scheduled"] == 1
    assert checks["groups relaxing"] == 0 and checks["groups idle"] == 0


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


def test_the_monitor_keeps_its_older_import_paths():
    """The Monitor moved from ``thermosgd.nn`` to its own package; older imports still work."""
    import thermosgd
    from thermosgd.monitor import Monitor as packaged
    from thermosgd.nn.monitor import Monitor as old

    assert old is packaged is Monitor is thermosgd.Monitor


def _two_layer_net():
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, affine=False), nn.ReLU(),
                         nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3, affine=False),
                         nn.Linear(3, 2))


@pytest.mark.parametrize("second_lr", [0.05, 0.1])
def test_rows_over_several_parameter_groups_read_each_element_own_rates(second_lr):
    """A row over parameters of several optimizer groups shows the d-weighted mean learning rate
    and the norm-weighted weight decay, and is predicted only while the groups agree on the
    learning rate."""
    torch.manual_seed(0)
    model, (x, y) = _two_layer_net(), _data()
    opt = torch.optim.SGD([
        {"params": [model[0].weight, model[0].bias], "lr": 0.1, "weight_decay": 1e-3},
        {"params": [model[3].weight], "lr": second_lr, "weight_decay": 1e-3},
        {"params": list(model[5].parameters()), "lr": 0.05, "weight_decay": 1e-2}],
        momentum=0.9)
    biases = []  # |b|^2 of the two biases before each step
    opt.register_step_pre_hook(lambda o, a, k: biases.append(
        [float(model[0].bias.detach().norm() ** 2), float(model[5].bias.detach().norm() ** 2)]))
    with Monitor(model, opt, every=4, noise_window=4) as mon:
        _train(model, opt, x, y, 8)
    state = mon.state().set_index("group")
    assert state.loc["0.weight", "level"] == "layer" and state.loc["0.weight[1]", "level"] == "group"
    assert state.loc["0.weight", "learning_rate"] == pytest.approx(0.1)
    assert state.loc["3.weight", "learning_rate"] == pytest.approx(second_lr)
    assert np.isfinite(state.loc[["0.weight", "3.weight"], "radius_theory_corrected"]).all()
    # "all": 20 elements at 0.1, 12 at second_lr
    assert state.loc["all", "d"] == 32
    assert state.loc["all", "learning_rate"] == pytest.approx((20 * 0.1 + 12 * second_lr) / 32)
    assert np.isfinite(state.loc["all", "radius_theory_corrected"]) == (second_lr == 0.1)
    # "other": the first layer's bias (4, wd 1e-3) and the head's bias (2, wd 1e-2); its
    # weight decay is the rate at which decay shrinks |w|^2, weighted by the norms
    first, head = biases[7]
    assert state.loc["other", "d"] == 4 + 2
    assert state.loc["other", "weight_decay"] == pytest.approx(
        (1e-3 * first + 1e-2 * head) / (first + head), rel=1e-5)
    assert np.isnan(state.loc["other", "radius_theory_corrected"])
    assert state.loc["5.weight", "weight_decay"] == pytest.approx(1e-2)


def test_rows_written_before_the_level_column_read_with_their_level(tmp_path):
    """A monitored run of schema 0.2 has no "level": it is inferred from the names."""
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    out = tmp_path / "run"
    with Monitor(model, opt, every=2, out=out):
        _train(model, opt, x, y, 4)
    levels = dict(zip(*monitordir.read_metrics(out)[["group", "level"]].to_numpy().T))
    for part in (out / "metrics").glob("*.parquet"):  # as thermosgd 0.2 wrote them
        old = pd.read_parquet(part)
        old = old[~old["group"].isin(["fc.weight", "head.weight"])].drop(columns="level")
        old.to_parquet(part, index=False)
    table = monitordir.read_metrics(out)
    assert list(table.columns[:4]) == ["step", "group", "layer", "level"]
    assert dict(zip(table["group"], table["level"])) == {
        g: levels[g] for g in ("fc.weight[0]", "fc.weight[1]", "fc.weight[2]", "other", "all")}


@pytest.mark.parametrize("adamw", [False, True])
def test_radial_force_is_the_gradient_push_against_weight_decay(adamw):
    """kappa = g . w / (lambda r^2) at the log step (AdamW: g / (sqrt(v_hat) + eps), as its
    step applies it): the value the step's own tensors give; zero for scale-invariant groups
    under SGD (P2)."""
    torch.manual_seed(0)
    model, (x, y) = BnNet(), _data()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2) if adamw else \
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    pushes, seen, head = [], [], model.head.weight

    def before(o, a, k):
        seen[:] = [head.detach().double().flatten().clone(), head.grad.double().flatten()]

    def after(o, a, k):
        (w, g), scale = seen, 1.0
        if adamw:  # the preconditioner the step applied
            state = opt.state[head]
            v = state["exp_avg_sq"].double().flatten() / (1 - 0.999 ** float(state["step"]))
            scale = v.sqrt() + 1e-8
        pushes.append(float((g / scale) @ w) / (1e-2 * float(w @ w)))
    opt.register_step_pre_hook(before)
    opt.register_step_post_hook(after)
    with Monitor(model, opt, every=3, noise_window=3) as mon:
        _train(model, opt, x, y, 6)
    state = mon.state().set_index("group")
    assert state.loc["head.weight", "radial_force"] == pytest.approx(pushes[5], rel=1e-4)
    assert abs(pushes[5]) > 1e-2  # the head's gradient does push its norm
    channels = state.loc[["fc.weight[0]", "fc.weight[1]", "fc.weight[2]"], "radial_force"]
    if adamw:  # a coordinate-wise preconditioner tilts even an orthogonal gradient
        assert np.isfinite(channels).all()
    else:  # orthogonal up to float32 rounding and BatchNorm's eps (P2)
        assert np.abs(channels).max() < 1e-3 * abs(pushes[5])


def test_a_group_whose_bias_does_not_decay_is_predicted_with_its_norm_weighted_decay():
    """The usual recipe puts biases in a group without weight decay. A Linear -> LayerNorm
    layer's weight and bias form one scale-invariant group over two optimizer groups: it is
    predicted with lambda = sum_k lambda_k |w_k|^2 / |w|^2, the rate decay shrinks |w|^2 at."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4, elementwise_affine=False),
                          nn.Linear(4, 2))
    x, y = _data()
    opt = torch.optim.SGD([{"params": [model[0].weight, model[2].weight], "weight_decay": 1e-2},
                           {"params": [model[0].bias, model[2].bias], "weight_decay": 1e-3}],
                          lr=0.1, momentum=0.9)
    norms = []
    opt.register_step_pre_hook(lambda o, a, k: norms.append(
        [float(model[0].weight.detach().norm() ** 2), float(model[0].bias.detach().norm() ** 2)]))
    with Monitor(model, opt, every=4, noise_window=4) as mon:
        _train(model, opt, x, y, 8)
    row = mon.state().set_index("group").loc["0.weight"]
    w2, b2 = norms[7]
    assert row["d"] == 5 * 4 + 4 and row["scale_invariant"]
    assert row["weight_decay"] == pytest.approx((1e-2 * w2 + 1e-3 * b2) / (w2 + b2), rel=1e-5)
    assert row["norm"] == pytest.approx((w2 + b2) ** 0.5, rel=1e-5)
    assert np.isfinite(row["radius_theory_corrected"]) and np.isfinite(row["angular_update_theory"])
