"""On-disk formats: the one schema, the reader of 0.1 tables, locating results."""

import json

import numpy as np
import pandas as pd
import pytest

from thermosgd.results import compat, locate, schema


def test_every_stationary_column_is_spelled_once_with_unit_and_symbol():
    names = [c.name for c in schema.STATIONARY_COLUMNS]
    assert len(names) == len(set(names))
    assert {"learning_rate", "weight_decay", "sphere_radius", "status", "radius", "U",
            "entropy", "temperature", "pressure", "volume", "lambda_eff"} <= set(names)
    assert not {"lr", "wd", "radius_target", "diverged", "rate", "second"} & set(names)
    assert all(c.meaning for c in schema.STATIONARY_COLUMNS)


@pytest.mark.parametrize("protocol, axes", [
    ("fixed-lr", ("learning_rate", "weight_decay")),
    ("fixed-elr", ("learning_rate", "weight_decay")),
    ("fixed-sphere", ("learning_rate", "sphere_radius"))])
def test_grid_axes_of_each_protocol(protocol, axes):
    assert schema.grid_axes(protocol) == axes


def test_a_0_1_table_is_read_in_the_current_names(tmp_path):
    old = pd.DataFrame({"protocol": "fixed-sphere", "d": 3, "sigma": 1.0, "seed": [0, 0],
                        "lr": [0.1, 0.2], "wd": np.nan, "radius_target": [1.0, 1.0],
                        "diverged": [False, True], "radius": [1.0, np.nan]})
    old.to_csv(tmp_path / "stationary.csv", index=False)
    table = compat.read_stationary(tmp_path / "stationary.csv")
    assert list(table.columns) == ["protocol", "d", "sigma", "seed", "learning_rate",
                                   "weight_decay", "sphere_radius", "status", "radius"]
    assert table["status"].tolist() == ["finished", "diverged"]
    assert compat.upgrade_stationary(table).equals(table)  # a current table stays as it is


def test_locate_finds_a_result_or_the_results_in_a_folder(tmp_path):
    for name, kind in (("a", "sweep"), ("b", "isotropic"), ("c", "train")):
        (tmp_path / name).mkdir()
        (tmp_path / name / schema.MANIFEST).write_text(json.dumps({"kind": kind}))
    assert locate.locate(tmp_path / "a") == [("sweep", tmp_path / "a")]
    assert locate.locate(tmp_path) == [("sweep", tmp_path / "a"), ("isotropic", tmp_path / "b")]
    with pytest.raises(ValueError, match="not a sweep directory"):
        locate.locate(tmp_path / "c")
