"""Table 4 as the paper prints it, fitted on each entropy chart, and sweeps that mix networks or
charts: the report says which it used and refuses to fit a mix."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from thermosgd.analysis import fits, sources
from thermosgd.analysis.sources import Analysis
from thermosgd.cli import main
from thermosgd.report import build


def test_the_paper_table_as_printed():
    """Pinned from Table 4 of the paper (appendix F), character for character, with the numbers
    the rules read derived from the same strings (percentages as fractions)."""
    printed = fits.PAPER_TABLE4_PRINTED
    assert printed[("resnet18", 4, "cifar10")]["fixed-lr"] == {
        "r2": "0.9939", "(a1-a2)/R": "0.993", "(2a3-a5)/R": "0.005", "(2a4-a5)/R": "0.005",
        "max_rel_error": "3.0%"}
    assert printed[("resnet18", 4, "cifar10")]["fixed-elr"]["max_rel_error"] == "2.5%"
    assert printed[("resnet18", 4, "cifar100")]["fixed-lr"]["(2a3-a5)/R"] == "0.00008"
    assert printed[("convnet", 16, "cifar100")]["fixed-elr"]["2a4/R"] == "-0.0015"
    assert printed[("convnet", 8, "cifar10")]["fixed-lr"]["max_rel_error"] == "17.6%"
    assert fits.PAPER_TABLE4[("convnet", 8, "cifar10")]["fixed-lr"]["max_rel_error"] == \
        pytest.approx(0.176)
    assert fits.PAPER_TABLE4[("resnet18", 4, "cifar10")]["fixed-elr"]["a2/R"] == -1.029
    # every setup and both protocols, with each protocol's own coefficients
    for protocols in printed.values():
        assert set(protocols["fixed-elr"]) >= {"r2", "a2/R", "2a4/R", "a5/R", "max_rel_error"}
        assert set(protocols["fixed-lr"]) >= {"r2", "(a1-a2)/R", "(2a3-a5)/R", "(2a4-a5)/R",
                                              "max_rel_error"}
    note = fits.PAPER_TABLE4_NOTES[("resnet18", 4, "cifar10", "fixed-lr")]
    assert "0.9926" in note and "0.9939" in note and "2.5 %" in note


def test_the_report_sets_both_charts_beside_the_paper():
    """A ResNet-18 CIFAR-10 fixed-ELR section: the comparison table carries the fit on each
    chart and the paper's entries as printed."""
    ours = {"r2": 0.99, "a2/R": -1.01, "2a4/R": 0.001, "a5/R": 0.0, "max_rel_error": 0.031}
    key = ("resnet18", 4, "cifar10")
    checks = {"V3": {"table4": ours | {"paper_printed": fits.PAPER_TABLE4_PRINTED[key]
                                       ["fixed-elr"]},
                     "table4_raw": ours | {"a2/R": -1.2}}}
    analysis = Analysis("s", "fixed-elr", pd.DataFrame(), checks, {"architecture": "resnet18-v2"})
    head, rows, note = build._table4_comparison(analysis)
    assert head[1:] == ("ours: aligned chart", "ours: paper's raw chart", "paper, as printed")
    assert ("a2/R", "-1.01", "-1.2", "-1.029") in rows
    assert ("max. relative error", "3.1%", "3.1%", "2.5%") in rows
    assert note == ""
    assert "the paper's ResNet-18" in build._network_line(analysis.setup)[0]


def _runs(out):
    return sorted((out / "runs").iterdir())


def test_a_sweep_fits_table4_on_each_chart_and_says_which_network(tiny_sweep, tmp_path):
    (a,) = sources.read_sweep(tiny_sweep, bootstrap=0)
    assert a.setup["architecture"] == "convnet-v1" and a.setup["charts"] == "aligned and raw"
    v3 = a.checks["V3"]
    assert set(v3) == {"table4", "table4_raw"}
    assert v3["table4"]["r2"] != v3["table4_raw"]["r2"]
    page = tmp_path / "sw"
    shutil.copytree(tiny_sweep, page)
    assert main(["report", str(page)]) == 0
    text = (page / "report.md").read_text()
    assert "network convnet-v1" in text and "ours: paper's raw chart" in text
    assert "Table 4 (paper's raw chart) r2" in text


def test_runs_without_the_raw_chart_still_analyse(tiny_sweep, tmp_path):
    """Runs written before the raw chart was recorded (no column, no chart in the config): the
    aligned fit as before; a chart only some runs recorded is not fitted, and the setup says so."""
    out = shutil.copytree(tiny_sweep, tmp_path / "sw")
    for k, run in enumerate(_runs(out)):
        if k == 0:
            continue  # one run keeps its raw chart
        summary = json.loads((run / "summary.json").read_text())
        summary["config"].pop("chart")
        for name in ("entropy_raw", "entropy_sphere_raw"):
            summary["stationary"].pop(name)
        (run / "summary.json").write_text(json.dumps(summary))
        metrics = pd.read_parquet(run / "metrics.parquet")
        metrics.drop(columns=["entropy_raw", "entropy_sphere_raw"]).to_parquet(
            run / "metrics.parquet")
    (a,) = sources.read_sweep(out, bootstrap=0)
    assert set(a.checks["V3"]) == {"table4"}
    assert a.setup["charts"] == "aligned; raw recorded by 1 of 9 finished runs, not fitted"
    assert np.isfinite(a.checks["V3"]["table4"]["r2"])


def test_a_sweep_mixing_networks_is_refused(tiny_sweep, tmp_path, capsys):
    """Two runs written before the network was recorded, by thermosgd 0.2's ResNet-18 (its
    config says resnet18, no architecture): their values are another function's."""
    out = shutil.copytree(tiny_sweep, tmp_path / "sw")
    for run in _runs(out)[:2]:
        summary = json.loads((run / "summary.json").read_text())
        summary.pop("architecture")
        summary["config"]["model"] = "resnet18"
        (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"mix networks: convnet-v1 \(7 runs\), resnet18-v1 "
                                         r"\(2 runs\)"):
        sources.read_sweep(out, bootstrap=0)
    with pytest.raises(SystemExit) as code:
        main(["analyze", str(out)])
    assert code.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
