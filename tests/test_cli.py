"""One smoke test per subcommand, and every bad-input path: exit code 2, nothing written."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from thermosgd.cli import main

TINY = ["--iterations", "6000", "--queue-size", "40", "--queue-every", "25",
        "--entropy-every", "2000", "--entropy-average", "2", "--stationary-logs", "40",
        "--no-progress"]


def test_simulate_writes_table_checks_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--protocol", "fixed-lr", "--lr", "0.01", "0.03", "0.1",
                 "--wd", "0.01", "0.1", "--out", str(out), *TINY]) == 0
    table = pd.read_csv(out / "fixed-lr" / "stationary.csv")
    assert len(table) == 6
    for column in ("protocol", "learning_rate", "weight_decay", "sphere_radius", "seed", "status",
                   "radius", "U",
                   "entropy_sphere", "entropy", "temperature", "pressure", "volume", "lambda_eff"):
        assert column in table
    checks = json.loads((out / "checks.json").read_text())
    assert set(checks["protocols"]["fixed-lr"]) >= {"V1", "V2", "V3", "V4"}
    assert checks["git_revision"] and checks["package_version"]
    assert (out / "report.md").is_file() and (out / "fixed-lr" / "figure.png").is_file()
    # a second run into the same directory is allowed (it is ours) and reuses the results
    capsys.readouterr()
    assert main(["simulate", "--protocol", "fixed-lr", "--lr", "0.01", "0.03", "0.1",
                 "--wd", "0.01", "0.1", "--out", str(out), *TINY]) == 0
    assert "found complete results" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "fixed-lr" / "stationary.csv"), table)


@pytest.mark.slow
def test_reproduce_isotropic_quick(tmp_path, capsys):
    """The README's main job, end to end: every judged check passes."""
    out = tmp_path / "iso"
    assert main(["reproduce", "isotropic", "--out", str(out), "--scale", "quick",
                 "--no-progress"]) == 0
    checks = json.loads((out / "checks.json").read_text())
    assert set(checks["protocols"]) == {"fixed-lr", "fixed-elr", "fixed-sphere"}
    for protocol in checks["protocols"]:
        assert len(pd.read_csv(out / protocol / "stationary.csv")) == 289
        assert (out / protocol / "figure.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "fixed-sphere/figure.png" in report
    passed = re.search(r"(\d+) of (\d+) judged checks pass", report)
    assert passed and passed.group(1) == passed.group(2), passed
    # V1 holds well inside the grid even at the quick scale
    assert checks["protocols"]["fixed-elr"]["V1"]["interior_median_rel_error"] < 0.05


BAD = [
    (["--protocol", "fixed-lr", "--lr", "-0.01", "--wd", "0.01"], "learning rates"),
    (["--protocol", "fixed-lr", "--lr", "0.01", "--wd", "0"], "weight decays"),
    (["--protocol", "fixed-sphere", "--lr", "0.01", "--radius", "-1"], "radii"),
    (["--protocol", "fixed-sphere", "--lr", "0.01", "--wd", "0.1", "--radius", "1"],
     "no weight decay"),
    (["--protocol", "fixed-lr", "--lr", "0.01", "--wd", "0.01", "--sigma", "-1"], "sigma"),
    (["--protocol", "fixed-lr", "--lr", "0.01", "--wd", "0.01", "--dim", "1"], "d must be >= 2"),
    (["--protocol", "fixed-lr", "--lr", "0.01", "--wd", "0.01", "--iterations", "100"],
     "too few for the entropy queue"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *args, "--out", str(out), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_refuses_foreign_output_directory(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "isotropic", "--out", str(out)])
    assert exc.value.code == 2
    assert "not written by thermosgd" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_unknown_choice_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--protocol", "adam", "--lr", "0.1", "--out", "x"])
    assert exc.value.code == 2


TRAIN_TINY = ["--width", "2", "--iterations", "120", "--log-every", "40", "--queue-size", "4",
              "--stationary-logs", "2", "--device", "cpu", "--no-progress"]


def test_train_writes_a_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--protocol", "fixed-lr", "--lr", "0.05", "--wd", "0.01",
                 "--out", str(out), *TRAIN_TINY]) == 0
    assert "finished 120 iterations" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["learning_rate"] == 0.05 and config["d"] == 1530
    assert config["git_revision"] and config["package_version"]
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["iteration"].tolist() == [40, 80, 120]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["stationary"]["radius"] == pytest.approx(metrics["radius"].tail(2).mean())
    assert (out / "checkpoint.pt").is_file()


