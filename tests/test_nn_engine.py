"""The engine for G >= 1 configurations: update rules, every logged column, files, resume,
divergence, and the two mechanisms against each other.

Runs use scikit-learn's digits with a ConvNet of width 2 (d = 1530) so each takes seconds. The
"loop" mechanism is bitwise each configuration's run alone. vmap evaluates the convolutions with
a different floating-point summation order, so its results are not bitwise equal; each tolerance
below says where its size comes from.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from thermosgd import theory
from thermosgd.nn import Engine, TrainConfig, scale_invariant_parameters, train, train_batched
from thermosgd.nn.data import load_dataset
from thermosgd.results.schema import METRIC_COLUMNS

SHORT = {"model": "convnet", "width": 2, "iterations": 300, "log_every": 50,
         "log_linear_until": 200, "log_points": 2, "queue_size": 6, "queue_every": 25,
         "stationary_logs": 3, "device": "cpu"}
PROTOCOLS = [("fixed-lr", 0.1, {"weight_decay": 1e-2}),
             ("fixed-elr", 0.01, {"weight_decay": 1e-2}),
             ("fixed-sphere", 0.01, {"radius": 2.0})]
BATCH = dict(SHORT, iterations=120, log_every=40, queue_size=4, queue_every=10,
             stationary_logs=2)
GRIDS = [("fixed-lr", (0.005, 0.01, 0.02), {"weight_decay": 1e-2}),
         ("fixed-elr", (0.002, 0.005, 0.01), {"weight_decay": 1e-2}),
         ("fixed-sphere", (0.002, 0.005, 0.01), {"radius": 2.0})]


def _configs(protocol, rates, kw, g, **extra):
    return [TrainConfig(protocol=protocol, learning_rate=lr, seed=i, **kw, **(BATCH | extra))
            for i, lr in enumerate(rates[:g])]


def _flat_grad(model, loss):
    return torch.cat([t.reshape(-1) for t in
                      torch.autograd.grad(loss, scale_invariant_parameters(model))])


# --- one configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol,lr,kw", PROTOCOLS)
def test_one_step_is_the_protocols_update_rule(digits, protocol, lr, kw):
    """One training step equals eq. 2 / 8 / 15 written out by hand, and the frozen head and
    the model's parameters (views of the flat weights) follow."""
    engine = Engine([TrainConfig(protocol=protocol, learning_rate=lr, **kw, **SHORT)], digits)
    head = engine.model.head.weight.clone()
    w0 = engine.weights[0].clone()
    state = engine.generators[0].get_state()
    idx = torch.randint(0, digits.num_train, (1, 128), generator=engine.generators[0])[0]
    engine.generators[0].set_state(state)
    loss = F.cross_entropy(engine.model(digits.train_x[idx]), digits.train_y[idx])
    g = _flat_grad(engine.model, loss)
    engine.advance(1)
    assert engine.close_window() == {} and engine.iteration == 1
    if protocol == "fixed-lr":
        expected = w0 - lr * (g + kw["weight_decay"] * w0)
    elif protocol == "fixed-elr":
        expected = w0 - lr * (w0 @ w0) * (g + kw["weight_decay"] * w0)
    else:
        v = w0 - lr * kw["radius"] ** 2 * g
        expected = kw["radius"] * v / v.norm()
    # float32 vector arithmetic in a different order: a few ulps of |w| ~ 1
    torch.testing.assert_close(engine.weights[0], expected, rtol=1e-6, atol=1e-7)
    flat = torch.cat([p.detach().reshape(-1) for p in scale_invariant_parameters(engine.model)])
    assert torch.equal(flat, engine.weights[0])
    assert torch.equal(engine.model.head.weight, head)
    # the window's means are those of this one step: loss, ||w||^2 ||g||^2 (P1), eq. 83
    window = engine.windows[0]
    assert window["batch_loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert window["stoch_grad_norm2"] == pytest.approx(float((w0 @ w0) * (g @ g)), rel=1e-5)
    if protocol == "fixed-sphere":  # eq. 83: (||w - eta g|| - r) / (eta r), eta = eta_eff r^2
        eta, r = lr * kw["radius"] ** 2, kw["radius"]
        moved = (w0.double() - eta * g.double()).norm()
        assert window["lambda_eff"] == pytest.approx(float((moved - r) / (eta * r)), rel=1e-4)
    else:
        assert np.isnan(window["lambda_eff"])


@pytest.mark.parametrize("protocol,lr,kw", PROTOCOLS)
def test_run_logs_every_quantity(digits, protocol, lr, kw):
    result = train(TrainConfig(protocol=protocol, learning_rate=lr, **kw, **SHORT),
                   dataset=digits, progress=False)
    m = result.metrics
    assert list(m.columns[:len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert m["iteration"].tolist() == [50, 100, 150, 200, 245, 300]
    assert result.summary["status"] == "finished" and result.summary["d"] == 1530
    d = 1530
    np.testing.assert_allclose(m["sigma2"], m["trace_cov"] / (d - 1), rtol=1e-12)
    np.testing.assert_allclose(m["volume"], m["radius"] ** 2 / 2, rtol=1e-12)
    assert (m["trace_cov"] > 0).all() and (m["trace_cov_se"] > 0).all()
    # entropy only once the queue of 6 snapshots (one every 25 steps) is full: from step 150
    assert m["entropy"].isna().tolist() == [True, True, False, False, False, False]
    assert m[["train_loss", "test_loss", "full_grad_norm2", "stoch_grad_norm2"]].notna().all().all()
    sphere = protocol == "fixed-sphere"
    if sphere:  # projected SGD never leaves the sphere (float32 rounding)
        np.testing.assert_allclose(m["radius"], 2.0, rtol=1e-5)
        np.testing.assert_allclose(m["pressure"], m["lambda_eff"])
        np.testing.assert_allclose(m["lambda_eff_theory"], theory.effective_pressure_from_trace(
            lr, 2.0, m["trace_cov"]), rtol=1e-12)
    else:
        assert m["lambda_eff"].isna().all() and (m["pressure"] == kw["weight_decay"]).all()
        np.testing.assert_allclose(m["radius_theory"], theory.stationary_radius_from_trace(
            protocol, lr, kw["weight_decay"], m["trace_cov"]), rtol=1e-10)
    tail = m.tail(3)
    assert result.summary["stationary"]["radius"] == pytest.approx(tail["radius"].mean())
    assert result.summary["stationary"]["entropy"] == pytest.approx(tail["entropy"].mean())


def test_diverged_run_is_recorded_and_returns(digits, tmp_path):
    """eta_eff = 50 blows the norm up within a few steps: the run stops, says where, exits
    normally."""
    result = train(TrainConfig(protocol="fixed-elr", learning_rate=50.0, weight_decay=0.1,
                               **SHORT), tmp_path / "run", dataset=digits, progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" == result.summary["status"]
    assert 1 <= summary["diverged_at"] <= 50
    assert pd.read_parquet(tmp_path / "run" / "metrics.parquet").empty


def test_progress_bar_shows_speed_loss_and_radius(digits, capsys):
    train(TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2, **SHORT),
          dataset=digits, progress=True)
    err = capsys.readouterr().err
    assert "it/s" in err and "loss=" in err and "radius=" in err


def test_finished_run_is_read_back_and_other_configs_refused(digits, tmp_path):
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2, **SHORT)
    first = train(config, tmp_path, dataset=digits, progress=False)
    again = train(config, tmp_path, dataset=digits, progress=False)
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    other = TrainConfig(protocol="fixed-lr", learning_rate=0.2, weight_decay=1e-2, **SHORT)
    with pytest.raises(ValueError, match="another configuration.*learning_rate"):
        train(other, tmp_path, dataset=digits, progress=False)


def test_a_run_written_before_a_field_existed_resumes_with_its_default(digits, tmp_path):
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2, **SHORT)
    first = train(config, tmp_path, dataset=digits, progress=False)
    record = json.loads((tmp_path / "config.json").read_text())
    del record["config"]["label_noise"]  # as written by thermosgd before label noise existed
    (tmp_path / "config.json").write_text(json.dumps(record))
    again = train(config, tmp_path, dataset=digits, progress=False)
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    noisy = TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2,
                        label_noise=0.3, **SHORT)
    with pytest.raises(ValueError, match=r"another configuration \(label_noise 0.0 -> 0.3[;)]"):
        train(noisy, tmp_path, dataset=digits, progress=False)
    with pytest.raises(ValueError, match=r"--label-noise\) must be a fraction in \[0, 1\]"):
        TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-2, label_noise=2)


