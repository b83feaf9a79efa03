"""A run directory is never resumed or reported under another configuration, its damaged files
are named, a checkpoint is replaced only by a verified one (the previous one kept), and the
edges of a run (divergence before the first log, a rate too small to move a float32 weight,
an early first checkpoint)."""

import json
import logging
import shutil
import struct
import zipfile

import pandas as pd
import pytest

from thermosgd.cli import main
from thermosgd.nn import training
from thermosgd.results import rundir
from thermosgd.results.schema import METRIC_COLUMNS

TINY = ["--dataset", "digits", "--width", "2", "--iterations", "60", "--log-every", "20",
        "--log-linear-until", "60", "--log-points", "0", "--queue-size", "2",
        "--queue-every", "10", "--stationary-logs", "1", "--device", "cpu", "--no-progress"]


def _train(out, lr="0.1", *extra):
    return main(["train", "--protocol", "fixed-lr", "--lr", lr, "--wd", "0.01",
                 "--out", str(out), *TINY, *extra])


def _refused(capsys, out, lr="0.1", *extra):
    with pytest.raises(SystemExit) as exc:
        _train(out, lr, *extra)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def _files(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run that took a checkpoint at every log point (three: the newest and the
    previous one are kept)."""
    out = tmp_path_factory.mktemp("rundir") / "run"
    assert _train(out, "0.1", "--checkpoint-every", "0") == 0
    return out


def test_every_record_of_the_run_is_checked_against_the_options(tmp_path, finished, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = _files(out)
    (out / "config.json").unlink()
    err = _refused(capsys, out, "0.3")
    assert "learning_rate 0.1 -> 0.3" in err and "thermosgd.json" in err
    (out / "summary.json").unlink()  # interrupted, config.json lost: the checkpoint says too
    manifest = json.loads(before["thermosgd.json"])
    manifest["config"]["learning_rate"] = 0.3
    (out / "thermosgd.json").write_text(json.dumps(manifest))
    err = _refused(capsys, out, "0.3")
    assert "checkpoint of another configuration" in err and "learning_rate 0.1 -> 0.3" in err
    assert not (out / "config.json").exists() and not (out / "summary.json").exists()


def test_a_lost_config_json_is_rebuilt_from_the_runs_own_records(tmp_path, finished, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    original = json.loads((out / "config.json").read_text())
    (out / "config.json").unlink()
    assert _train(out) == 0 and "finished 60 iterations" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text()) == original
    (out / "config.json").unlink()
    (out / "summary.json").unlink()  # resumed from the last checkpoint
    assert _train(out) == 0
    assert json.loads((out / "config.json").read_text()) == original


def _flip_a_tensor_bit(path):
    """Flip one bit in the middle of the largest tensor stored in a torch zip checkpoint (torch
    stores tensor data uncompressed and checks no CRC of it on reading)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[header + 26: header + 30])
    data[header + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "bitflip"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, finished, capsys, caplog,
                                                             damage):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    metrics = pd.read_parquet(out / "metrics.parquet")
    (out / "summary.json").unlink()
    data = (out / "checkpoint.pt").read_bytes()
    if damage == "bitflip":
        _flip_a_tensor_bit(out / "checkpoint.pt")
    else:
        (out / "checkpoint.pt").write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                                             "garbage": b"not a checkpoint" * 50}[damage])
    assert rundir.problem(out) is None  # the previous one is good: the run can resume
    with caplog.at_level(logging.WARNING, logger="thermosgd"):
        assert _train(out) == 0
    assert "resuming from the previous checkpoint checkpoint.prev.pt (iteration 40)" in caplog.text
    if damage == "bitflip":
        assert "do not match their CRC-32" in caplog.text
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), metrics)
    assert rundir.load_checkpoint(out)["iteration"] == 60  # a good one again


def test_a_finished_run_with_a_damaged_checkpoint_reads_back_without_a_resume(
        tmp_path, finished, capsys, caplog):
    """A finished run resumes nothing: its damaged checkpoint is neither loaded nor reported as
    a resume; the run reads back from its metrics."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint" * 50)
    with caplog.at_level(logging.WARNING, logger="thermosgd"):
        assert _train(out) == 0
    assert "finished 60 iterations" in capsys.readouterr().out
    assert "resuming" not in caplog.text


def test_two_damaged_checkpoints_are_named_and_nothing_is_touched(tmp_path, finished, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "summary.json").unlink()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).write_bytes((out / name).read_bytes()[:100])
    before = _files(out)
    err = _refused(capsys, out)
    assert f"{out / 'checkpoint.pt'} is damaged" in err and "delete" in err
    assert _files(out) == before
    assert "checkpoint.pt is damaged" in rundir.problem(out)


@pytest.mark.parametrize("name", ["config.json", "summary.json", "thermosgd.json"])
def test_a_garbage_record_is_named(tmp_path, finished, capsys, name):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / name).write_text("{garbage")
    before = _files(out)
    err = _refused(capsys, out)
    assert f"{out / name}" in err and "damaged" in err
    assert _files(out) == before


def test_a_truncated_metrics_table_of_a_finished_run_is_named(tmp_path, finished, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "metrics.parquet").write_bytes((out / "metrics.parquet").read_bytes()[:50])
    err = _refused(capsys, out)
    assert "metrics.parquet is damaged" in err and "delete summary.json" in err
    (out / "summary.json").unlink()  # as the line says: read back from the last checkpoint
    assert _train(out) == 0
    assert len(pd.read_parquet(out / "metrics.parquet")) == 3


def test_a_new_checkpoint_replaces_the_old_only_once_it_loads(tmp_path, finished, monkeypatch):
    import torch

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = _files(out)
    state = rundir.load_checkpoint(out)
    config = training.TrainConfig(**state["config"])
    def half_a_file(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a file")

    monkeypatch.setattr(torch, "save", half_a_file)
    with pytest.raises(OSError, match="does not load back"):
        rundir.save_checkpoint(out / "checkpoint.pt", config=config, iteration=80,
                               w=state["w"], buffers=state["buffers"],
                               generator_state=state["generator"], queue=state["queue"],
                               rows=state["rows"], seconds=state["seconds"])
    assert _files(out) == before  # both checkpoints as they were, no temporary file left


def test_divergence_before_the_first_log_writes_a_typed_empty_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "1e30") == 0
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics.empty and tuple(metrics.columns) == METRIC_COLUMNS
    assert str(metrics["iteration"].dtype) == "int64" and str(metrics["radius"].dtype) == "float64"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["iterations_done"] <= summary["diverged_at"]


def test_a_rate_too_small_to_move_a_weight_is_recorded_as_diverged(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "1e-300") == 0
    assert "weights stopped moving" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "float32" in summary["reason"]


def test_the_first_checkpoint_comes_early(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "_FIRST_CHECKPOINT", 0.0)  # a minute, at this run's scale
    out = tmp_path / "run"
    assert _train(out, "0.1", "--checkpoint-every", "600") == 0
    # the first log point's checkpoint, then the last one: the first was kept as the previous
    assert rundir._load(out / "checkpoint.prev.pt")["iteration"] == 20
