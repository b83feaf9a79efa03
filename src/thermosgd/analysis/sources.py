"""Reading a result directory into stationary tables and analysing them.

Each kind of result directory (:mod:`thermosgd.results.locate`) has a reader that turns it into
:class:`Analysis` objects, one per protocol: a stationary table in the schema's columns
(:mod:`thermosgd.results.schema`; older versions read through :mod:`thermosgd.results.compat`),
what was run, and the numbers of :func:`thermosgd.analysis.checks.stationary_checks`. From there
on every result is handled alike; a new result source plugs in with a reader in ``READERS``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.analysis.checks import TABLE4_CHARTS, stationary_checks
from thermosgd.analysis.fits import (
    MIN_FIT_POINTS,
    PAPER_TABLE4,
    PAPER_TABLE4_NOTES,
    PAPER_TABLE4_PRINTED,
)
from thermosgd.analysis.tables import by_optimizer, converging, optimizer_of, seed_average
from thermosgd.results import io as _io
from thermosgd.results.compat import read_stationary
from thermosgd.results.schema import CHART_COLUMNS, CHARTS, MANIFEST, grid_axes

__all__ = ["READERS", "Analysis", "MissingProtocol", "analyse_path", "grid_checks",
           "read_isotropic", "read_protocol_folder", "read_sweep", "write_analysis"]


@dataclass
class Analysis:
    """One protocol of one result: its stationary table and every number measured on it."""

    name: str  # the sweep's name or the protocol
    protocol: str
    table: pd.DataFrame  # one row per run (grid point x seed), schema columns
    checks: dict  # stationary_checks' numbers, or {"skipped": reason}
    setup: dict  # what was run (JSON values)
    runs: dict = field(default_factory=dict)  # missing, diverged, converging run names
    metrics: pd.DataFrame | None = None  # every log of every run (network runs)
    figure_dir: Path | None = None  # where its figures go
    source_mtime: float = 0.0  # newest input file: a figure older than this is redrawn

    @property
    def skipped(self) -> str | None:
        return self.checks.get("skipped")


def _mtime(paths) -> float:
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def read_sweep(path, *, bootstrap: int = 1000, seed: int = 0) -> list[Analysis]:
    """A sweep directory (``thermosgd sweep run``): one Analysis whose table holds every run
    with its status. Runs still converging (appendix H) are flagged in the ``converging``
    column; like unfinished ones they are left out by the seed average. Raises ValueError when
    too little finished to analyse."""
    from thermosgd.sweeps import directory as sweep

    spec, _ = sweep.read_sweep_dir(path)
    metrics, table = sweep.gather(path)
    missing = table.loc[~table["status"].isin(["finished", "diverged", "damaged"]),
                        "run"].tolist()
    broken = table[table["status"] == "damaged"]
    damaged = [f"{run}: {why}" for run, why in zip(broken["run"],
                                                   broken.get("problem", broken["run"]))]
    diverged = table.loc[table["status"] == "diverged", "run"].tolist()
    done = table[table["status"] == "finished"]
    if done.empty:
        raise ValueError(f"{path}: no finished run to analyse ({len(diverged)} diverged, "
                         f"{len(missing)} not finished, {len(damaged)} damaged"
                         + (f": {damaged[0]}" if damaged else "") + ")")
    required = ("U", "radius", "temperature", "pressure", "volume", "entropy", "radius_theory",
                "lambda_eff", "lambda_eff_theory", "d")
    absent = [c for c in required if c not in done.columns]
    if absent:
        raise ValueError(f"{path}: the runs lack the column(s) {', '.join(absent)}; were they "
                         "written by `thermosgd train` / `sweep run`?")
    provenance = _one_network(path, done)
    table, charts = _common_charts(table, done)
    shared = {"setup": {**provenance, "charts": charts}, "damaged": damaged}
    logs = int(spec.train.get("stationary_logs", 30))
    flags = {run: converging(m, logs=logs) for run, m in metrics.groupby("run")}
    finished = table["status"] == "finished"
    # every run stays in the table with its status; the seed average leaves out the points
    # whose seeds did not all finish and settle
    table = table.assign(converging=table["run"].map(flags).fillna(False).astype(bool)
                         & finished)
    table = table.sort_values(list(grid_axes(spec.protocol)), kind="stable")
    if "momentum" in table and table["momentum"].nunique() > 1:
        # a momentum axis: one analysis per value (the fits run over the (rate, lambda) grid)
        return [_sweep_analysis(path, spec, part, metrics[metrics["run"].isin(part["run"])],
                                f"{spec.name}, momentum {beta:g}", bootstrap, seed, shared)
                for beta, part in table.groupby("momentum", sort=True)]
    return [_sweep_analysis(path, spec, table, metrics, spec.name, bootstrap, seed, shared)]


def _optimizer_label(table: pd.DataFrame) -> str:
    """The optimizer of a sweep's table, as ``thermosgd.theory.optimizers.Optimizer.label``."""
    if "optimizer" not in table or table.empty:
        return "sgd"
    return optimizer_of(table).label


