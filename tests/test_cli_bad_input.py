"""Bad input on the command line: every refusal is one line on stderr naming the option or file
to change, exit status 2, no traceback, and nothing under --out.

A property test draws command lines for ``simulate`` and ``train`` and TOML files for ``sweep
run`` from the options' grammar, each value valid or not (huge, negative and zero integers,
floats and booleans for integers, words, missing required options). Training and simulating
are replaced by stubs: the checks run, the work does not, so a valid line exits 0 at once.
Then one regression test per hole the property found.
"""

import contextlib
import io
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thermosgd.cli import main

HUGE = 2**64  # past int64: the seeds' and counts' storage
BAD_INTS = (0, -1, 2**63, HUGE, "2.5", "true", "ten", "")
BAD_FLOATS = ("-1", "0", "nan", "inf", "x")


def _cli(argv):
    """(exit status, stdout, stderr) of ``thermosgd argv``, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _no_work():
    """The checks run; simulating and training do not (a valid line exits 0 at once)."""
    import thermosgd.reproduce
    import thermosgd.sweeps
    from thermosgd.nn import training

    finished = SimpleNamespace(summary={"status": "finished", "iterations_done": 0})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(thermosgd.reproduce, "run_isotropic", lambda *a, **k: None)
        patch.setattr(training, "train", lambda *a, **k: finished)
        patch.setattr(thermosgd.sweeps, "run_local", lambda *a, **k: {})
        yield


def _names(err: str, options) -> bool:
    """Whether the message names one of the options (as --log-every or log_every)."""
    text = err.replace("-", "_")
    return any(o.lstrip("-").replace("-", "_") in text for o in options)


def _check(argv, out: Path, bad: list[str]):
    """The property: valid lines exit 0 or refuse in one line (a rule between options);
    a line with a bad value refuses in one line naming one of the bad options. Nothing is
    created under --out either way (the stubs write nothing)."""
    with _no_work():
        code, _, err = _cli(argv)
    assert "Traceback" not in err, err
    assert not out.exists(), f"{argv} created {out}"
    if code == 0:
        assert not bad, f"{argv} accepted bad {bad}"
        return
    assert code == 2, (argv, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermosgd"), err
    if bad:
        assert _names(err, bad), f"{err!r} names none of {bad}"


def _bad_ints(low, *, huge=True):
    """Bad values of an integer option whose smallest value is ``low`` (a cap, like
    --max-batch, may be huge)."""
    return tuple(dict.fromkeys(v for v in BAD_INTS + (low - 1,) if (v != 0 or low > 0)
                               and (huge or not isinstance(v, int) or v < 2**63)))


def _distinct(values):
    """One to three distinct values of a grid axis."""
    return st.lists(values, min_size=1, max_size=3, unique=True)


def _corrupt(draw, line: dict, bad_values: dict, required) -> list[str]:
    """Spoil none, one or two options of a valid ``line`` (option: list of values) in place:
    leave a required one out, or put a bad value among its values. Returns those spoiled.
    Mostly one, so that each check is met alone (two bad values: the first check names one)."""
    count = draw(st.sampled_from([0, 1, 1, 1, 2]))
    spoiled = draw(st.lists(st.sampled_from(sorted(bad_values)), min_size=count, max_size=count,
                            unique=True))
    for option in spoiled:
        if option in required and draw(st.booleans()):
            del line[option]
            continue
        values = list(line[option])
        values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from(bad_values[option]))
        line[option] = values
    return spoiled


@st.composite
def _line(draw, command, ints, floats):
    """A command line for ``simulate`` or ``train``: (argv without --out, spoiled options)."""
    protocol = draw(st.sampled_from(["fixed-lr", "fixed-elr", "fixed-sphere"]))
    second = "--radius" if protocol == "fixed-sphere" else "--wd"
    positive = st.floats(1e-3, 1.0).map(lambda x: f"{x:.4g}")
    line = {"--protocol": [protocol], "--lr": draw(_distinct(positive)),
            second: draw(_distinct(positive)),
            "--seeds" if command == "simulate" else "--seed": draw(_distinct(st.integers(0, 99)))}
    bad_values = {"--protocol": ("fixed-foo",), "--lr": BAD_FLOATS, second: BAD_FLOATS,
                  "--seeds" if command == "simulate" else "--seed": _bad_ints(0)}
    for option, (low, high) in draw(st.lists(st.sampled_from(sorted(ints.items())),
                                             max_size=3, unique=True)):
        line[option] = [draw(st.integers(low, high))]
        bad_values[option] = _bad_ints(low, huge=option != "--max-batch")
    for option, (good, wrong) in draw(st.lists(st.sampled_from(sorted(floats.items())),
                                               max_size=2, unique=True)):
        line[option], bad_values[option] = [draw(good)], wrong
    spoiled = _corrupt(draw, line, bad_values, required=("--protocol", "--lr", second))
    argv = [command] + [token for option, values in line.items() for token in [option, *values]]
    return argv, spoiled


SIMULATE_INTS = {"--dim": (2, 5), "--iterations": (1, 10**6), "--log-every": (1, 100),
                 "--stationary-logs": (1, 100), "--queue-size": (2, 100),
                 "--queue-every": (1, 100), "--entropy-every": (1, 10**5),
                 "--entropy-average": (1, 10)}
SIMULATE_FLOATS = {"--sigma": (st.floats(0.1, 2.0).map(str), BAD_FLOATS)}
TRAIN_INTS = {"--width": (1, 4), "--iterations": (1, 100), "--batch-size": (1, 64),
              "--init-seed": (0, 99), "--head-seed": (0, 99), "--queue-size": (2, 10),
              "--queue-every": (1, 10), "--log-every": (1, 10), "--log-linear-until": (0, 100),
              "--log-points": (0, 10), "--stationary-logs": (1, 5), "--measure-passes": (1, 2),
              "--samples-per-class": (1, 10), "--image-size": (8, 16), "--max-batch": (1, 4)}
TRAIN_FLOATS = {"--label-noise": (st.sampled_from(["0", "0.3", "1"]), ("1.5", "-0.1", "nan")),
                "--model": (st.just("convnet"), ("mlp",)),
                "--dataset": (st.just("digits"), ("mnist",)),
                "--checkpoint-every": (st.just("600"), ("-1", "nan"))}

TRAIN_KEYS = {"log_every": (1, 10), "queue_every": (1, 10), "log_linear_until": (0, 40),
              "log_points": (0, 5), "stationary_logs": (1, 2), "measure_passes": (1, 2),
              "batch_size": (1, 32)}
TOP_KEYS = {"width": (1, 2), "iterations": (20, 40), "queue_size": (2, 4)}
BAD_TOML = (0, -1, 2**63, HUGE, 10.5, True, "ten")
BAD_SCALES = ("1e-300", "0", "-1", "nan")


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


@st.composite
def _sweep_file(draw):
    """A TOML sweep definition and --scale: (text, scale, spoiled keys or options)."""
    top = {"protocol": "fixed-lr", "dataset": "digits", "learning_rates": [0.1],
           "weight_decays": [0.02], "seeds": draw(_distinct(st.integers(0, 9)))}
    train, bad_values, tables = {}, {"seeds": BAD_TOML[1:], "--scale": BAD_SCALES}, {}
    for table, keys in ((top, TOP_KEYS), (train, TRAIN_KEYS)):
        for key, (low, high) in draw(st.lists(st.sampled_from(sorted(keys.items())),
                                              max_size=3, unique=True)):
            table[key], tables[key] = [draw(st.integers(low, high))], table
            bad_values[key] = BAD_TOML if low > 0 else BAD_TOML[1:]
    line = {"seeds": top["seeds"], "--scale": [draw(st.sampled_from(["1", "0.5"]))]}
    line |= {key: table[key] for key, table in tables.items()}
    spoiled = _corrupt(draw, line, bad_values, required=())
    top["seeds"] = line["seeds"]
    for key, table in tables.items():
        table[key] = line[key][0]
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in top.items())
    text += "[train]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in train.items())
    return text, line["--scale"][0], spoiled


def _simulate(case):
    argv, bad = case
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _check([*argv, "--out", out, "--no-progress"], out, bad)


def _train(case):
    argv, bad = case
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _check([*argv, "--out", out, "--no-progress", "--device", "cpu"], out, bad)


def _sweep(case):
    text, scale, bad = case
    with tempfile.TemporaryDirectory() as tmp:
        out, grid = Path(tmp) / "out", Path(tmp) / "grid.toml"
        grid.write_text(text)
        argv = ["sweep", "run", grid, "--out", out, "--scale", scale, "--device", "cpu",
                "--workers", "1", "--no-progress"]
        _check(argv, out, bad)


QUICK = settings(max_examples=100, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
LONG = settings(QUICK, max_examples=600)


@QUICK
@given(_line("simulate", SIMULATE_INTS, SIMULATE_FLOATS))
def test_simulate_refuses_bad_lines_in_one_line(case):
    _simulate(case)


@QUICK
@given(_line("train", TRAIN_INTS, TRAIN_FLOATS))
def test_train_refuses_bad_lines_in_one_line(case):
    _train(case)


@QUICK
@given(_sweep_file())
def test_sweep_run_refuses_bad_files_in_one_line(case):
    _sweep(case)


@pytest.mark.slow
@LONG
@given(_line("simulate", SIMULATE_INTS, SIMULATE_FLOATS), _line("train", TRAIN_INTS, TRAIN_FLOATS),
       _sweep_file())
def test_every_command_refuses_bad_input_long(simulate, train, sweep):
    _simulate(simulate)
    _train(train)
    _sweep(sweep)


# --- one regression test per hole ---------------------------------------------------------

GRID = """protocol = "fixed-lr"
width = 2
dataset = "digits"
iterations = 40
queue_size = 2
learning_rates = [0.1]
weight_decays = [0.02]
seeds = {seeds}
[train]
log_every = {log_every}
log_linear_until = 40
log_points = 0
queue_every = 10
stationary_logs = 2
"""


def _refused(argv, out, *words):
    code, _, err = _cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    assert not Path(out).exists()
    return err


def test_a_toml_seed_past_int64_is_refused(tmp_path):
    grid = tmp_path / "x.toml"
    grid.write_text(GRID.format(seeds=f"[{HUGE}]", log_every=20))
    _refused(["sweep", "run", grid, "--out", tmp_path / "S", "--workers", "1"], tmp_path / "S",
             "x.toml", "seeds", "[0, 2^63)")


def test_a_sweep_with_a_failed_run_exits_1_and_status_names_it(tmp_path, monkeypatch):
    from thermosgd.nn import training

    grid, out = tmp_path / "x.toml", tmp_path / "S"
    grid.write_text(GRID.format(seeds="[0]", log_every=20))
    run = ["sweep", "run", grid, "--out", out, "--workers", "1", "--device", "cpu",
           "--no-progress"]

    def broken(*args, **kwargs):
        raise ValueError("a batch of NaN weights")

    with monkeypatch.context() as patch:
        patch.setattr(training, "train", broken)
        code, _, err = _cli(run)
    assert code == 1 and "1 of 1 runs failed" in err
    assert "fixed-lr_lr0.1_wd0.02_seed0: failed: a batch of NaN weights" in err
    code, status, _ = _cli(["sweep", "status", out])
    assert code == 0 and "failed: fixed-lr_lr0.1_wd0.02_seed0: a batch of NaN weights" in status
    assert [line.split() for line in status.splitlines() if "pending" in line] == [
        ["pending", "0"]]
    code, text, _ = _cli(run)  # the cause gone, the next run retries it
    assert code == 0 and "1 finished" in text
    code, status, _ = _cli(["sweep", "status", out])
    assert "failed: " not in status and not (out / "failed" / "fixed-lr_lr0.1_wd0.02_seed0.json"
                                             ).exists()


@pytest.mark.parametrize("protocol,option", [("fixed-lr", "--wd"), ("fixed-elr", "--wd"),
                                             ("fixed-sphere", "--radius")])
def test_simulate_without_the_second_axis_names_it(tmp_path, protocol, option):
    out = tmp_path / "D"
    _refused(["simulate", "--protocol", protocol, "--lr", "0.01", "--out", out], out, option)


def test_simulate_seed_past_int64_is_refused(tmp_path):
    out = tmp_path / "D"
    _refused(["simulate", "--protocol", "fixed-lr", "--lr", "0.01", "--wd", "0.1", "--seeds",
              HUGE, "--out", out], out, "--seeds", "[0, 2^63)")


@pytest.mark.parametrize("value,words", [('"ten"', "got 'ten'"), ("10.5", "got 10.5"),
                                         ("true", "got True"), ("0", ">= 1, got 0")])
def test_toml_integers_are_type_and_range_checked(tmp_path, value, words):
    grid = tmp_path / "x.toml"
    grid.write_text(GRID.format(seeds="[0]", log_every=value))
    _refused(["sweep", "run", grid, "--out", tmp_path / "S"], tmp_path / "S", "x.toml",
             "log_every", words)


@pytest.mark.parametrize("seeds", [[str(HUGE)], ["0", str(HUGE)]])
def test_train_seed_past_int64_is_refused(tmp_path, seeds):
    out = tmp_path / "T"
    _refused(["train", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.1", "--seed", *seeds,
              "--out", out, "--device", "cpu"], out, "seed", "2^63")


def test_a_scale_below_one_iteration_per_log_is_refused(tmp_path):
    grid = tmp_path / "x.toml"
    grid.write_text(GRID.format(seeds="[0]", log_every=20))
    _refused(["sweep", "run", grid, "--out", tmp_path / "S", "--scale", "1e-300"],
             tmp_path / "S", "--scale 1e-300", "smallest scale", "0.05")
    with _no_work():  # exactly one iteration per log is still a run
        code, _, err = _cli(["sweep", "run", grid, "--out", tmp_path / "S", "--scale", "0.05",
                             "--device", "cpu"])
    assert code == 0, err


@pytest.mark.parametrize("argv,words", [
    (["simulate", "--lr", "x"], ("thermosgd simulate: error: argument --lr", "--help")),
    (["train", "--iterations", "2.5"], ("thermosgd train: error: argument --iterations",)),
    (["sweep", "run", "--out"], ("thermosgd sweep run: error: argument --out",)),
    (["bogus"], ("thermosgd: error:", "--help")),
])
def test_parser_errors_are_one_line(argv, words):
    code, _, err = _cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "usage" not in err, err
    assert all(w in err for w in words), err


def test_a_toml_that_is_not_utf8_is_named(tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_bytes(b'name = "x\xff"\n')
    code, _, err = _cli(["sweep", "run", spec, "--out", tmp_path / "S"])
    assert code == 2 and "grid.toml is not UTF-8" in err and "Traceback" not in err
    assert not (tmp_path / "S").exists()


def test_a_result_without_its_manifest_is_told_so(tmp_path):
    """A sweep directory whose thermosgd.json was deleted is not called a stranger's."""
    out = tmp_path / "D"
    (out / "runs").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    code, _, err = _cli(["simulate", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01",
                         "--out", out])
    assert code == 2 and "not their manifest thermosgd.json" in err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "runs"]
