"""The batched engine against the single-run trainer: steps, measurements, trajectories, files.

The "loop" mechanism is bitwise the single-run trainer. vmap evaluates the convolutions with a
different floating-point summation order, so its results are not bitwise equal; each tolerance
below says where its size comes from.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import NO_BAR
from thermosgd.nn import measure
from thermosgd.results.schema import METRIC_COLUMNS
from thermosgd.nn.batched import _Batch, train_batched
from thermosgd.nn.trainer import TrainConfig, _Run, train

SHORT = dict(model="convnet", width=2, iterations=120, log_every=40, log_linear_until=200,
             log_points=2, queue_size=4, queue_every=10, stationary_logs=2, device="cpu")
GRIDS = [("fixed-lr", (0.005, 0.01, 0.02), {"weight_decay": 1e-2}),
         ("fixed-elr", (0.002, 0.005, 0.01), {"weight_decay": 1e-2}),
         ("fixed-sphere", (0.002, 0.005, 0.01), {"radius": 2.0})]


def _configs(protocol, rates, kw, g):
    return [TrainConfig(protocol=protocol, learning_rate=lr, seed=i, **kw, **SHORT)
            for i, lr in enumerate(rates[:g])]


def _batch(configs, data, mechanism="vmap"):
    return _Batch(configs, [None] * len(configs), data, "cpu", queue_device=None,
                  queue_dtype=torch.float32, mechanism=mechanism)


def _copy_state(batch, runs):
    """Put the single runs' weights, BatchNorm buffers and queues into the batch."""
    with torch.no_grad():
        batch.W.copy_(torch.stack([run.w for run in runs]))
        for name in batch.buffers:
            batch.buffers[name].copy_(torch.stack(
                [dict(run.model.named_buffers())[name] for run in runs]))
        batch.queue.copy_(torch.stack([run.queue for run in runs]))


@pytest.mark.parametrize("g", [1, 3])
@pytest.mark.parametrize("protocol,rates,kw", GRIDS)
def test_loop_mechanism_is_bitwise_the_single_run_trainer(digits, protocol, rates, kw, g):
    """Same start, same batches, same kernels: 120 steps (three log windows) give bit-identical
    weights, BatchNorm statistics, entropy queues and window sums; the log point's estimators
    then agree to float32 rounding."""
    configs = _configs(protocol, rates, kw, g)
    batch = _batch(configs, digits, "loop")
    runs = [_Run(c, digits, "cpu", None) for c in configs]
    for stop in (40, 80, 120):
        assert batch._close_window(batch._advance(stop, NO_BAR), 40, stop - 40) == {}
        for run in runs:
            assert run._segment(stop, NO_BAR) is None
    rows = batch._measure()
    for j, (run, row) in enumerate(zip(runs, rows)):
        assert torch.equal(batch.W[j], run.w)
        for name, buf in run.model.named_buffers():
            assert torch.equal(batch.buffers[name][j], buf), name
        assert torch.equal(batch.queue[j], run.queue)
        assert list(batch.windows[j]) == list(run.window)
        np.testing.assert_array_equal(list(batch.windows[j].values()), list(run.window.values()))
        single = run._measure()
        assert list(row) == list(single)
        for key, value in single.items():  # norms and test sums reduce over the (G, ...)
            # stack here: float32 summation order, so equal to a few float32 ulps
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("g", [1, 3])
@pytest.mark.parametrize("protocol,rates,kw", GRIDS)
def test_first_step_matches_the_single_run_trainer(digits, protocol, rates, kw, g):
    """Same start (bitwise), same mini-batch, same update: after one step the weights agree to
    float32 rounding of the gradient (vmap's convolution sums differ by a few ulps). Later steps
    are compared by the drift test below: a ulp can flip a max-pool's argmax or a ReLU, and the
    gradient then changes by O(1) in a few coordinates (seen from step 2 at eta = 0.02)."""
    configs = _configs(protocol, rates, kw, g)
    batch = _batch(configs, digits)
    runs = [_Run(c, digits, "cpu", None) for c in configs]
    for j, run in enumerate(runs):
        assert torch.equal(run.w, batch.W[j])
    batch._advance(1, NO_BAR)
    for j, run in enumerate(runs):
        run._advance(1, NO_BAR)
        torch.testing.assert_close(batch.W[j], run.w, rtol=0, atol=5e-6 * float(run.w.norm()))
        for name, buf in run.model.named_buffers():
            if buf.is_floating_point():
                torch.testing.assert_close(batch.buffers[name][j], buf, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("protocol,rates,kw", GRIDS)
def test_measurements_match_on_the_same_weights(digits, protocol, rates, kw):
    """Given identical weights, the batched log point equals the single-run one up to float32
    gradient rounding (relative 1e-6 per gradient, far below 1e-3 after the estimators)."""
    configs = _configs(protocol, rates, kw, 3)
    batch = _batch(configs, digits)
    runs = [_Run(c, digits, "cpu", None) for c in configs]
    for run in runs:
        run._segment(40, NO_BAR)
    _copy_state(batch, runs)
    batch.iteration = 40
    batch.windows = [run.window for run in runs]
    rows = batch._measure()
    for run, row in zip(runs, rows):
        single = run._measure()
        assert list(row) == list(single)
        for key, value in single.items():
            assert row[key] == pytest.approx(value, rel=1e-3, abs=1e-9, nan_ok=True), key


def test_trajectories_stay_within_the_trainers_own_rounding_sensitivity(digits):
    """Over 120 steps the early, chaotic phase amplifies any rounding difference. The single-run
    trainer started from weights perturbed by 1e-7 (relative, about one float32 ulp) drifts as
    far: the batched run must stay within 10x that drift of the single-run trajectory."""
    configs = _configs("fixed-elr", GRIDS[1][1], GRIDS[1][2], 3)
    batch = _batch(configs, digits)
    batch._advance(120, NO_BAR)
    for j, config in enumerate(configs):
        run, nudged = _Run(config, digits, "cpu", None), _Run(config, digits, "cpu", None)
        with torch.no_grad():
            noise = torch.randn(nudged.d, generator=torch.Generator().manual_seed(j))
            nudged.w.mul_(1 + 1e-7 * noise)
        run._advance(120, NO_BAR)
        nudged._advance(120, NO_BAR)
        drift = float((nudged.w - run.w).norm())
        assert float((batch.W[j] - run.w).norm()) <= 10 * drift + 1e-6 * float(run.w.norm())


def test_batched_runs_write_the_single_run_format(digits, tmp_path):
    configs = _configs("fixed-sphere", GRIDS[2][1], GRIDS[2][2], 2)
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
                           **SHORT) for i, lr in enumerate((0.005, 50.0, 0.01))]
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
    configs = _configs("fixed-lr", GRIDS[0][1], GRIDS[0][2], 3)
    outs = [tmp_path / f"r{i}" for i in range(3)]
    first = train_batched(configs, outs, dataset=digits, progress=False, max_batch=2,
                          checkpoint_every=0)
    # pretend the run was killed: drop the summaries, roll r1 back to no checkpoint
    for out in outs:
        (out / "summary.json").unlink()
    (outs[1] / "checkpoint.pt").unlink()
    again = train_batched(configs, outs, dataset=digits, progress=False, checkpoint_every=0)
    for a, b in zip(first, again):
        assert b.summary["status"] == "finished"
        assert b.metrics["iteration"].tolist() == a.metrics["iteration"].tolist()
    # r0 and r2 resumed from their final checkpoint: nothing re-run, metrics unchanged
    pd.testing.assert_frame_equal(again[0].metrics, first[0].metrics)


