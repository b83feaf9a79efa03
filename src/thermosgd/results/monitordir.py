"""A monitored run's directory (``thermosgd.Monitor(..., out=DIR)``).

``thermosgd.json`` (kind "monitor", the schema version, the monitor's settings),
``config.json`` (the groups: name, layer, parameters, d, normalization, whether scale-invariant,
the optimizer as the theory reads it or why it does not; provenance), ``metrics/part-NNNNNN.parquet``
(one file per flush, one row per group and log step, ``schema.MONITOR_COLUMNS`` first; a flush
only ever adds a file, so a run killed at any point leaves whole files) and ``summary.json``
(status, steps and logs so far, the last state of every group). Every file is written
atomically.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pandas as pd

from thermosgd.results import io
from thermosgd.results.schema import MANIFEST, MONITOR_COLUMNS

__all__ = ["KIND", "claim", "read_config", "read_metrics", "read_summary", "write_config",
           "write_part", "write_summary"]

KIND = "monitor"
_PARTS = "metrics"
# the git revision takes two subprocesses: asked once per process, not at every summary
_provenance = functools.cache(io.provenance)


def claim(out, settings: dict, *, overwrite: bool = False) -> Path:
    """Check ``out`` and write its manifest. Raises ValueError, before writing anything, when
    ``out`` holds anything but a monitored run, or holds one and ``overwrite`` is False."""
    out = Path(out)
    io.check_output_dir(out, KIND)
    if (out / MANIFEST).is_file():
        if not overwrite:
            raise ValueError(f"{out} holds a monitored run already; give a new directory, or "
                             "overwrite=True to replace it")
        for name in (_PARTS, "figures"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("config.json", "summary.json", "analysis.json", "analysis_table.csv"):
            (out / name).unlink(missing_ok=True)
    io.claim_output_dir(out, KIND, settings)
    return out


def write_config(out, record: dict) -> None:
    io.write_json(Path(out) / "config.json", record | _provenance())


def write_part(out, index: int, table: pd.DataFrame) -> Path:
    """The ``index``-th flush's rows as one parquet file."""
    path = Path(out) / _PARTS / f"part-{index:06d}.parquet"
    io.atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
    return path


def write_summary(out, summary: dict) -> None:
    io.write_json(Path(out) / "summary.json", summary | _provenance())


def read_metrics(out) -> pd.DataFrame:
    """Every row written so far, in step order (columns ``MONITOR_COLUMNS`` first)."""
    parts = sorted((Path(out) / _PARTS).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=list(MONITOR_COLUMNS))
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return table.sort_values("step", kind="stable", ignore_index=True)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_config(out) -> dict:
    return _json(Path(out) / "config.json")


def read_summary(out) -> dict:
    return _json(Path(out) / "summary.json")
