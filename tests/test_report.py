"""The Markdown report: every protocol and check listed, tolerances applied, figures linked."""

import json

import pytest

from thermosgd.report import isotropic as report

PROTOCOLS = ["fixed-lr", "fixed-elr", "fixed-sphere"]


def _errors(median, maximum):
    return {"median_rel_error": median, "max_rel_error": maximum,
            "interior_median_rel_error": median, "interior_max_rel_error": maximum}


def _protocol(quantity="radius", potential="G"):
    return {
        "V1": {"quantity": quantity, **_errors(0.01, 0.04)},
        "U": _errors(0.02, 0.06),
        "entropy_sphere": {"median_abs_error": 0.03, "max_abs_error": 0.12,
                           "median_rel_error": 0.02, "max_rel_error": 0.3},
        "V2": {"potential": potential, "exact_fraction": 0.8, "within_one_step_fraction": 1.0},
        "V3": {"dS/dlog eta": {"value": 0.99, "target": 1.0, "rel_error": 0.01},
               "dS/dlog lambda": {"value": 0.01, "target": 0.0, "abs_error": 0.01}},
        "V4": {"n_adiabats": 17, "median_spread": 0.05, "max_spread": 0.1, "entropy_range": 4.6},
    }


@pytest.fixture
def checks():
    return {
        "config": {"d": 3, "sigma": 1.0, "iterations": 2_000_000, "seeds": [0, 1]},
        "package_version": "0.1.0",
        "git_revision": "abc1234",
        "protocols": {
            "fixed-lr": _protocol(),
            "fixed-elr": _protocol(),
            "fixed-sphere": _protocol("lambda_eff", "F"),
        },
    }


def _row(rows, protocol, check, metric):
    (row,) = [r for r in rows if (r.protocol, r.check, r.metric) == (protocol, check, metric)]
    return row


def test_checks_table_judges_against_tolerances(checks):
    checks["protocols"]["fixed-elr"]["V1"]["interior_median_rel_error"] = 0.2  # 20 % > 5 %
    checks["protocols"]["fixed-lr"]["V3"]["dS/dlog eta"] = {"value": 0.9, "target": 1.0}  # 10 %
    checks["protocols"]["fixed-sphere"]["V2"]["within_one_step_fraction"] = 0.91  # 0.9 <= x < 0.92
    rows = report.checks_table(checks)
    assert _row(rows, "fixed-lr", "V1", "interior_median_rel_error").status == "pass"
    assert _row(rows, "fixed-elr", "V1", "interior_median_rel_error").status == "fail"
    assert _row(rows, "fixed-lr", "V3", "dS/dlog eta").status == "fail"  # rel error derived
    assert _row(rows, "fixed-lr", "V3", "dS/dlog lambda").status == "pass"  # target 0: abs error
    borderline = _row(rows, "fixed-sphere", "V2", "within_one_step_fraction")
    assert borderline.status == "pass" and borderline.borderline
    assert _row(rows, "fixed-lr", "V4", "median_spread").status == "pass"  # 0.05 / 4.6 ~ 1 %
    assert _row(rows, "fixed-lr", "V1", "max_rel_error").status == "info"


def test_missing_and_unknown_keys_do_not_break(checks):
    del checks["protocols"]["fixed-lr"]["U"]
    del checks["protocols"]["fixed-lr"]["V4"]
    checks["protocols"]["fixed-lr"]["V5"] = {"new_metric": 1.5, "nested": {"x": 2}, "label": "s"}
    checks["protocols"]["fixed-lr"]["V3"]["table4"] = {"r2": 0.99, "a2/R": -1.02}  # fit diagnostics
    checks["protocols"]["fixed-elr"]["V1"]["interior_median_rel_error"] = float("nan")
    checks["protocols"]["fixed-sphere"] = {"skipped": "needs two values on each axis"}
    checks["protocols"]["custom"] = "not a dict"
    rows = report.checks_table(checks)
    assert _row(rows, "fixed-lr", "U", "interior_median_rel_error").status == "n/a"
    assert _row(rows, "fixed-lr", "V4", "—").status == "n/a"
    assert _row(rows, "fixed-lr", "V5", "nested.x").status == "info"
    assert _row(rows, "fixed-lr", "V3", "table4.r2").status == "info"
    assert _row(rows, "fixed-elr", "V1", "interior_median_rel_error").status == "n/a"
    assert _row(rows, "fixed-sphere", "skipped", "—").shown == "needs two values on each axis"
    assert _row(rows, "custom", "skipped", "—").status == "n/a"
    text = report.render_markdown(checks, {})
    assert "new_metric" in text and "is missing or not finite" in text
    assert "needs two values on each axis" in text.split("## Where it misses")[1]
    assert "No figure for this protocol" in text
    assert "No protocol results" in report.render_markdown({}, {})


def test_write_report_lists_everything_and_links_figures(tmp_path, checks):
    checks["protocols"]["fixed-sphere"]["U"]["interior_median_rel_error"] = 0.3  # must fail
    (tmp_path / "checks.json").write_text(json.dumps(checks))
    for protocol in ["fixed-lr", "fixed-sphere"]:  # fixed-elr has no figure
        (tmp_path / protocol).mkdir()
        (tmp_path / protocol / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    path = report.write_report(tmp_path)
    assert path == tmp_path / "report.md"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checks.json", "fixed-lr", "fixed-sphere", "report.html", "report.md"]  # no temp file
    text = path.read_text(encoding="utf-8")

    for name in ["fixed LR", "fixed ELR", "fixed sphere"]:
        assert f"## {name}" in text
    for label in ["V1 ideal gas law", "mean loss U", "sphere entropy", "V2 potential minimized",
                  "V3 Maxwell relations", "V4 adiabats", "stationary radius r*",
                  "effective weight decay λ_eff", "Helmholtz energy", "dS/dlog eta"]:
        assert label in text
    assert "](fixed-lr/figure.png)" in text and "](fixed-sphere/figure.png)" in text
    assert "fixed-elr/figure.png" not in text
    assert "d = 3" in text and "iterations = 2000000" in text and "abc1234" in text

    failing = [line for line in text.splitlines() if "**FAIL**" in line]
    assert len(failing) == 1 and "30.00 %" in failing[0]
    misses = text.split("## Where it misses")[1].split("##")[0]
    assert "fixed sphere" in misses and "mean loss U" in misses and "fails" in misses
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("src='data:image/png;base64,") == 2  # the same page, figures inlined
    assert "class='fail'" in page and "Where it misses" in page and "abc1234" in page


def test_write_report_needs_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="checks.json"):
        report.write_report(tmp_path)
