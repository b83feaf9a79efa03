"""Reading result directories into stationary tables: a real sweep, a sweep with missing runs,
with no finished run, and what is not a result."""

import json
import shutil

import pandas as pd
import pytest

from thermosgd import sweeps as sweep
from thermosgd.analysis import sources
from thermosgd.cli import main
from thermosgd.results.schema import STATIONARY_COLUMNS

_SCHEMA = {c.name for c in STATIONARY_COLUMNS}


def test_a_sweep_reads_into_one_analysis_in_the_schema_columns(tiny_sweep):
    """A 3 x 3 digits sweep: every configuration in the table, V1 against both predictions,
    Table 4 with its intervals."""
    (a,) = sources.read_sweep(tiny_sweep, bootstrap=50)
    assert a.protocol == "fixed-lr" and len(a.table) == 9 and a.runs["missing"] == []
    assert {"learning_rate", "weight_decay", "sphere_radius", "status", "U"} <= set(a.table)
    assert not {"rate", "second", "lr", "wd"} & set(a.table)
    assert a.checks["n_points"] == 9 and a.checks["V1"]["quantity"] == "radius"
    assert set(a.checks["V1"]["corrected"]) >= {"median_rel_error", "max_rel_error"}
    v3 = a.checks["V3"]["table4"]
    assert set(v3) >= {"r2", "(a1-a2)/R", "max_rel_error", "ci95", "paper"}
    lo, hi = v3["ci95"]["(a1-a2)/R"]
    assert lo <= hi
    assert a.setup["d"] == 1530 and a.metrics is not None and len(a.metrics) > 0


def test_analyze_writes_every_number_and_the_table(tiny_sweep, tmp_path, capsys):
    out = shutil.copytree(tiny_sweep, tmp_path / "sw")
    assert main(["analyze", str(out), "--bootstrap", "20"]) == 0
    record = json.loads((out / "analysis.json").read_text())
    assert record["results"]["custom"]["setup"]["protocol"] == "fixed-lr"
    assert "git_revision" in record
    table = pd.read_csv(out / "analysis_table.csv")
    assert len(table) == 9 and table.columns[0] == "result"
    assert {"learning_rate", "weight_decay", "status"} <= set(table.columns) <= _SCHEMA | {
        "result", "run", "converging", "iterations_done", "diverged_at", "train_loss",
        "train_acc", "test_loss", "test_acc", "full_grad_norm2", "stoch_grad_norm2",
        "trace_cov_se", "batch_loss", "radius_theory_corrected_logpoint",
        "lambda_eff_theory_corrected_logpoint"}


def test_missing_runs_are_listed_and_too_few_refused(tiny_sweep, tmp_path, capsys):
    out = shutil.copytree(tiny_sweep, tmp_path / "sw")
    first = min((out / "runs").iterdir())
    (first / "summary.json").unlink()
    (partial,) = sources.read_sweep(out, bootstrap=0)
    assert partial.runs["missing"] == [first.name] and len(partial.table) == 9
    assert (partial.table["status"] == "finished").sum() == 8
    assert partial.checks["n_points"] == 8  # the unfinished point is left out
    for name in [p.name for p in sorted((out / "runs").iterdir())][1:4]:
        (out / "runs" / name / "summary.json").unlink()
    with pytest.raises(SystemExit) as exc:  # 5 finished runs: too few for the quadratic
        main(["analyze", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "at least 6 configurations with an entropy, got 5" in err
    assert "0 still converging (appendix H), 4 not finished" in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "analysis.json").exists()


@pytest.mark.parametrize("command", ["analyze", "plot", "report"])
def test_what_is_not_a_result_is_refused(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, str(tmp_path)])
    assert exc.value.code == 2 and "not a sweep directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_with_no_finished_run_is_refused(tmp_path, digits):
    """eta_eff = 0.2 from ||w|| = 1 diverges within ~10 steps (lr grows with the norm)."""
    spec = sweep.sweep_from_dict({
        "protocol": "fixed-elr", "learning_rates": [0.2, 0.4], "weight_decays": [0.02],
        "width": 2, "iterations": 100, "queue_size": 4,
        "train": {"log_every": 50, "log_linear_until": 100, "log_points": 0,
                  "queue_every": 10, "stationary_logs": 2}})
    sweep.run_local(spec, tmp_path / "sw", dataset=digits, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"no finished run to analyse \(2 diverged, 0 not"):
        sources.read_sweep(tmp_path / "sw")
