"""The one tolerance system: which numbers are judged, pass and fail, the one meaning of
borderline, missing numbers as misses."""

import pytest

from thermosgd.analysis.rules import Rule, judge


def _errors(median, maximum):
    return {"median_rel_error": median, "max_rel_error": maximum,
            "interior_median_rel_error": median, "interior_max_rel_error": maximum}


def _isotropic(quantity="radius", potential="G"):
    return {
        "n_points": 9, "n_diverged": 0,
        "V1": {"quantity": quantity, **_errors(0.01, 0.04)},
        "U": _errors(0.02, 0.06),
        "entropy_sphere": {"median_abs_error": 0.03, "max_abs_error": 0.12,
                           "median_rel_error": 0.02, "max_rel_error": 0.3},
        "V2": {"potential": potential, "exact_fraction": 0.8, "within_one_step_fraction": 1.0},
        "V3": {"dS/dlog_lr": {"value": 0.99, "target": 1.0, "rel_error": 0.01},
               "dS/dlog_wd": {"value": 0.01, "target": 0.0, "abs_error": 0.01}},
        "V4": {"n_adiabats": 17, "median_spread": 0.05, "max_spread": 0.1, "entropy_range": 4.6,
               "median_spread_over_range": 0.05 / 4.6},
    }


def _network():
    return {"n_points": 9, "n_diverged": 0,
            "V1": {"quantity": "radius", **_errors(0.4, 0.6), "corrected": _errors(0.05, 0.2)},
            "V3": {"table4": {"r2": 0.95, "a2/R": -1.02, "2a4/R": 0.01, "a5/R": 0.0,
                              "mean_rel_error": 0.05, "max_rel_error": 0.3,
                              "ci95": {"r2": [0.93, 0.97], "a2/R": [-1.5, -0.6],
                                       "2a4/R": [0.0, 0.02]},
                              "paper": {"a2/R": -1.029, "r2": 0.9926}}}}


def _row(rows, key):
    (row,) = [r for r in rows if r.key == key]
    return row


@pytest.mark.parametrize("rule, value, status, borderline", [
    (Rule("below", 0.05), 0.03, "pass", False),
    (Rule("below", 0.05), 0.045, "pass", True),  # within a fifth of the bound
    (Rule("below", 0.05), 0.05, "fail", False),
    (Rule("at_least", 0.9), 0.91, "pass", True),  # a fifth of the room up to 1 is 0.02
    (Rule("at_least", 0.9), 0.95, "pass", False),
    (Rule("near", 0.1, -1.0, relative=True), -1.05, "pass", False),
    (Rule("near", 0.1, -1.0, relative=True), -1.09, "pass", True),
    (Rule("near", 0.05), -0.06, "fail", False),
])
def test_a_rule_judges_and_a_fifth_of_the_tolerance_is_its_default_uncertainty(
        rule, value, status, borderline):
    assert ("pass" if rule.passes(value) else "fail") == status
    assert rule.borderline(value) is borderline


def test_with_an_interval_borderline_means_the_interval_leaves_the_tolerance():
    rule = Rule("near", 0.10, -1.0, relative=True)
    assert rule.borderline(-1.02, interval=(-1.5, -0.6))
    assert not rule.borderline(-1.08, interval=(-1.09, -1.05))  # settled, however near the edge


def test_isotropic_numbers_are_judged_against_their_tolerances():
    checks = _isotropic()
    checks["U"]["interior_median_rel_error"] = 0.2  # 20 % > 5 %
    checks["V3"]["dS/dlog_lr"] = {"value": 0.9, "target": 1.0}  # 10 % off
    checks["V2"]["within_one_step_fraction"] = 0.91
    rows = judge(checks)
    assert _row(rows, "V1.interior_median_rel_error").status == "pass"
    assert _row(rows, "U.interior_median_rel_error").status == "fail"
    assert _row(rows, "V3.dS/dlog_lr").status == "fail"
    assert _row(rows, "V3.dS/dlog_lr").paper == 1.0  # the prediction beside ours
    assert _row(rows, "V3.dS/dlog_wd").status == "pass"  # target 0: absolute error
    v2 = _row(rows, "V2.within_one_step_fraction")
    assert v2.status == "pass" and v2.borderline
    assert _row(rows, "V4.median_spread_over_range").status == "pass"  # 0.05 / 4.6 ~ 1 %
    assert _row(rows, "V1.max_rel_error").status == "info"
    assert [r.key.split(".")[0] for r in rows][:4] == ["V1"] * 4  # V1 first, run last
    assert rows[-1].key.startswith("run.")


def test_where_a_corrected_prediction_exists_v1_judges_it_and_reports_the_sde():
    rows = judge(_network())
    assert _row(rows, "V1.corrected.median_rel_error").status == "pass"
    assert _row(rows, "V1.interior_median_rel_error").status == "info"
    a2 = _row(rows, "V3.table4.a2/R")
    assert a2.status == "pass" and a2.borderline and a2.interval == "[-1.5, -0.6]"
    assert a2.paper == -1.029 and "interval" in a2.note
    assert not _row(rows, "V3.table4.2a4/R").borderline
    assert not _row(rows, "V3.table4.r2").borderline
    assert _row(rows, "V3.table4.mean_rel_error").shown == "5.00 %"
    assert not [r for r in rows if r.key.endswith("(a1-a2)/R")]  # fixed ELR's coefficients only


def test_missing_numbers_are_misses_and_unknown_ones_are_reported():
    checks = _isotropic()
    del checks["U"]["interior_median_rel_error"]
    checks["V1"]["interior_median_rel_error"] = float("nan")
    checks["V5"] = {"new_metric": 1.5, "nested": {"x": 2}, "label": "s"}
    checks["V3"]["table4"] = {"skipped": "too few points"}
    rows = judge(checks)
    assert _row(rows, "U.interior_median_rel_error").status == "n/a"
    assert _row(rows, "V1.interior_median_rel_error").status == "n/a"
    assert _row(rows, "V5.nested.x").status == "info"
    assert _row(rows, "V3.table4").shown == "too few points"
    (skipped,) = judge({"skipped": "needs two values on each axis"})
    assert skipped.status == "n/a" and skipped.shown == "needs two values on each axis"
