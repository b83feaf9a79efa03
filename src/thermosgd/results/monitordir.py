"""A monitored run's directory (``thermosgd.Monitor(..., out=DIR)``).

``thermosgd.json`` (kind "monitor", the schema version, the monitor's settings),
``config.json`` (the groups: name, layer, parameters, d, normalization, whether scale-invariant,
the optimizer as the theory reads it or why it does not; provenance), ``metrics/part-NNNNNN.parquet``
(one file per flush, one row per group and log step, ``schema.MONITOR_COLUMNS`` first; a flush
only ever adds a file, so a run killed at any point leaves whole files) and ``summary.json``
(status, steps and logs so far, the last state of every group). Every file is written
atomically. One monitor writes a directory at a time: it holds the directory's lock file
(:mod:`thermosgd.results.lock`) from :func:`claim` until it closes.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.results import io
from thermosgd.results.lock import Busy, OwnerLock
from thermosgd.results.schema import LOCK_FILE, MANIFEST, MONITOR_COLUMNS

__all__ = ["KIND", "claim", "levels", "read_config", "read_metrics", "read_summary",
           "write_config", "write_part", "write_summary"]

KIND = "monitor"
_PARTS = "metrics"
# the git revision takes two subprocesses: asked once per process, not at every summary
_provenance = functools.cache(io.provenance)


def claim(out, settings: dict, *, overwrite: bool = False) -> tuple[Path, OwnerLock]:
    """Take ``out`` for one writer and write its manifest; returns the directory and its held
    lock (release it when the monitor closes). Raises ValueError, before writing anything but
    the lock file, when ``out`` holds anything but a monitored run, or holds one and
    ``overwrite`` is False, and :class:`~thermosgd.results.lock.Busy` naming the process that
    writes it now.

    The lock is taken before an old run is removed, so a live writer's files are never
    deleted under it; a writer that died (kill -9 included) left no lock: the kernel dropped
    its ``flock``, and its run is taken over like any finished one.
    """
    out = Path(out)
    io.check_output_dir(out, KIND)
    lock = _take(out)
    try:
        if (out / MANIFEST).is_file():
            if not overwrite:
                raise ValueError(f"{out} holds a monitored run already; give a new directory, "
                                 "or overwrite=True to replace it")
            for name in (_PARTS, "figures"):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in ("config.json", "summary.json", "analysis.json", "analysis_table.csv"):
                (out / name).unlink(missing_ok=True)
        io.claim_output_dir(out, KIND, settings)
    except BaseException:
        lock.release()
        raise
    return out, lock


def _take(out: Path) -> OwnerLock:
    """The lock of ``out``, held; a refusal names the process that holds it."""
    lock = OwnerLock(out / LOCK_FILE)
    for attempt in range(2):
        try:
            lock.acquire(timeout=0)
            return lock
        except Busy:
            owner = lock.owner()
        ours = owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()
        if not ours or attempt:
            break
        # a monitor of this process that nothing reaches any more holds it until collected
        # (a finalizer releases its lock): collect once before refusing
        gc.collect()
    who = (f"process {owner['pid']} on {owner.get('host')} (since {owner.get('since')})"
           if owner.get("pid") else "another process")
    advice = ("an earlier thermosgd.Monitor of this process still writes it: close that one "
              "first (mon.close(), or let its with block end), or give another out=" if ours
              else "wait for that run to end, or give another out=")
    raise Busy(f"{out} is being written by {who}: {advice}")


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
    if "level" not in table:  # written before schema 0.3
        table.insert(table.columns.get_loc("layer") + 1, "level", levels(table))
    return table.sort_values("step", kind="stable", ignore_index=True)


def levels(frame: pd.DataFrame) -> pd.Series:
    """Each row's level: its own, or for rows written without one (schema 0.2) "all" and "other"
    by name, "layer" where the group is its whole layer, else "group" (a part of a layer)."""
    if "level" in frame:
        return frame["level"]
    group, layer = frame["group"].astype(str), frame["layer"].astype(str)
    return pd.Series(np.select([group == "all", group == "other", group == layer],
                               ["all", "other", "layer"], "group"), index=frame.index)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_config(out) -> dict:
    return _json(Path(out) / "config.json")


def read_summary(out) -> dict:
    return _json(Path(out) / "summary.json")
