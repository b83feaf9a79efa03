"""The single-run trainer: update rules on the flat weights, measurements, files, resume, divergence.

Runs use scikit-learn's digits with a ConvNet of width 2 (d = 1530) so each takes seconds.
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

from conftest import NO_BAR
from thermosgd import theory
from thermosgd.nn import measure
from thermosgd.nn.data import load_dataset
from thermosgd.nn.trainer import TrainConfig, _Run, train
from thermosgd.results.schema import METRIC_COLUMNS

SHORT = {"model": "convnet", "width": 2, "iterations": 300, "log_every": 50, "log_linear_until": 200,
             "log_points": 2, "queue_size": 6, "queue_every": 25, "stationary_logs": 3, "device": "cpu"}
PROTOCOLS = [("fixed-lr", 0.1, {"weight_decay": 1e-2}),
             ("fixed-elr", 0.01, {"weight_decay": 1e-2}),
             ("fixed-sphere", 0.01, {"radius": 2.0})]


@pytest.mark.parametrize("protocol,lr,kw", PROTOCOLS)
def test_one_step_is_the_protocols_update_rule(digits, protocol, lr, kw):
    """One training step equals eq. 2 / 8 / 15 written out by hand, and the frozen head and
    the model's parameters (views of the flat weights) follow."""
    run = _Run(TrainConfig(protocol=protocol, learning_rate=lr, **kw, **SHORT), digits, "cpu", None)
    head = run.model.head.weight.clone()
    w0 = run.w.clone()
    state = run.generator.get_state()
    idx = torch.randint(0, digits.num_train, (1, 128), generator=run.generator)[0]
    run.generator.set_state(state)
    loss = F.cross_entropy(run.model(digits.train_x[idx]), digits.train_y[idx])
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, run.params)])
    run._segment(1, NO_BAR)
    if protocol == "fixed-lr":
        expected = w0 - lr * (g + kw["weight_decay"] * w0)
    elif protocol == "fixed-elr":
        expected = w0 - lr * (w0 @ w0) * (g + kw["weight_decay"] * w0)
    else:
        v = w0 - lr * kw["radius"] ** 2 * g
        expected = kw["radius"] * v / v.norm()
    # float32 vector arithmetic in a different order: a few ulps of |w| ~ 1
    torch.testing.assert_close(run.w, expected, rtol=1e-6, atol=1e-7)
    flat = torch.cat([p.detach().reshape(-1) for p in run.params])
    assert torch.equal(flat, run.w)
    assert torch.equal(run.model.head.weight, head)


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
    """eta_eff = 50 blows the norm up within a few steps: the run stops, says where, exit normally."""
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
    with pytest.raises(ValueError, match=r"another configuration \(label_noise 0.0 -> 0.3\)"):
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


@pytest.mark.parametrize("moment", ["before-checkpoint", "after-checkpoint"])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, moment, uninterrupted):
    """kill -9 at two moments (before the first checkpoint exists, and mid-run after one), start
    the same command again: the metrics equal those of an uninterrupted run bit for bit."""
    env = _ENV
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_command(out), env=env, stdout=subprocess.DEVNULL,
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
    subprocess.run(_train_command(out), check=True, env=env, timeout=300, capture_output=True)
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
    config = TrainConfig(protocol=protocol, learning_rate=lr, **kw, **(SHORT | {"device": "cuda"}))
    run = _Run(config, data, "cuda", None)
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = run._advance(60, NO_BAR)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert run._close_window(sums, 60, 0) is None
    result = train(config, dataset=data, progress=False)
    assert result.summary["status"] == "finished"
    assert np.isfinite(result.metrics["trace_cov"]).all()
