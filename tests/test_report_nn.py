"""The network-sweep report: checks against tolerances, Markdown, self-contained HTML rendered in
headless Chromium (Debian's chromium package), every figure decoded."""

import re

import pytest
from conftest import CHROMIUM, loaded_figures

from thermosgd.report import network as report_nn
from thermosgd.cli import main


def test_checks_follow_the_tolerances():
    result = {"V1": {"corrected": {"median_rel_error": 0.05, "max_rel_error": 0.2},
                     "sde": {"median_rel_error": 0.4, "max_rel_error": 0.6}},
              "V3": {"r2": 0.95, "a2/R": -1.2, "2a4/R": 0.01, "a5/R": -0.2,
                     "mean_rel_error": 0.05, "max_rel_error": 0.3,
                     "paper": {"a2/R": -1.029, "r2": 0.9926}},
              "converging_runs": ["x"]}
    rows = {c.name: c for c in report_nn.checks(result)}
    assert rows["V1 corrected, median abs. rel. error"].status == "pass"
    assert rows["V1 SDE, median abs. rel. error"].status == "info"
    assert rows["a2/R"].status == "fail" and rows["a2/R"].paper == -1.029
    assert rows["2a4/R"].status == "pass" and rows["a5/R"].status == "fail"
    assert rows["R^2"].status == "pass" and rows["Maxwell mean rel. error"].status == "pass"
    assert rows["still converging (appendix H), left out"].value == 1


def test_a_pass_whose_interval_leaves_the_tolerance_is_borderline():
    result = {"setup": {"sweep": "s", "model": "convnet", "width": 4, "dataset": "digits",
                        "protocol": "fixed-elr", "d": 11, "iterations": 10, "configurations": 9},
              "table": [None] * 9, "missing_runs": [], "diverged_runs": [], "converging_runs": [],
              "V1": {"corrected": {"median_rel_error": 0.05, "max_rel_error": 0.2},
                     "sde": {"median_rel_error": 0.4, "max_rel_error": 0.6}},
              "V3": {"r2": 0.95, "a2/R": -1.02, "2a4/R": 0.01, "a5/R": 0.0,
                     "mean_rel_error": 0.05, "max_rel_error": 0.3,
                     "ci95": {"r2": [0.93, 0.97], "a2/R": [-1.5, -0.6], "2a4/R": [0.0, 0.02]}}}
    rows = {c.name: c for c in report_nn.sweep_section(result, {}).checks}
    assert rows["a2/R"].status == "pass" and rows["a2/R"].borderline
    assert rows["a2/R"].interval == "[-1.5, -0.6]"
    assert not rows["2a4/R"].borderline and not rows["R^2"].borderline
    assert not rows["a5/R"].borderline  # no interval: nothing to say
    assert rows["Maxwell mean rel. error"].shown == "5.00 %"


def test_report_writes_a_self_contained_page_and_a_summary(tiny_sweep, capsys):
    assert main(["report", str(tiny_sweep), "--bootstrap", "20"]) == 0
    page = (tiny_sweep / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing outside the file
    summary = (tiny_sweep / "report.md").read_text()
    assert "| (a1-a2)/R |" in summary and "| check | value |" in summary
    for link in re.findall(r"\]\((figures/[^)]+)\)", summary):
        assert (tiny_sweep / link).is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_every_figure_renders_in_headless_chromium(tiny_sweep, tmp_path):
    """The report shows all three figures; a page with one image corrupted shows two, so the
    browser check can fail."""
    page, _ = report_nn.write_report(tiny_sweep, bootstrap=0)
    assert loaded_figures(page) == 3
    broken = tmp_path / "broken.html"
    text = page.read_text()
    start = text.index("base64,") + len("base64,")
    broken.write_text(text[:start] + "AAAA" + text[start + 40:])
    assert loaded_figures(broken) == 2


def test_report_refuses_what_is_not_a_sweep(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    assert exc.value.code == 2 and "not a sweep directory" in capsys.readouterr().err
