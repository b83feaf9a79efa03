"""One writer per result: the OS lock of a run directory and of an isotropic output, its owner
named to a second process, --wait, and two `thermosgd train` started together."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from thermosgd.cli import main
from thermosgd.results.lock import Busy, OwnerLock, hold
from thermosgd.results.schema import LOCK_FILE

TINY = ["--dataset", "digits", "--width", "2", "--iterations", "40", "--log-every", "20",
        "--log-linear-until", "40", "--log-points", "0", "--queue-size", "2",
        "--queue-every", "10", "--stationary-logs", "1", "--device", "cpu", "--no-progress"]


SIM_TINY = ["--iterations", "200", "--log-every", "10", "--stationary-logs", "5",
            "--queue-size", "10", "--queue-every", "10", "--entropy-every", "100",
            "--entropy-average", "1", "--no-progress"]


def _holder(directory, seconds):
    """Another process holding ``directory``'s lock for ``seconds`` (or until killed)."""
    code = ("import sys, time\nfrom thermosgd.results.lock import hold\n"
            f"with hold([{str(directory)!r}]):\n    print('held', flush=True)\n"
            f"    time.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc, *, kill=True):
    if kill:
        proc.kill()
    code = proc.wait()
    proc.stdout.close()
    return code


def test_the_lock_names_its_owner_and_dies_with_it(tmp_path):
    proc = _holder(tmp_path / "out", 60)
    try:
        with pytest.raises(Busy, match=f"process {proc.pid} on {socket.gethostname()}"):
            with hold([tmp_path / "out"]):
                pass
    finally:
        _stop(proc)
    with hold([tmp_path / "out"]) as locks:  # killed: the kernel dropped its lock
        assert json.loads((tmp_path / "out" / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert OwnerLock(tmp_path / "out" / LOCK_FILE).is_locked()
    assert not locks[0].held and not OwnerLock(tmp_path / "out" / LOCK_FILE).is_locked()


def test_a_second_writer_is_refused_in_one_line_or_waits(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _holder(out, 60)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["train", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01",
                  "--out", str(out), *TINY])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
        assert f"being written by process {proc.pid}" in err and "--wait" in err
        with pytest.raises(SystemExit) as exc:
            main(["simulate", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01",
                  "--out", str(out), *SIM_TINY])
        assert exc.value.code == 2 and f"process {proc.pid}" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # nothing else written
    finally:
        _stop(proc)
    proc = _holder(out, 2)
    start = time.monotonic()
    assert main(["train", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01",
                 "--out", str(out), "--wait", *TINY]) == 0
    assert time.monotonic() - start > 1.0 and _stop(proc, kill=False) == 0
    assert "finished 40 iterations" in capsys.readouterr().out


@pytest.mark.slow
def test_two_trains_started_together_leave_one_run(tmp_path):
    """Two processes, two learning rates, one --out: one run is written and the other process
    is refused in one line (it owns nothing), whichever of them starts first."""
    out = tmp_path / "run"
    procs = {lr: subprocess.Popen(
        [sys.executable, "-m", "thermosgd.cli", "train", "--protocol", "fixed-lr", "--lr", lr,
         "--wd", "0.01", "--out", str(out), *TINY], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for lr in ("0.1", "0.5")}
    done = {lr: (p.wait(timeout=300), *p.communicate()) for lr, p in procs.items()}
    codes = sorted(code for code, _, _ in done.values())
    assert codes == [0, 2], done
    winner = next(lr for lr, (code, _, _) in done.items() if code == 0)
    loser_err = next(err for code, _, err in done.values() if code == 2)
    assert len(loser_err.strip().splitlines()) == 1
    assert "being written by process" in loser_err or "another configuration" in loser_err
    for name in ("config.json", "summary.json", "thermosgd.json"):
        assert json.loads((out / name).read_text())["config"]["learning_rate"] == float(winner)
    again = subprocess.run([sys.executable, "-m", "thermosgd.cli", "train", "--protocol",
                            "fixed-lr", "--lr", winner, "--wd", "0.01", "--out", str(out),
                            "--wait", *TINY], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "finished 40 iterations" in again.stdout
