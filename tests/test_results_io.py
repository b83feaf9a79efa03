"""Result files: atomic, with the modes of ordinary files; manifests carry a readable schema."""

import json
import os
import shutil
import stat

import pandas as pd
import pytest
import torch

from thermosgd.cli import main
from thermosgd.results import io
from thermosgd.results.schema import READABLE_SCHEMAS, SCHEMA_VERSION


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda mask: os.umask(mask)
    os.umask(before)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_every_writer_gives_the_mode_open_would(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what an ordinary open() gives under this umask
    io.write_json(tmp_path / "a.json", {"x": 1})
    io.write_csv(tmp_path / "a.csv", pd.DataFrame({"x": [1]}))
    io.atomic_write(tmp_path / "a.parquet",
                    lambda tmp: pd.DataFrame({"x": [1]}).to_parquet(tmp))
    io.atomic_write(tmp_path / "a.pt", lambda tmp: torch.save({"x": 1}, tmp))
    from matplotlib.figure import Figure

    from thermosgd.report.plotting import save_figure

    save_figure(Figure(figsize=(1, 1)), tmp_path / "a.png")
    for name in ("a.json", "a.csv", "a.parquet", "a.pt", "a.png"):
        assert _mode(tmp_path / name) == _mode(plain) == 0o666 & ~mask, name
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_failed_write_leaves_nothing(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        io.atomic_write(tmp_path / "x.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_manifests_carry_the_schema_version(tmp_path):
    io.claim_output_dir(tmp_path, "sweep", {})
    record = json.loads((tmp_path / "thermosgd.json").read_text())
    assert record["schema"] == SCHEMA_VERSION and record["kind"] == "sweep"
    assert io.read_manifest(tmp_path)["schema"] == SCHEMA_VERSION


def test_a_manifest_without_a_version_is_0_1(tmp_path):
    (tmp_path / "thermosgd.json").write_text(json.dumps({"kind": "sweep", "config": {}}))
    assert io.read_manifest(tmp_path)["schema"] == "0.1"


def test_an_unknown_schema_names_what_it_found_and_what_it_reads(tmp_path, capsys):
    (tmp_path / "thermosgd.json").write_text(json.dumps({"kind": "sweep", "schema": "9.1",
                                                         "config": {}}))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "status", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "schema 9.1" in err and ", ".join(READABLE_SCHEMAS) in err


def test_a_damaged_manifest_is_named(tmp_path, capsys):
    (tmp_path / "thermosgd.json").write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01",
              "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "thermosgd.json is damaged" in err
    assert [p.name for p in tmp_path.iterdir()] == ["thermosgd.json"]


TRAIN = ["train", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01", "--width", "2",
         "--iterations", "60", "--log-every", "30", "--queue-size", "2", "--device", "cpu",
         "--no-progress", "--checkpoint-every", "0"]


def _exit(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return exc.value.code, err


def test_out_below_a_regular_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = _exit(capsys, [*TRAIN, "--out", str(tmp_path / "file" / "run")])
    assert code == 2 and "file" in err


def test_a_full_disk_names_the_file_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without its errno: the checkpoint's
    path and the full disk are named, and no temporary file is left."""
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(io.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    code, err = _exit(capsys, [*TRAIN, "--out", str(tmp_path / "run")])
    assert code == 2 and "checkpoint.pt" in err and "disk is full" in err
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_read_only_destination_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", dst)

    monkeypatch.setattr(io.os, "replace", read_only)
    code, err = _exit(capsys, ["simulate", "--protocol", "fixed-lr", "--lr", "0.01", "0.02",
                               "--wd", "0.01", "0.02", "--iterations", "2000", "--queue-size",
                               "10", "--entropy-every", "1000", "--stationary-logs", "5",
                               "--no-progress", "--out", str(tmp_path / "iso")])
    assert code == 2 and "read-only" in err and "thermosgd.json" in err


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    from thermosgd import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_prepare", lambda args: interrupted)
    code, err = _exit(capsys, ["sweep", "list"])
    assert code == 130 and "run the same command again to resume" in err
