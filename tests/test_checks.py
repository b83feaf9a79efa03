"""The numbers of V1-V4 and Table 4: exact on tables built from the closed forms, sensitive to
deviations, chosen by the columns present, and the same as 0.1 gave on the results it wrote."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import theory_table

from thermosgd.analysis import checks
from thermosgd.cli import main

PINNED = Path(__file__).parent / "data" / "pinned"
V0_1 = Path(__file__).parent / "data" / "v0_1"


@pytest.mark.parametrize("protocol", ["fixed-lr", "fixed-elr", "fixed-sphere"])
def test_theory_passes_every_check_exactly(protocol):
    found = checks.stationary_checks(theory_table(protocol), bootstrap=0)
    assert found["V1"]["max_rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert found["U"]["max_rel_error"] == pytest.approx(0.0, abs=1e-12)
    # a VMF state minimizes its own G (F) exactly among VMF states (eq. 14, 22)
    assert found["V2"]["exact_fraction"] == 1.0
    for name, entry in found["V3"].items():
        if isinstance(entry, dict) and "target" in entry:
            assert entry["value"] == pytest.approx(entry["target"], abs=1e-9), name
    # along p V^2 = const the asymptotic entropy is constant (eq. 31); floats only
    assert found["V4"]["n_adiabats"] > 0
    assert found["V4"]["max_spread"] < 1e-9


def test_fixed_lr_table4_coefficients_of_theory():
    v3 = checks.stationary_checks(theory_table("fixed-lr"), bootstrap=0)["V3"]["table4"]
    assert v3["(a1-a2)/R"] == pytest.approx(1.0, abs=1e-9)  # eq. 23 via eq. 108
    assert v3["(2a3-a5)/R"] == pytest.approx(0.0, abs=1e-9)
    assert v3["r2"] == pytest.approx(1.0)


def test_checks_detect_deviations():
    table = theory_table("fixed-lr")
    table["radius"] *= 1.1
    table["entropy"] += 0.3 * np.log(table["weight_decay"])  # breaks the Maxwell relation
    found = checks.stationary_checks(table, bootstrap=0)
    assert found["V1"]["median_rel_error"] == pytest.approx(0.1)
    assert found["V3"]["dS/dlog_wd"]["value"] == pytest.approx(0.3)
    assert found["V3"]["maxwell_difference"]["rel_error"] == pytest.approx(0.3)


def test_potential_minimum_counts_misses():
    table = theory_table("fixed-elr")
    # shuffle the entropies: states no longer minimize their own G
    table["entropy"] = np.random.default_rng(0).permutation(table["entropy"].to_numpy())
    assert checks.check_potential_minimum(table)["exact_fraction"] < 0.5


def test_checks_follow_the_columns():
    """Without the closed forms (a network's table) only V1 and Table 4 run; with an
    appendix-G corrected prediction V1 measures it too; the sphere has no Table 4."""
    table = theory_table("fixed-lr").drop(columns=["U_theory", "entropy_sphere_theory",
                                                  "entropy_theory"])
    found = checks.stationary_checks(table.assign(radius_theory_corrected=table["radius"] * 1.2),
                                     bootstrap=0)
    assert set(found) == {"n_points", "n_diverged", "V1", "V3"} and set(found["V3"]) == {"table4"}
    assert found["V1"]["corrected"]["median_rel_error"] == pytest.approx(1 / 6)
    sphere = checks.stationary_checks(theory_table("fixed-sphere"), bootstrap=0)
    assert "table4" not in sphere["V3"] and sphere["V1"]["quantity"] == "lambda_eff"


def test_a_table_in_0_1_column_names_gives_the_same_numbers():
    table = theory_table("fixed-elr")
    old = table.rename(columns={"learning_rate": "lr", "weight_decay": "wd",
                                "sphere_radius": "radius_target"})
    old = old.assign(diverged=old.pop("status") != "finished")
    assert checks.stationary_checks(old, bootstrap=0) == checks.stationary_checks(table,
                                                                                bootstrap=0)


def test_too_few_points_for_the_quadratic_skip_table4():
    table = theory_table("fixed-lr")
    small = table[table["learning_rate"].isin(sorted(set(table["learning_rate"]))[:2])
                  & table["weight_decay"].isin(sorted(set(table["weight_decay"]))[:2])]
    assert "at least 6" in checks.stationary_checks(small)["V3"]["table4"]["skipped"]


# --- The numbers of results written by 0.1, pinned before the analysis was reorganised -------

def _leaves(record, prefix=""):
    """Every number (or string, None) of a JSON record by its key path."""
    if isinstance(record, dict):
        for key, value in record.items():
            yield from _leaves(value, f"{prefix}{key}/")
    elif isinstance(record, list):
        for k, value in enumerate(record):
            yield from _leaves(value, f"{prefix}{k}/")
    else:
        yield prefix.rstrip("/"), record


# 0.1's sweep analysis -> where the same number sits now: its V1 against the SDE beside the
# isotropic one, its Table 4 under V3/table4 as for the isotropic model, the run lists in runs
SWEEP_MOVED = (("V1/sde/n", "n_points"), ("V1/corrected/n", "n_points"), ("V1/sde/", "V1/"),
               ("V3/", "V3/table4/"), ("missing_runs", "runs/missing"),
               ("diverged_runs", "runs/diverged"), ("converging_runs", "runs/converging"))


def _assert_same_numbers(found, pinned, moved=()):
    found = dict(_leaves(found))
    for key, value in _leaves(pinned):
        now = next((new + key[len(old):] for old, new in moved if key.startswith(old)), key)
        assert now in found, key
        if isinstance(value, float):
            # the same arithmetic in the same order: equal to 1e-12 relative
            assert found[now] == pytest.approx(value, rel=1e-12, nan_ok=True), key
        else:
            assert found[now] == value, key


def test_a_0_1_sweep_gives_the_pinned_numbers(tmp_path, capsys):
    """V1 and Table 4 (with the bootstrap intervals of seed 0, 200 draws) of the 0.1 sweep."""
    path = Path(shutil.copytree(V0_1 / "sweep", tmp_path / "sweep"))
    assert main(["analyze", str(path), "--bootstrap", "200"]) == 0
    found = json.loads((path / "analysis.json").read_text())["results"]["tiny"]
    found = found["checks"] | {"setup": found["setup"], "runs": found["runs"]}
    pinned = json.loads((PINNED / "sweep_analysis.json").read_text())
    _assert_same_numbers(found, pinned, SWEEP_MOVED)
    table = pd.read_csv(path / "analysis_table.csv")
    renamed = {"rate": "learning_rate", "second": "weight_decay"}  # the 0.1 analysis' names
    pinned = pd.read_csv(PINNED / "sweep_table.csv").rename(columns=renamed)
    for column in pinned.columns:
        if pd.api.types.is_float_dtype(pinned[column]):
            np.testing.assert_allclose(table[column], pinned[column], rtol=1e-12)
        else:
            assert table[column].tolist() == pinned[column].tolist(), column


def test_a_0_1_isotropic_output_gives_the_pinned_numbers(tmp_path, capsys):
    """V1-V4 of the three protocols of the 0.1 isotropic output."""
    path = Path(shutil.copytree(V0_1 / "isotropic", tmp_path / "isotropic"))
    assert main(["analyze", str(path)]) == 0
    results = json.loads((path / "analysis.json").read_text())["results"]
    pinned = json.loads((PINNED / "isotropic_checks.json").read_text())["protocols"]
    for protocol, numbers in pinned.items():
        _assert_same_numbers(results[protocol]["checks"], numbers)


def test_table4_takes_the_optimizers_maxwell_target():
    """A fixed-LR table whose columns name AdamW (eps = 0) is fitted against AdamW's target
    d - 1 (twice SGD's): an entropy with exactly AdamW's slopes (3R/2, -R/2) reads
    (a1-a2)/R = 2 and passes against target/R = 2; momentum keeps SGD's target 1."""
    from thermosgd.analysis.checks import stationary_checks
    from thermosgd.analysis.rules import judge
    from thermosgd.analysis.tables import optimizer_of as table_optimizer

    table = theory_table("fixed-lr", d=50)
    r = (50 - 1) / 2
    table["entropy"] = 1.5 * r * np.log(table["learning_rate"]) \
        - 0.5 * r * np.log(table["weight_decay"])
    adamw = table.assign(optimizer="adamw", momentum=0.9, beta2=0.999, eps=0.0)
    assert table_optimizer(adamw).name == "adamw"
    t4 = stationary_checks(adamw, bootstrap=0)["V3"]["table4"]
    assert t4["(a1-a2)/R"] == pytest.approx(2.0) and t4["target/R"] == pytest.approx(2.0)
    verdicts = {c.key: c.status for c in judge(stationary_checks(adamw, bootstrap=0))}
    assert verdicts["V3.table4.(a1-a2)/R"] == "pass"
    momentum = table.assign(optimizer="momentum", momentum=0.9, beta2=np.nan, eps=np.nan)
    t4 = stationary_checks(momentum, bootstrap=0)["V3"]["table4"]
    assert t4["(a1-a2)/R"] == pytest.approx(2.0) and t4["target/R"] == pytest.approx(1.0)
    verdicts = {c.key: c.status for c in judge(stationary_checks(momentum, bootstrap=0))}
    assert verdicts["V3.table4.(a1-a2)/R"] == "fail"
    with pytest.raises(ValueError, match="mixes optimizers"):
        table_optimizer(pd.concat([adamw, momentum]))
