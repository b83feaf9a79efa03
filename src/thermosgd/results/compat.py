"""Reading results written by older schema versions (the manifest's ``schema``).

Version 0.1 wrote the isotropic stationary table with the columns ``lr``, ``wd``,
``radius_target`` and a boolean ``diverged``; 0.2 spells them as every stationary table does
(:mod:`thermosgd.results.schema`): ``learning_rate``, ``weight_decay``, ``sphere_radius`` and
``status``. A sweep's run directories are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["RENAMED_0_1", "read_stationary", "upgrade_stationary"]

RENAMED_0_1 = {"lr": "learning_rate", "wd": "weight_decay", "radius_target": "sphere_radius"}


def _diverged(values: pd.Series) -> pd.Series:
    # a bool from pandas, "True"/"False" strings or 0/1 from a CSV written elsewhere
    return values.astype(str).str.strip().str.lower().isin({"true", "1", "1.0"})


def upgrade_stationary(table: pd.DataFrame) -> pd.DataFrame:
    """The same table in the current column names; a current table is returned as it is."""
    table = table.rename(columns={k: v for k, v in RENAMED_0_1.items() if k in table})
    if "diverged" in table and "status" not in table:
        status = _diverged(table["diverged"]).map({True: "diverged", False: "finished"})
        table = table.drop(columns="diverged")
        table.insert(min(7, len(table.columns)), "status", status)
    return table


def read_stationary(path) -> pd.DataFrame:
    """A stationary.csv of any schema version, in the current column names."""
    return upgrade_stationary(pd.read_csv(Path(path)))
