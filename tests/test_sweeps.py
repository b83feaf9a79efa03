"""Sweeps: presets against appendix F's Table 3, TOML grids, the resumable local runner, locks,
status, collect, bad input, and a real local Ray instance with a worker killed mid-run."""

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

from thermosgd import sweeps as sweep
from thermosgd.sweeps import directory, local
from thermosgd.cli import main

TINY = """
name = "tiny"
protocol = "fixed-lr"
model = "convnet"
width = 2
dataset = "digits"
iterations = {iterations}
queue_size = 4
learning_rates = [0.1, 0.2, 0.4]
weight_decays = [0.02, 0.04, 0.08]
[train]
log_every = 50
log_linear_until = 200
log_points = {log_points}
queue_every = 10
stationary_logs = 2
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(iterations=100, log_points=0))
    return path


@pytest.mark.parametrize("name,runs,iterations,queue", [
    ("resnet18-cifar10-fixed-lr", 19 * 5, 10**6, 1000),
    ("resnet18-cifar10-fixed-elr", 14 * 5, 10**6, 1000),
    ("resnet18-cifar100-fixed-sphere", 14 * 5, 2 * 10**6, 1000),
    ("convnet-cifar10-fixed-lr", 13 * 9, 2 * 10**6, 4000),
    ("convnet-cifar100-fixed-elr", 13 * 9, 2 * 10**6, 4000),
    ("convnet-cifar10-fixed-sphere", 13 * 5, 2 * 10**6, 4000),
])
def test_presets_follow_table_3(name, runs, iterations, queue):
    preset = sweep.PRESETS[name]
    assert (preset.size, preset.iterations, preset.queue_size) == (runs, iterations, queue)


def test_preset_grids_are_the_papers_values():
    lr = sweep.PRESETS["resnet18-cifar10-fixed-lr"]
    np.testing.assert_allclose(lr.learning_rates, 10.0 ** (-3 + np.arange(19) / 6), rtol=1e-6)
    np.testing.assert_allclose(lr.weight_decays, 10.0 ** (-3 + np.arange(5) / 2), rtol=1e-6)
    c100 = sweep.PRESETS["convnet-cifar100-fixed-lr"]
    assert c100.width == 16 and c100.weight_decays[0] == pytest.approx(1e-2)
    np.testing.assert_allclose(sweep.PRESETS["convnet-cifar10-fixed-sphere"].radii,
                               [0.25, 0.5, 1, 2, 4])
    elr = sweep.PRESETS["convnet-cifar10-fixed-elr"]
    np.testing.assert_allclose(elr.learning_rates, 10.0 ** (-4 + np.arange(13) / 6), rtol=1e-6)


def test_scale_shrinks_the_run_and_keeps_the_schedule_shape():
    preset = sweep.PRESETS["resnet18-cifar10-fixed-lr"]
    config = preset.configs(data="x", scale=0.01)[0]
    assert (config.iterations, config.log_every, config.log_linear_until,
            config.queue_every) == (10_000, 2, 100, 1)
    assert config.queue_size == 1000 and config.log_points == 150
    with pytest.raises(ValueError, match="--scale must be positive"):
        preset.configs(data="x", scale=0)


def test_toml_grid_and_its_errors(tmp_path, tiny):
    loaded = sweep.load_sweep(str(tiny))
    assert loaded.size == 9 and loaded.train["log_every"] == 50
    ranged = tmp_path / "ranged.toml"
    ranged.write_text('protocol = "fixed-sphere"\nlearning_rates = {from = 0.01, to = 1, num = 3}'
                      '\nradii = [1, 2]\n')
    np.testing.assert_allclose(sweep.load_sweep(str(ranged)).learning_rates, [0.01, 0.1, 1.0])
    bad = tmp_path / "bad.toml"
    bad.write_text('protocol = "fixed-lr"\nlearning_rates = [0.1, -0.2]\nweight_decays = [0.01]\n')
    with pytest.raises(ValueError, match=r"grid point \(-0.2, 0.01\).*positive"):
        sweep.load_sweep(str(bad))
    bad.write_text('protocol = "fixed-lr"\nlearning_rates = [0.1]\nweight_decay = [0.01]\n')
    with pytest.raises(ValueError, match="needs weight_decays"):
        sweep.load_sweep(str(bad))
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        sweep.load_sweep("nope")


def test_local_run_is_idempotent_and_collects(tmp_path, tiny, digits):
    spec, out = sweep.load_sweep(str(tiny)), tmp_path / "sw"
    first = sweep.run_local(spec, out, dataset=digits, device="cpu", progress=False)
    assert {r["status"] for r in first.values()} == {"finished"} and len(first) == 9
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert sweep.run_local(spec, out, dataset=digits, device="cpu", progress=False) == {}
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    states = sweep.status(out)
    assert len(states["finished"]) == 9 and not states["pending"]
    metrics, table = sweep.collect(out)
    assert len(table) == 9 and set(table["status"]) == {"finished"}
    assert len(metrics) == 9 * 2  # two logs per run
    on_disk = pd.read_csv(out / "stationary.csv")
    assert list(on_disk.columns[:7]) == ["run", "protocol", "learning_rate", "weight_decay",
                                         "sphere_radius", "seed", "status"]
    one = out / "runs" / "fixed-lr_lr0.2_wd0.04_seed0"
    summary = json.loads((one / "summary.json").read_text())
    row = on_disk.set_index("run").loc[one.name]
    assert row["radius"] == pytest.approx(summary["stationary"]["radius"])
    assert pd.read_parquet(out / "metrics.parquet")["learning_rate"].nunique() == 3


def test_a_locked_configuration_belongs_to_its_worker(tmp_path, tiny, digits):
    """Another worker's lock: the configuration is skipped and shows as running; interrupted
    runs (a checkpoint, no worker) show as interrupted and are resumed."""
    spec, out = sweep.load_sweep(str(tiny)), tmp_path / "sw"
    configs = spec.configs(device="cpu")
    directory.claim_sweep_dir(out, spec, 1.0)
    taken = sweep.run_name(configs[0])
    held = directory._lock(out, taken)
    held.acquire()
    child = subprocess.run(  # status from another process sees the lock
        [sys.executable, "-m", "thermosgd.cli", "sweep", "status", str(out)],
        capture_output=True, text=True, check=True)
    assert "running: " + taken in child.stdout
    try:
        results = local.run_group(configs[:2], [out / "runs" / sweep.run_name(c)
                                                for c in configs[:2]],
                                  sweep_dir=out, dataset=digits, progress=False)
    finally:
        held.release()
    assert results[taken]["status"] == "running"
    assert not (out / "runs" / taken).exists()
    other = sweep.run_name(configs[1])
    assert results[other]["status"] == "finished"
    (out / "runs" / other / "summary.json").unlink()  # as if killed after the last checkpoint
    states = sweep.status(out)
    assert states["interrupted"] == [other] and taken in states["pending"]


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def test_bad_input_exits_2_and_overwrites_nothing(tmp_path, tiny, capsys):
    out = tmp_path / "sw"
    code, err = _cli(["sweep", "run", "no-such-preset", "--out", str(out)], capsys)
    assert code == 2 and "unknown preset 'no-such-preset'" in err and not out.exists()
    code, err = _cli(["sweep", "run", "--protocol", "fixed-lr", "--lr", "0.1", "1e400",
                      "--wd", "0.01", "--out", str(out)], capsys)
    assert code == 2 and "positive and finite" in err and not out.exists()
    code, err = _cli(["sweep", "run", "resnet18-cifar10-fixed-lr", "--out", str(out)], capsys)
    assert code == 2 and "--data" in err and not out.exists()
    assert main(["sweep", "run", str(tiny), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"}
    code, err = _cli(["sweep", "run", "convnet-digits-fixed-lr", "--out", str(out)], capsys)
    assert code == 2 and "holds the sweep 'tiny'" in err
    code, err = _cli(["sweep", "run", str(tiny), "--scale", "0.5", "--out", str(out)], capsys)
    assert code == 2 and "scale 1" in err
    code, err = _cli(["sweep", "run", str(tiny), "--executor", "ray", "--address",
                      "127.0.0.1:9", "--out", str(out)], capsys)
    assert code == 2 and "cannot reach a Ray cluster at 127.0.0.1:9" in err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"}
    assert after == before
    code, err = _cli(["sweep", "status", str(tmp_path)], capsys)
    assert code == 2 and "not a sweep directory" in err
    code, err = _cli(["collect", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "not a sweep directory" in err


def test_sweep_list_and_status_smoke(tmp_path, tiny, capsys):
    assert main(["sweep", "list"]) == 0
    listing = capsys.readouterr().out
    assert "resnet18-cifar10-fixed-lr" in listing and "95" in listing
    out = tmp_path / "sw"
    assert main(["sweep", "run", str(tiny), "--out", str(out), "--no-progress"]) == 0
    assert "9 finished" in capsys.readouterr().out
    assert main(["sweep", "status", str(out)]) == 0
    assert "finished        9" in capsys.readouterr().out
    assert main(["collect", str(out)]) == 0
    assert (out / "stationary.csv").is_file() and (out / "metrics.parquet").is_file()


def _ray_workers():
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "ray::_train_group" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.slow
def test_ray_executor_survives_a_killed_worker(tmp_path, digits):
    """A real local Ray instance runs the 3 x 3 sweep (one task per configuration, one CPU
    each); one worker is killed with SIGKILL after its run wrote a checkpoint. Ray retries the
    task, which resumes from the checkpoint: every run finishes, and the stationary table equals
    the local executor's at the same thread count (1), bit for bit."""
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY.format(iterations=400, log_points=0))
    out = tmp_path / "ray"
    proc = subprocess.Popen(
        [sys.executable, "-m", "thermosgd.cli", "sweep", "run", str(toml), "--executor", "ray",
         "--out", str(out), "--checkpoint-every", "0", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        mid_run = {str(out / "locks" / f"{p.parent.name}.lock")
                   for p in out.glob("runs/*/checkpoint.pt")
                   if not (p.parent / "summary.json").exists()}
        for worker in _ray_workers() if mid_run else []:
            try:  # the worker holding a mid-run configuration's lock
                if mid_run & {f.path for f in worker.open_files()}:
                    killed = worker.pid
                    os.kill(killed, signal.SIGKILL)
                    break
            except psutil.Error:
                continue
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "no worker was caught mid-run: " + stderr[-2000:]
    assert proc.returncode == 0, stderr[-2000:]
    assert "9 finished" in stdout, stdout[-600:]
    resumed = int(stdout.split(" resumed from checkpoints")[0].rsplit(" ", 1)[-1])
    assert resumed >= 1, stdout
    _, ray_table = sweep.collect(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each Ray task trains with its one CPU's thread
    try:
        spec = sweep.load_sweep(str(toml))
        sweep.run_local(spec, tmp_path / "local", dataset=digits, device="cpu", progress=False,
                        checkpoint_every=0)
    finally:
        torch.set_num_threads(threads)
    _, local_table = sweep.collect(tmp_path / "local")
    pd.testing.assert_frame_equal(ray_table, local_table)


def test_cpu_workers_train_in_parallel_processes_like_one_thread_runs(tmp_path, tiny, digits):
    """Two worker processes of one thread each give every configuration the metrics it gets
    when trained alone with one thread, bit for bit."""
    spec = sweep.sweep_from_options(str(tiny), learning_rates=[0.1, 0.2], weight_decays=[0.02])
    parallel = sweep.run_local(spec, tmp_path / "parallel", device="cpu", progress=False,
                               workers=2)
    assert {r["status"] for r in parallel.values()} == {"finished"} and len(parallel) == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep.run_local(spec, tmp_path / "alone", dataset=digits, device="cpu", progress=False,
                        workers=1)
    finally:
        torch.set_num_threads(threads)
    for name in parallel:
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "parallel" / "runs" / name / "metrics.parquet"),
            pd.read_parquet(tmp_path / "alone" / "runs" / name / "metrics.parquet"),
            check_exact=True)


def test_workers_must_be_positive(tmp_path, tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "run", str(tiny), "--out", str(tmp_path / "x"), "--workers", "0"])
    assert exc.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("line,message", [
    ('iterations = "abc"', "iterations must be a positive integer"),
    ("seeds = [-1]", "seeds must be a list of integers in [0, 2^63)"),
    ("seeds = [0.5]", "seeds must be a list of integers in [0, 2^63)"),
    ("seeds = [18446744073709551616]", "seeds must be a list of integers in [0, 2^63)"),
    ('width = "x"', "width must be a positive integer"),
    ("train = 3", "train must be a table"),
])
def test_toml_fields_are_checked_before_anything_is_written(tmp_path, capsys, line, message):
    grid = tmp_path / "g.toml"
    grid.write_text(f'protocol = "fixed-lr"\nlearning_rates = [0.1]\nweight_decays = [0.01]\n'
                    f"{line}\n")
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "run", str(grid), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_negative_seeds_on_the_command_line_are_refused(tmp_path, tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "run", str(tiny), "--seeds", "-1", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "seeds must be integers in [0, 2^63)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_damaged_summary_is_named_and_the_sweep_goes_on(tmp_path, tiny, digits, capsys):
    spec, out = sweep.load_sweep(str(tiny)), tmp_path / "sw"
    sweep.run_local(spec, out, dataset=digits, device="cpu", progress=False, workers=1)
    broken = out / "runs" / "fixed-lr_lr0.2_wd0.04_seed0" / "summary.json"
    broken.write_text("{garbage")
    assert main(["sweep", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "damaged         1" in text and "fixed-lr_lr0.2_wd0.04_seed0" in text
    again = sweep.run_local(spec, out, dataset=digits, device="cpu", progress=False, workers=1)
    assert list(again) == ["fixed-lr_lr0.2_wd0.04_seed0"]
    assert again["fixed-lr_lr0.2_wd0.04_seed0"]["status"] == "damaged"
    assert str(broken) in again["fixed-lr_lr0.2_wd0.04_seed0"]["error"]
    assert broken.read_text() == "{garbage"  # nothing else touched