def _train_command(out):
    return [sys.executable, "-m", "thermosgd.cli", "train", "--protocol", "fixed-sphere",
            "--lr", "0.01", "--radius", "2", "--width", "2", "--iterations", "900",
            "--log-every", "100", "--log-linear-until", "600", "--log-points", "3",
            "--queue-size", "8", "--stationary-logs", "3", "--device", "cpu",
            "--checkpoint-every", "0", "--no-progress", "--out", str(out)]


_ENV = dict(os.environ, OMP_NUM_THREADS="2")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    subprocess.run(_train_command(out), check=True, env=_ENV, timeout=300, capture_output=True)
    return pd.read_parquet(out / "metrics.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["before-checkpoint", "after-checkpoint"])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, moment, uninterrupted):
    """kill -9 at two moments (before the first checkpoint exists, and mid-run after one), start
    the same command again: the metrics equal those of an uninterrupted run bit for bit."""
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_command(out), env=_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = out / ("config.json" if moment == "before-checkpoint" else "checkpoint.pt")
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if moment == "after-checkpoint":
        time.sleep(0.3)  # mid-segment, past the first checkpoint
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    subprocess.run(_train_command(out), check=True, env=_ENV, timeout=300, capture_output=True)
    resumed = pd.read_parquet(out / "metrics.parquet")
    assert len(resumed) == 9
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("protocol,lr,kw", PROTOCOLS)
def test_cuda_training_steps_never_sync_with_the_host(protocol, lr, kw):
    """Between log points nothing waits for the GPU: CUDA's sync debug mode raises on any
    synchronizing call. The run then finishes on CUDA like on the CPU."""
    data = load_dataset("digits", device="cuda")
    configs = [TrainConfig(protocol=protocol, learning_rate=lr, **kw,
                           **(SHORT | {"device": "cuda"}))]
    engine = Engine(configs, data, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        engine.advance(60)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert engine.close_window() == {}
    result = train(configs[0], dataset=data, progress=False)
    assert result.summary["status"] == "finished"
    assert np.isfinite(result.metrics["trace_cov"]).all()


# --- G configurations --------------------------------------------------------------------------


def _copy_state(engine, others):
    """Put G = 1 engines' weights, BatchNorm buffers and queues into ``engine``, in place."""
    with torch.no_grad():
        engine.weights.copy_(torch.cat([o.weights for o in others]))
        for name, stacked in engine.buffers.items():
            stacked.copy_(torch.cat([o.buffers[name] for o in others]))
        engine.queue.data.copy_(torch.cat([o.queue.data for o in others]))


@pytest.mark.parametrize("protocol,rates,kw", GRIDS)
def test_loop_mechanism_is_bitwise_each_configuration_alone(digits, protocol, rates, kw):
    """Same start, same batches, same kernels: 120 steps (three log windows) give bit-identical
    weights, BatchNorm statistics, entropy queues and window means; the log point's estimators
    then agree to float32 rounding."""
    configs = _configs(protocol, rates, kw, 3)
    batch = Engine(configs, digits, mechanism="loop")
    alone = [Engine([c], digits) for c in configs]
    for stop in (40, 80, 120):
        for engine in (batch, *alone):
            engine.advance(stop)
            assert engine.close_window() == {}
    rows = batch.measure()
    for j, (single, row) in enumerate(zip(alone, rows)):
        assert torch.equal(batch.weights[j], single.weights[0])
        for name, buf in single.buffers.items():
            assert torch.equal(batch.buffers[name][j], buf[0]), name
        assert torch.equal(batch.queue.data[j], single.queue.data[0])
        assert batch.windows[j] == pytest.approx(single.windows[0], rel=0, abs=0, nan_ok=True)
        expected = single.measure()[0]
        assert list(row) == list(expected)
        for key, value in expected.items():  # the pass's sums reduce over the (G, ...) stack:
            # float32 summation order, so equal to a few float32 ulps
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("protocol,rates,kw", GRIDS)
def test_vmap_first_step_matches_the_loop(digits, protocol, rates, kw):
    """Same start (bitwise), same mini-batch, same update: after one step the weights agree to
    float32 rounding of the gradient (vmap's convolution sums differ by a few ulps). Later steps
    are compared by the drift test below: a ulp can flip a max-pool's argmax or a ReLU, and the
    gradient then changes by O(1) in a few coordinates (seen from step 2 at eta = 0.02)."""
    configs = _configs(protocol, rates, kw, 3)
    vmapped, looped = (Engine(configs, digits, mechanism=m) for m in ("vmap", "loop"))
    assert torch.equal(vmapped.weights, looped.weights)
    vmapped.advance(1)
    looped.advance(1)
    scale = float(looped.weights.norm(dim=1).max())
    torch.testing.assert_close(vmapped.weights, looped.weights, rtol=0, atol=5e-6 * scale)
    for name, buf in looped.buffers.items():
        if buf.is_floating_point():
            torch.testing.assert_close(vmapped.buffers[name], buf, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("protocol,rates,kw", GRIDS)
def test_measurements_match_on_the_same_weights(digits, protocol, rates, kw):
    """Given identical weights, vmap's log point equals the loop's up to float32 gradient
    rounding (relative 1e-6 per gradient, far below 1e-3 after the estimators)."""
    configs = _configs(protocol, rates, kw, 3)
    looped, vmapped = (Engine(configs, digits, mechanism=m) for m in ("loop", "vmap"))
    looped.advance(40)
    looped.close_window()
    _copy_state(vmapped, [looped])
    vmapped.iteration, vmapped.windows = looped.iteration, looped.windows
    for row, expected in zip(vmapped.measure(), looped.measure()):
        assert list(row) == list(expected)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-3, abs=1e-9, nan_ok=True), key


def test_vmap_trajectories_stay_within_the_engines_own_rounding_sensitivity(digits):
    """Over 120 steps the early, chaotic phase amplifies any rounding difference. A run started
    from weights perturbed by 1e-7 (relative, about one float32 ulp) drifts as far: the vmap
    run must stay within 10x that drift of each configuration's run alone."""
    configs = _configs("fixed-elr", *GRIDS[1][1:], 3)
    vmapped = Engine(configs, digits, mechanism="vmap")
    vmapped.advance(120)
    for j, config in enumerate(configs):
        run, nudged = Engine([config], digits), Engine([config], digits)
        with torch.no_grad():
            noise = torch.randn(nudged.d, generator=torch.Generator().manual_seed(j))
            nudged.weights.mul_(1 + 1e-7 * noise)
        run.advance(120)
        nudged.advance(120)
        drift = float((nudged.weights - run.weights).norm())
        gap = float((vmapped.weights[j] - run.weights[0]).norm())
        assert gap <= 10 * drift + 1e-6 * float(run.weights.norm())


def test_batched_runs_write_the_single_run_format(digits, tmp_path):
    configs = _configs("fixed-sphere", *GRIDS[2][1:], 2)
    outs = [tmp_path / f"b{i}" for i in range(2)]
    results = train_batched(configs, outs, dataset=digits, progress=False)
    single = train(configs[0], tmp_path / "s0", dataset=digits, progress=False)
    for out in outs:
        assert sorted(p.name for p in out.iterdir()) == sorted(
            p.name for p in (tmp_path / "s0").iterdir())
    record_b = json.loads((outs[0] / "config.json").read_text())
    record_s = json.loads((tmp_path / "s0" / "config.json").read_text())
    assert set(record_b) == set(record_s) and record_b["config"] == record_s["config"]
    summary_b = json.loads((outs[0] / "summary.json").read_text())
    assert set(summary_b) == set(single.summary) and summary_b["status"] == "finished"
    metrics_b = pd.read_parquet(outs[0] / "metrics.parquet")
    assert list(metrics_b.columns) == list(single.metrics.columns)
    assert list(metrics_b.columns[:len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert metrics_b["iteration"].tolist() == single.metrics["iteration"].tolist()
    np.testing.assert_allclose(metrics_b["radius"], 2.0, rtol=1e-5)
    assert [r.summary["status"] for r in results] == ["finished", "finished"]
    # a second call reads the finished runs back
    again = train_batched(configs, outs, dataset=digits, progress=False)
    pd.testing.assert_frame_equal(again[1].metrics, results[1].metrics)


def test_a_diverging_configuration_leaves_the_batch(digits, tmp_path):
    """eta_eff = 50 blows up within the first window; its neighbours finish as if alone (the
    CPU's "loop" mechanism: same trajectory, log-point estimators to float32 rounding)."""
    configs = [TrainConfig(protocol="fixed-elr", learning_rate=lr, weight_decay=0.1, seed=i,
                           **BATCH) for i, lr in enumerate((0.005, 50.0, 0.01))]
    outs = [tmp_path / f"r{i}" for i in range(3)]
    results = train_batched(configs, outs, dataset=digits, progress=False)
    assert [r.summary["status"] for r in results] == ["finished", "diverged", "finished"]
    assert 1 <= results[1].summary["diverged_at"] <= 40
    alone = train(configs[2], dataset=digits, progress=False)
    for column in ("radius", "train_loss", "trace_cov", "test_acc"):
        np.testing.assert_allclose(results[2].metrics[column], alone.metrics[column], rtol=1e-6)
    assert json.loads((outs[1] / "summary.json").read_text())["status"] == "diverged"


def test_max_batch_and_resume_from_checkpoints(digits, tmp_path):
    """max_batch splits the grid; a second call after a partial run (one configuration's
    checkpoint removed mid-way, as after a kill) resumes each group from its own iteration."""
    configs = _configs("fixed-lr", *GRIDS[0][1:], 3)
    outs = [tmp_path / f"r{i}" for i in range(3)]
    first = train_batched(configs, outs, dataset=digits, progress=False, max_batch=2,
                          checkpoint_every=0)
    # pretend the run was killed: drop the summaries, roll r1 back to no checkpoint
    for out in outs:
        (out / "summary.json").unlink()
    (outs[1] / "checkpoint.pt").unlink()
    (outs[1] / "checkpoint.prev.pt").unlink()
    again = train_batched(configs, outs, dataset=digits, progress=False, checkpoint_every=0)
    for a, b in zip(first, again):
        assert b.summary["status"] == "finished"
        assert b.metrics["iteration"].tolist() == a.metrics["iteration"].tolist()
    # r0 and r2 resumed from their final checkpoint: nothing re-run, metrics unchanged
    pd.testing.assert_frame_equal(again[0].metrics, first[0].metrics)
    # r1 trained again from scratch, alone: the same trajectory; the log point's estimators,
    # then reduced over a stack of one instead of two, agree to float32 rounding
    pd.testing.assert_frame_equal(again[1].metrics, first[1].metrics, rtol=1e-6)


def test_an_unknown_mechanism_is_refused(digits):
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, **BATCH)
    with pytest.raises(ValueError, match="mechanism must be one of auto, loop, vmap"):
        train_batched([config], dataset=digits, progress=False, mechanism="groups")
    with pytest.raises(ValueError, match="mechanism must be one of auto, loop, vmap"):
        Engine([config], digits, mechanism="groups")


def test_mixed_architectures_are_refused(digits):
    a = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, **BATCH)
    b = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3,
                    **(BATCH | {"width": 4}))
    with pytest.raises(ValueError, match="must share width"):
        train_batched([a, b], dataset=digits, progress=False)


def test_entropy_queue_memory_is_configurable(digits):
    """A float16 queue holds the same snapshots in half the memory; the entropy it gives stays
    close to the float32 queue's (float16 keeps 11 bits: relative spacing 5e-4, far below the
    snapshots' spread, which sets the nearest-neighbour distances)."""
    configs = _configs("fixed-lr", *GRIDS[0][1:], 2)
    full = Engine(configs, digits, mechanism="loop")
    half = Engine(configs, digits, queue_device="cpu", queue_dtype=torch.float16,
                  mechanism="loop")
    assert half.queue.data.dtype == torch.float16
    assert half.queue.data.nbytes * 2 == full.queue.data.nbytes
    for engine in (full, half):
        engine.advance(80)
        engine.close_window()
    # float16 rounding: half a unit in the last place, 2^-11 relative, 2^-25 absolute (subnormals)
    torch.testing.assert_close(half.queue.data.float(), full.queue.data, rtol=2**-11,
                               atol=2**-25)
    for a, b in zip(full.measure(), half.measure()):
        assert np.isfinite(b["entropy_sphere"])
        assert b["entropy_sphere"] == pytest.approx(a["entropy_sphere"], rel=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_engine_on_cuda():
    """The GPU path: G = 3 on CUDA, vmap with the queues in pinned host memory, against the
    loop on the same device (same CUDA generators, so the same batches): the first step agrees
    to float32 rounding, and a whole run finishes under both mechanisms."""
    data = load_dataset("digits", device="cuda")
    configs = _configs("fixed-elr", *GRIDS[1][1:], 3, device="cuda")
    vmapped = Engine(configs, data, device="cuda", queue_device="cpu",
                     queue_dtype=torch.float16, mechanism="vmap")
    looped = Engine(configs, data, device="cuda", mechanism="loop")
    assert vmapped.queue.data.is_pinned() and vmapped.queue.data.dtype == torch.float16
    vmapped.advance(1)
    looped.advance(1)
    torch.testing.assert_close(vmapped.weights, looped.weights, rtol=0,
                               atol=5e-6 * float(looped.weights.norm(dim=1).max()))
    for mechanism in ("vmap", "loop"):
        results = train_batched(configs, dataset=data, progress=False, mechanism=mechanism)
        assert [r.summary["status"] for r in results] == ["finished"] * 3