def test_an_unknown_mechanism_is_refused(digits):
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, **SHORT)
    with pytest.raises(ValueError, match="mechanism must be one of auto, loop, vmap"):
        train_batched([config], dataset=digits, progress=False, mechanism="groups")


def test_mixed_architectures_are_refused(digits):
    a = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, **SHORT)
    b = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3,
                    **(SHORT | {"width": 4}))
    with pytest.raises(ValueError, match="must share width"):
        train_batched([a, b], dataset=digits, progress=False)


def test_entropy_queue_memory_is_configurable(digits):
    """A float16 queue holds the same snapshots in half the memory; the entropy it gives stays
    close to the float32 queue's (float16 keeps 11 bits: relative spacing 5e-4, far below the
    snapshots' spread, which sets the nearest-neighbour distances)."""
    configs = _configs("fixed-lr", GRIDS[0][1], GRIDS[0][2], 2)
    full = _batch(configs, digits, "loop")
    half = _Batch(configs, [None, None], digits, "cpu", queue_device="cpu",
                  queue_dtype=torch.float16, mechanism="loop")
    assert half.queue.dtype == torch.float16
    assert half.queue.nbytes * 2 == full.queue.nbytes
    for batch in (full, half):
        batch._close_window(batch._advance(80, NO_BAR), 80, 0)
    # float16 rounding: half a unit in the last place, 2^-11 relative, 2^-25 absolute (subnormals)
    torch.testing.assert_close(half.queue.float(), full.queue, rtol=2**-11, atol=2**-25)
    rows_full, rows_half = full._measure(), half._measure()
    for a, b in zip(rows_full, rows_half):
        assert np.isfinite(b["entropy_sphere"])
        assert b["entropy_sphere"] == pytest.approx(a["entropy_sphere"], rel=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_engine_on_cuda():
    """The GPU path: G = 3 on CUDA, vmap with the queues in pinned host memory, against the
    loop on the same device (same CUDA generators, so the same batches): the first step agrees
    to float32 rounding, and a whole run finishes under both mechanisms."""
    from thermosgd.nn.data import load_dataset

    data = load_dataset("digits", device="cuda")
    configs = [TrainConfig(protocol="fixed-elr", learning_rate=lr, weight_decay=1e-2, seed=i,
                           **(SHORT | {"device": "cuda"}))
               for i, lr in enumerate(GRIDS[1][1])]
    vmapped = _Batch(configs, [None] * 3, data, "cuda", queue_device="cpu",
                     queue_dtype=torch.float16, mechanism="vmap")
    looped = _Batch(configs, [None] * 3, data, "cuda", queue_device=None,
                    queue_dtype=torch.float32, mechanism="loop")
    assert vmapped.queue.is_pinned() and vmapped.queue.dtype == torch.float16
    vmapped._advance(1, NO_BAR)
    looped._advance(1, NO_BAR)
    torch.testing.assert_close(vmapped.W, looped.W, rtol=0,
                               atol=5e-6 * float(looped.W.norm(dim=1).max()))
    for mechanism in ("vmap", "loop"):
        results = train_batched(configs, dataset=data, progress=False, mechanism=mechanism)
        assert [r.summary["status"] for r in results] == ["finished"] * 3
