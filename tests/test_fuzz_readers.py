"""Fuzz of the readers: each kind of result file of a tiny sweep and of a tiny isotropic output
is truncated, zeroed or bit-flipped, then every command that reads it runs in-process
(``thermosgd.cli.main``): ``analyze``, ``plot``, ``report``, ``sweep status``, ``collect`` and
the resuming command (``sweep run``, ``simulate`` with the same options).

Each case must end without a traceback (exit 0, or exit 2 with one line naming the damaged
file), and leave every other file as it was (the files the command writes aside).

Cases: 6 sweep files (manifest, a run's config.json, summary.json, metrics.parquet and
checkpoint.pt, the collected stationary.csv) x 3 damages x 6 commands = 108, and 5 isotropic
files (manifest, config.json, stationary.csv, checks.json, traces.npz) x 3 damages x 4 commands
= 60: 168 in all. The default suite runs 33 of them, each damaged file once with a command
taken in turn (every file, damage and command is met); the other 135 are marked slow.
"""

import shutil

import pytest

from thermosgd.cli import main

RUN = "runs/fixed-lr_lr0.2_wd0.04_seed0"
SWEEP_FILES = {"manifest": "thermosgd.json", "config": f"{RUN}/config.json",
               "summary": f"{RUN}/summary.json", "metrics": f"{RUN}/metrics.parquet",
               "checkpoint": f"{RUN}/checkpoint.pt", "stationary": "stationary.csv"}
ISOTROPIC_FILES = {"manifest": "thermosgd.json", "config": "fixed-lr/config.json",
                   "stationary": "fixed-lr/stationary.csv", "checks": "checks.json",
                   "traces": "fixed-lr/traces.npz"}
DAMAGES = ("truncate", "zero", "bitflip")
SWEEP_COMMANDS = ("analyze", "plot", "report", "status", "collect", "resume")
ISOTROPIC_COMMANDS = ("analyze", "plot", "report", "resume")
# what each command writes: these may change, nothing else may
OUTPUTS = {"analysis.json", "analysis_table.csv", "report.html", "report.md", ".thermosgd.lock"}
OUTPUT_SUFFIXES = (".png", ".pdf", ".lock")

TOML = """
name = "fuzz"
protocol = "fixed-lr"
width = 2
dataset = "digits"
iterations = 60
queue_size = 2
learning_rates = [0.1, 0.2, 0.4]
weight_decays = [0.02, 0.04, 0.08]
[train]
log_every = 20
log_linear_until = 60
log_points = 0
queue_every = 10
stationary_logs = 2
"""
SIMULATE = ["simulate", "--protocol", "fixed-lr", "--lr", "0.01", "0.03", "0.1", "--wd", "0.01",
            "0.03", "0.1", "--iterations", "2000", "--log-every", "10", "--stationary-logs",
            "50", "--queue-size", "50", "--queue-every", "10", "--entropy-every", "1000",
            "--entropy-average", "1", "--no-progress"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The pristine results, built once: a finished 3 x 3 sweep (collected) and a 3 x 3
    fixed-LR isotropic output."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "fuzz.toml").write_text(TOML)
    assert main(["sweep", "run", str(root / "fuzz.toml"), "--out", str(root / "sweep"),
                 "--workers", "1", "--device", "cpu", "--no-progress"]) == 0
    assert main(["collect", str(root / "sweep")]) == 0
    assert main(SIMULATE + ["--out", str(root / "isotropic")]) == 0
    return root


def _argv(kind, command, out, root):
    if command == "resume":
        return (["sweep", "run", str(root / "fuzz.toml"), "--out", str(out), "--workers", "1",
                 "--device", "cpu", "--no-progress"] if kind == "sweep"
                else SIMULATE + ["--out", str(out)])
    if command == "status":
        return ["sweep", "status", str(out)]
    return [command, str(out)] + (["--bootstrap", "0"] if command in ("analyze", "report")
                                  else [])


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero":
        path.write_bytes(b"")
    else:  # one bit in the middle
        k = len(data) // 2
        path.write_bytes(data[:k] + bytes([data[k] ^ 0x10]) + data[k + 1:])


def _snapshot(out, skip):
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and p != skip and p.name not in OUTPUTS
            and p.suffix not in OUTPUT_SUFFIXES}


def _cases():
    """Every (kind, file, damage, command); the default suite takes one command per damaged
    file, in turn, so that each file, damage and command is met and the rest is slow."""
    for kind, files, commands in (("sweep", SWEEP_FILES, SWEEP_COMMANDS),
                                  ("isotropic", ISOTROPIC_FILES, ISOTROPIC_COMMANDS)):
        pairs = [(name, damage) for name in files for damage in DAMAGES]
        for k, (name, damage) in enumerate(pairs):
            for c, command in enumerate(commands):
                quick = c == k % len(commands)
                yield pytest.param(kind, name, damage, command,
                                   id=f"{kind}-{name}-{damage}-{command}",
                                   marks=[] if quick else [pytest.mark.slow])


@pytest.mark.parametrize("kind,name,damage,command", list(_cases()))
def test_a_damaged_file_is_named_and_nothing_else_is_lost(built, tmp_path, capsys, kind, name,
                                                          damage, command):
    out = tmp_path / kind
    shutil.copytree(built / kind, out)
    target = out / (SWEEP_FILES if kind == "sweep" else ISOTROPIC_FILES)[name]
    _damage(target, damage)
    before = _snapshot(out, target)
    capsys.readouterr()
    try:
        code = main(_argv(kind, command, out, built))
    except SystemExit as exc:  # anything else is a traceback, and fails the test
        code = exc.code
    text = capsys.readouterr()
    assert code in (0, 2), text
    if code == 2:
        lines = text.err.strip().splitlines()
        assert len(lines) == 1 and target.name in lines[0], text.err
    if command == "status" and name in ("config", "summary", "metrics") and damage != "bitflip":
        assert "damaged         1" in text.out and target.name in text.out
    after = _snapshot(out, target)
    lost = [str(p) for p in before if before[p] != after.get(p)]
    if kind == "sweep" and command == "collect":  # collect rewrites the sweep's tables
        lost = [p for p in lost if p not in ("stationary.csv", "metrics.parquet")]
    if kind == "isotropic" and command == "resume":  # resuming rewrites the checks
        lost = [p for p in lost if p != "checks.json"]
    assert not lost, f"{lost} changed ({text.out} {text.err})"
