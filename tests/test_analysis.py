"""V1-V4 checks on synthetic stationary tables built from the closed forms."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thermosgd import theory
from thermosgd.analysis import isotropic as analysis
from thermosgd.cli import main
from thermosgd.isotropic import IsotropicConfig, grid_protocol

GRID = tuple(np.geomspace(1e-3, 1e-1, 9))
RADII = tuple(np.geomspace(0.1, 10, 9))


def _theory_table(protocol, d=3):
    """A stationary table whose 'measurements' are the theory (asymptotic VMF, eq. 106-107)."""
    second = {"radii": RADII} if protocol == "fixed-sphere" else {"weight_decays": GRID}
    config = IsotropicConfig(protocol=protocol, learning_rates=GRID, dim=d, iterations=10**6,
                             **second)
    p, seeds = grid_protocol(config)
    t, r = p.temperature(1.0, d), p.stationary_radius(1.0, d)
    s_sph = theory.vmf_sphere_entropy_asymptotic(t, d)
    sphere = protocol == "fixed-sphere"
    nan = np.full(seeds.size, np.nan)
    lam = p.pressure(1.0, d) if sphere else nan
    return pd.DataFrame({
        "protocol": protocol, "d": d, "sigma": 1.0, "seed": seeds, "diverged": False,
        "lr": p.rate, "wd": nan if sphere else p.second, "radius_target": p.second if sphere else nan,
        "radius": r, "U": theory.vmf_mean_loss_asymptotic(t, d), "entropy_sphere": s_sph,
        "entropy": theory.total_entropy(s_sph, r, d), "temperature": t,
        "pressure": p.pressure(1.0, d), "volume": theory.volume(r), "lambda_eff": lam,
        "radius_theory": r, "U_theory": theory.vmf_mean_loss_asymptotic(t, d),
        "entropy_sphere_theory": s_sph, "entropy_theory": theory.total_entropy(s_sph, r, d),
        "lambda_eff_theory": lam,
    })


@pytest.mark.parametrize("protocol", ["fixed-lr", "fixed-elr", "fixed-sphere"])
def test_theory_passes_every_check_exactly(protocol):
    checks = analysis.isotropic_checks(_theory_table(protocol))
    assert checks["V1"]["max_rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert checks["U"]["max_rel_error"] == pytest.approx(0.0, abs=1e-12)
    # a VMF state minimizes its own G (F) exactly among VMF states (eq. 14, 22)
    assert checks["V2"]["exact_fraction"] == 1.0
    for name, entry in checks["V3"].items():
        if isinstance(entry, dict) and "target" in entry:
            assert entry["value"] == pytest.approx(entry["target"], abs=1e-9), name
    # along p V^2 = const the asymptotic entropy is constant (eq. 31); floats only
    assert checks["V4"]["n_adiabats"] > 0
    assert checks["V4"]["max_spread"] < 1e-9


def test_fixed_lr_table4_coefficients_of_theory():
    v3 = analysis.isotropic_checks(_theory_table("fixed-lr"))["V3"]["table4"]
    assert v3["(a1-a2)/R"] == pytest.approx(1.0, abs=1e-9)  # eq. 23 via eq. 108
    assert v3["(2a3-a5)/R"] == pytest.approx(0.0, abs=1e-9)
    assert v3["r2"] == pytest.approx(1.0)


def test_checks_detect_deviations():
    table = _theory_table("fixed-lr")
    table["radius"] *= 1.1
    table["entropy"] += 0.3 * np.log(table["wd"])  # breaks the Maxwell relation
    checks = analysis.isotropic_checks(table)
    assert checks["V1"]["median_rel_error"] == pytest.approx(0.1)
    assert checks["V3"]["dS/dlog_wd"]["value"] == pytest.approx(0.3)
    assert checks["V3"]["maxwell_difference"]["rel_error"] == pytest.approx(0.3)


def test_potential_minimum_counts_misses():
    table = _theory_table("fixed-elr")
    # shuffle the entropies: states no longer minimize their own G
    table["entropy"] = np.random.default_rng(0).permutation(table["entropy"].to_numpy())
    v2 = analysis.check_potential_minimum(table)
    assert v2["exact_fraction"] < 0.5


def test_seed_average_and_interior():
    a, b = _theory_table("fixed-lr"), _theory_table("fixed-lr")
    b["seed"] = 1
    b["U"] += 1.0
    b.loc[0, "diverged"] = True
    avg = analysis.seed_average(pd.concat([a, b]))
    assert len(avg) == 81
    assert avg["n_seeds"].tolist().count(1) == 1  # the diverged seed is left out
    np.testing.assert_allclose(avg["U"].iloc[1:], a["U"].iloc[1:] + 0.5)
    assert analysis.interior_mask(avg).sum() == 49  # 7 x 7 inside a 9 x 9 grid


def test_error_summary_ignores_non_finite():
    out = analysis.error_summary([1.0, np.nan, 3.0], [1.0, 1.0, 2.0])
    assert out["median_rel_error"] == pytest.approx(0.25)
    assert out["max_rel_error"] == pytest.approx(0.5)


# --- The numbers of results written by 0.1, pinned before the analysis was reorganised -------

PINNED = Path(__file__).parent / "data" / "pinned"
V0_1 = Path(__file__).parent / "data" / "v0_1"


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


def _assert_same_numbers(found, pinned):
    found, pinned = dict(_leaves(found)), dict(_leaves(pinned))
    assert set(found) == set(pinned)
    for key, value in pinned.items():
        if isinstance(value, float) and not isinstance(found[key], bool):
            # the same arithmetic in the same order up to reassociation: 1e-12 relative
            assert found[key] == pytest.approx(value, rel=1e-12, abs=1e-300, nan_ok=True), key
        else:
            assert found[key] == value, key


def test_a_0_1_sweep_gives_the_pinned_numbers(tmp_path, capsys):
    """V1 and Table 4 (with the bootstrap intervals of seed 0, 200 draws) of the 0.1 sweep."""
    path = Path(shutil.copytree(V0_1 / "sweep", tmp_path / "sweep"))
    assert main(["analyze", str(path), "--bootstrap", "200"]) == 0
    found = json.loads((path / "analysis.json").read_text())
    for key in ("package_version", "git_revision"):
        found.pop(key)
    _assert_same_numbers(found, json.loads((PINNED / "sweep_analysis.json").read_text()))
    renamed = {"rate": "learning_rate", "second": "weight_decay"}  # the 0.1 analysis' names
    table = pd.read_csv(path / "analysis_table.csv").rename(columns=renamed)
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
    found = json.loads((path / "checks.json").read_text())["protocols"]
    pinned = json.loads((PINNED / "isotropic_checks.json").read_text())["protocols"]
    _assert_same_numbers(found, pinned)