def test_train_divergence_exits_0(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--protocol", "fixed-elr", "--lr", "50", "--wd", "0.1",
                 "--out", str(out), *TRAIN_TINY]) == 0
    assert "diverged at iteration" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


BAD_TRAIN = [
    (["--model", "vgg", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.1"], "unknown model"),
    (["--dataset", "mnist", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.1"],
     "unknown dataset"),
    (["--protocol", "adam", "--lr", "0.1", "--wd", "0.1"], "unknown protocol"),
    (["--protocol", "fixed-lr", "--lr", "0", "--wd", "0.1"], "learning rate"),
    (["--protocol", "fixed-lr", "--lr", "0.1", "--wd", "-1"], "weight decay"),
    (["--protocol", "fixed-lr", "--lr", "0.1"], "needs a weight decay"),
    (["--protocol", "fixed-sphere", "--lr", "0.1", "--radius", "0"], "radius"),
    (["--protocol", "fixed-sphere", "--lr", "0.1", "--wd", "0.1", "--radius", "1"],
     "takes no weight decay"),
    (["--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.1", "--width", "0"], "width"),
    (["--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.1", "--dataset", "cifar10",
      "--data", "NOWHERE"], "cifar-10-python.tar.gz"),
    (["--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.1", "--dataset", "cifar100"],
     "--data"),
]


@pytest.mark.parametrize("args,message", BAD_TRAIN)
def test_train_bad_input_exits_2_and_leaves_no_run_directory(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    args = [str(tmp_path / "empty") if a == "NOWHERE" else a for a in args]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["train", *args, "--out", str(out), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_train_grid_runs_as_a_batch(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["train", "--protocol", "fixed-lr", "--lr", "0.01", "0.02", "--wd", "0.01",
                 "0.02", "--max-batch", "3", "--mechanism", "vmap", "--out", str(out),
                 *TRAIN_TINY]) == 0
    assert "4 finished" in capsys.readouterr().out
    assert json.loads((out / "thermosgd.json").read_text())["kind"] == "sweep"
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert runs == ["fixed-lr_lr0.01_wd0.01_seed0", "fixed-lr_lr0.01_wd0.02_seed0",
                    "fixed-lr_lr0.02_wd0.01_seed0", "fixed-lr_lr0.02_wd0.02_seed0"]
    for run in runs:
        summary = json.loads((out / "runs" / run / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert len(pd.read_parquet(out / "runs" / run / "metrics.parquet")) == 3
    # the same command again: everything is read back, nothing retrained
    assert main(["train", "--protocol", "fixed-lr", "--lr", "0.01", "0.02", "--wd", "0.01",
                 "0.02", "--out", str(out), *TRAIN_TINY]) == 0


def test_train_grid_bad_value_writes_nothing(tmp_path, capsys):
    out = tmp_path / "grid"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--protocol", "fixed-lr", "--lr", "0.01", "-0.02", "--wd", "0.01",
              "--out", str(out), "--no-progress"])
    assert exc.value.code == 2 and "learning rate" in capsys.readouterr().err
    assert not out.exists()


def test_a_train_grid_is_a_sweep_that_analyses(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["train", "--protocol", "fixed-lr", "--lr", "0.05", "0.1", "0.2", "--wd",
                 "0.01", "0.02", "0.04", "--out", str(out), *TRAIN_TINY]) == 0
    assert main(["sweep", "status", str(out)]) == 0
    assert "finished        9" in capsys.readouterr().out
    assert main(["analyze", str(out), "--bootstrap", "0"]) == 0
    assert "judged checks pass (9 configurations, fixed-lr)" in capsys.readouterr().out
    assert (out / "analysis.json").is_file()


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "100000"], "--batch-size 100000 is too large"),
    (["--seed", "-1"], "seed (--seed) must be an integer in [0, 2^63)"),
])
def test_train_options_checked_against_the_data_before_anything_is_written(tmp_path, capsys,
                                                                            args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--protocol", "fixed-lr", "--lr", "0.1", "--wd", "0.01", *args,
              "--out", str(out), *TRAIN_TINY])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_help_and_version_need_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom thermosgd.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_every_option_says_its_default_and_choices():
    import argparse

    from thermosgd.cli import build_parser

    def options(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from options(child)
            elif action.dest not in ("help", "version"):
                yield parser.prog, action

    found = list(options(build_parser()))
    assert len(found) > 80
    for prog, action in found:
        where = f"{prog} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, where
        assert all(str(c) in action.help for c in action.choices or ()), where
        if action.option_strings:
            assert "default" in action.help or "required" in action.help, where


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["sweep", "run", "--help"]])
def test_top_level_help_and_version_need_no_torch(argv):
    import subprocess
    import sys

    code = ("import sys\nfrom thermosgd.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


BAD_OPTIMIZER = [
    (["--optimizer", "momentum", "--momentum", "1.0"], "momentum must lie in [0, 1)"),
    (["--optimizer", "adamw", "--beta2", "1.5"], "beta2 must lie in (0, 1)"),
    (["--optimizer", "nesterov", "--momentum", "0"], "Nesterov momentum needs momentum in"),
    (["--optimizer", "momentum", "--beta2", "0.9"], "beta2 and eps apply to adamw only"),
    (["--protocol", "fixed-elr", "--optimizer", "adamw"],
     "fixed-elr protocol takes the optimizer(s) sgd, momentum, nesterov, not adamw"),
]


@pytest.mark.parametrize("args,message", BAD_OPTIMIZER)
def test_train_bad_optimizer_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    protocol = [] if "--protocol" in args else ["--protocol", "fixed-lr"]
    with pytest.raises(SystemExit) as exc:
        main(["train", *protocol, *args, "--lr", "0.1", "--wd", "0.1", "--out", str(out),
              "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_train_with_momentum_grid_records_the_optimizer(tmp_path, capsys):
    """--momentum with two values is a grid axis; every run records its optimizer, and the
    collected table carries it."""
    out = tmp_path / "grid"
    assert main(["train", "--protocol", "fixed-lr", "--lr", "0.01", "--wd", "0.01",
                 "--optimizer", "momentum", "--momentum", "0.5", "0.9", "--out", str(out),
                 *TRAIN_TINY]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert runs == ["fixed-lr_momentum0.5_lr0.01_wd0.01_seed0",
                    "fixed-lr_momentum0.9_lr0.01_wd0.01_seed0"]
    config = json.loads((out / "runs" / runs[1] / "config.json").read_text())["config"]
    assert (config["optimizer"], config["momentum"]) == ("momentum", 0.9)
    assert main(["collect", str(out)]) == 0
    table = pd.read_csv(out / "stationary.csv")
    assert table["optimizer"].tolist() == ["momentum"] * 2
    assert sorted(table["momentum"]) == [0.5, 0.9]
    assert {"angular_update", "angular_update_theory"} <= set(table.columns)


@pytest.mark.parametrize("module", ["thermosgd", "thermosgd.cli"])
def test_python_dash_m_runs_the_command(module):
    import subprocess
    import sys

    from thermosgd import __version__

    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and __version__ in done.stdout
    bad = subprocess.run([sys.executable, "-m", module, "simulate", "--steps", "-3"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.strip()


@pytest.mark.parametrize("argv", [["sweep", "status", "{d}"], ["analyze", "{d}"],
                                  ["report", "{d}"], ["plot", "{d}"], ["collect", "{d}"]])
def test_refusing_a_non_result_imports_neither_torch_nor_the_analysis(tmp_path, argv):
    """Commands that only read or refuse results answer at once: torch (about a second to
    import) and the report's stack stay unloaded when the directory is not a result."""
    code = ("import sys\nfrom thermosgd.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'numba') if m in sys.modules))")
    args = [a.format(d=tmp_path / "nothing") for a in argv]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