def _sweep_analysis(path, spec, table, metrics, name, bootstrap, seed, shared) -> Analysis:
    """One Analysis of a sweep's table (all of it, or one value of its momentum axis);
    ``shared``: the network, charts and damaged runs of the whole sweep."""
    missing = table.loc[~table["status"].isin(["finished", "diverged", "damaged"]),
                        "run"].tolist()
    diverged = table.loc[table["status"] == "diverged", "run"].tolist()
    done = table[table["status"] == "finished"]
    still = table.loc[table["converging"], "run"].tolist()
    if spec.protocol in ("fixed-lr", "fixed-elr"):
        averaged = seed_average(table)
        found = max(int(np.isfinite(averaged[c].to_numpy(float)).sum())
                    for c in TABLE4_CHARTS.values() if c in averaged)
        if found < MIN_FIT_POINTS:
            raise ValueError(
                f"{path}: the quadratic entropy fit needs at least {MIN_FIT_POINTS} "
                f"configurations with an entropy, got {found}: {len(still)} still converging "
                f"(appendix H), {len(missing)} not finished, {len(diverged)} diverged")
    checks = stationary_checks(table, bootstrap=bootstrap, seed=seed)
    setup_key = (spec.model, spec.width, spec.dataset)
    for key in TABLE4_CHARTS:
        fit = checks.get("V3", {}).get(key)
        if fit is not None:
            fit["paper"] = PAPER_TABLE4.get(setup_key, {}).get(spec.protocol)
            fit["paper_printed"] = PAPER_TABLE4_PRINTED.get(setup_key, {}).get(spec.protocol)
    setup = {"sweep": spec.name, "protocol": spec.protocol, "model": spec.model,
             "width": spec.width, "dataset": spec.dataset,
             "d": int(done["d"].iloc[0]) if not done.empty else None,
             "iterations": spec.iterations, "configurations": len(table),
             "seeds": len(spec.seeds), "optimizer": _optimizer_label(table), **shared["setup"]}
    note = PAPER_TABLE4_NOTES.get((*setup_key, spec.protocol))
    if note:
        setup["paper_note"] = note
    runs = {"missing": missing, "diverged": diverged, "converging": still,
            "damaged": shared["damaged"]}
    path = Path(path)
    figures = (path / "figures" if name == spec.name
               else path / "figures" / f"momentum{name.rsplit(' ', 1)[-1]}")
    return Analysis(name, spec.protocol, table, checks, setup, runs, metrics, figures,
                    _mtime(path.glob("runs/*/summary.json")))


def _one_network(path, done: pd.DataFrame) -> dict:
    """The network and measurement mode every finished run used; ValueError when they mix
    (stationary values from different functions or conventions are not one surface to fit)."""
    found = {}
    for column, what in (("architecture", "networks"), ("measurement", "measurement modes")):
        counts = done[column].value_counts() if column in done else pd.Series(dtype=int)
        if len(counts) > 1:
            mix = ", ".join(f"{value} ({count} runs)" for value, count in counts.items())
            raise ValueError(f"{path}: the finished runs mix {what}: {mix}; fit each as its "
                             "own sweep")
        if len(counts):
            found[column] = str(counts.index[0])
    return found


def _common_charts(table: pd.DataFrame, done: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table with only the entropy charts every finished run recorded, and a line saying
    which: a chart that some runs lack is left out rather than fitted on a part of the grid."""
    recorded = done["chart"] if "chart" in done else pd.Series("aligned", index=done.index)
    kept, said = [], []
    for chart in CHARTS:
        has = recorded.isin([chart, "both"])
        if has.all():
            kept.append(chart)
        elif has.any():
            said.append(f"{chart} recorded by {int(has.sum())} of {len(done)} finished runs, "
                        "not fitted")
    drop = [c for chart in CHARTS if chart not in kept for c in CHART_COLUMNS[chart]]
    table = table.assign(**{c: np.nan for c in drop if c in table})
    return table, " and ".join(kept) + "".join(f"; {s}" for s in said)


def grid_checks(table: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0) -> dict:
    """:func:`stationary_checks`, or why not: a grid axis with a single value."""
    x, y = grid_axes(table["protocol"].iloc[0])
    if min(table[x].nunique(), table[y].nunique()) < 2:
        return {"skipped": "the checks need at least two values on each grid axis"}
    return stationary_checks(table, bootstrap=bootstrap, seed=seed)


class MissingProtocol(ValueError):
    """A protocol of an isotropic output not simulated yet (no config.json, its last file)."""


def read_protocol_folder(folder) -> tuple[pd.DataFrame, dict]:
    """One protocol of an isotropic output: its stationary table (any schema version) and
    config. Raises :class:`MissingProtocol` when it is not complete, and ValueError naming
    the damaged file (config.json, stationary.csv, traces.npz) and what to do."""
    folder = Path(folder)
    marker = folder / "config.json"
    fix = f"delete {folder} and run the same command to simulate it again"
    if not marker.is_file():
        raise MissingProtocol(f"no results in {folder.name}/ (run `thermosgd reproduce "
                              "isotropic` or `thermosgd simulate` with the same --out again to "
                              "finish it)")
    try:
        config = json.loads(marker.read_text())["config"]
        dict(config)
        expected = (len(config["learning_rates"]) * len(config["seeds"])
                    * len(config.get("weight_decays") or config.get("radii") or [None])
                    * len(config.get("momenta") or [None]))  # a grid over beta
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{marker} is damaged ({_first_line(err)}); {fix}") from None
    path = folder / "stationary.csv"
    try:
        table = read_stationary(path)
        missing = [c for c in _ISOTROPIC_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        if len(table) != expected:
            raise ValueError(f"{len(table)} rows for a grid of {expected}")
        table[list(_NUMERIC_COLUMNS)].astype(float)
        if set(table["protocol"]) != {config.get("protocol")}:
            raise ValueError("another protocol's rows")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is damaged ({_first_line(err)}); {fix}") from None
    traces = folder / "traces.npz"
    try:
        # the file is opened here so that it is closed when numpy refuses it
        with open(traces, "rb") as handle, np.load(handle) as archive:
            archive.files  # the zip directory: a truncated or foreign file fails here
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{traces} is damaged ({_first_line(err)}); {fix}") from None
    return table, config


_NUMERIC_COLUMNS = ("learning_rate", "seed", "d", "U", "radius", "entropy", "temperature",
                    "pressure", "volume")
_ISOTROPIC_COLUMNS = ("protocol", "status") + _NUMERIC_COLUMNS


def _first_line(err) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def read_isotropic(path, *, bootstrap: int = 1000, seed: int = 0) -> list[Analysis]:
    """An isotropic-model output (``thermosgd reproduce isotropic``, ``thermosgd simulate``): one
    Analysis per protocol its manifest names; a protocol without results, or with a damaged
    file, is skipped with the reason. Raises ValueError when it holds no protocol's results."""
    path = Path(path)
    manifest = _io.read_manifest(path) if path.is_dir() else None
    if manifest is None or manifest.get("kind") != "isotropic":
        raise ValueError(f"{path} is not an isotropic output (no thermosgd.json of kind "
                         "'isotropic'); give the --out of `thermosgd reproduce isotropic`")
    out = []
    protocols = manifest.get("config", {}).get("protocols", [])
    from thermosgd.protocols import PROTOCOLS

    if not isinstance(protocols, list) or not all(p in PROTOCOLS for p in protocols):
        raise ValueError(f"{path / MANIFEST} is damaged (no list of known protocols in it: "
                         f"{protocols!r}); restore it, or run the same command into a new --out")
    for protocol in protocols:
        folder = path / protocol
        try:
            table, config = read_protocol_folder(folder)
        except ValueError as err:
            out.append(Analysis(protocol, protocol, pd.DataFrame(), {"skipped": str(err)},
                                {"protocol": protocol}))
            continue
        parts = by_optimizer(table)  # a grid over beta: one analysis per beta
        for optimizer, part in parts:
            checks = grid_checks(part, bootstrap=bootstrap, seed=seed)
            setup = {"protocol": protocol, "model": "isotropic noise",
                     "optimizer": optimizer.label, "d": config.get("dim"),
                     "sigma": config.get("sigma"), "iterations": config.get("iterations"),
                     "seeds": len(config.get("seeds", [0])), "configurations": len(part)}
            x, y = grid_axes(protocol)
            diverged = part[part["status"] == "diverged"]
            runs = {"diverged": [f"{x} {a:g}, {y} {b:g}, seed {s}" for a, b, s in
                                 zip(diverged[x], diverged[y], diverged["seed"])]}
            name = protocol if len(parts) == 1 else f"{protocol} {optimizer.label}"
            figures = folder if len(parts) == 1 else folder / f"beta{optimizer.momentum:g}"
            out.append(Analysis(name, protocol, part, checks, setup, runs, None, figures,
                                _mtime([folder / "stationary.csv"])))
    if all(a.skipped and a.table.empty for a in out):
        reasons = "; ".join(a.skipped for a in out) or "no protocol"
        raise ValueError(f"{path} holds no finished protocol: {reasons}")
    return out


READERS = {"sweep": read_sweep, "isotropic": read_isotropic}


def analyse_path(kind: str, path, *, bootstrap: int = 1000) -> list[Analysis]:
    """The analyses of the result of ``kind`` at ``path`` (nothing is written)."""
    return READERS[kind](path, bootstrap=bootstrap)


def _record(a: Analysis) -> dict:
    return {"protocol": a.protocol, "setup": a.setup, "runs": a.runs, "checks": a.checks}


def write_analysis(path, analyses: list[Analysis], *, index: dict | None = None) -> list[Path]:
    """``path/analysis.json`` (every number, with provenance; ``index``: what a folder of
    results holds) and ``path/analysis_table.csv`` (the stationary tables, a ``result`` column
    first), written atomically."""
    path = Path(path)
    tables = [a.table.assign(result=a.name) for a in analyses if not a.table.empty]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["result"])
    _io.write_csv(path / "analysis_table.csv",
                  table[["result"] + [c for c in table.columns if c != "result"]])
    record = {"results": {a.name: _record(a) for a in analyses}} | _io.provenance()
    _io.write_json(path / "analysis.json", record if index is None else {"index": index} | record)
    return [path / "analysis.json", path / "analysis_table.csv"]
