"""Reading a result directory into stationary tables and analysing them.

Each kind of result directory (:mod:`thermosgd.results.locate`) has a reader that turns it into
:class:`Analysis` objects, one per protocol: a stationary table in the schema's columns
(:mod:`thermosgd.results.schema`; older versions read through :mod:`thermosgd.results.compat`),
what was run, and the numbers of :func:`thermosgd.analysis.checks.stationary_checks`. From there
on every result is handled alike; a new result source plugs in with a reader in ``READERS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.analysis.checks import stationary_checks
from thermosgd.analysis.fits import MIN_FIT_POINTS, PAPER_TABLE4
from thermosgd.analysis.tables import converging, seed_average
from thermosgd.results import io as _io
from thermosgd.results.compat import read_stationary
from thermosgd.results.schema import MANIFEST, grid_axes

__all__ = ["READERS", "Analysis", "analyse_path", "grid_checks", "read_isotropic", "read_sweep",
           "write_analysis"]


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
    missing = table.loc[~table["status"].isin(["finished", "diverged"]), "run"].tolist()
    diverged = table.loc[table["status"] == "diverged", "run"].tolist()
    done = table[table["status"] == "finished"]
    if done.empty:
        raise ValueError(f"{path}: no finished run to analyse ({len(diverged)} diverged, "
                         f"{len(missing)} not finished)")
    required = ("U", "radius", "temperature", "pressure", "volume", "entropy", "radius_theory",
                "lambda_eff", "lambda_eff_theory", "d")
    absent = [c for c in required if c not in done.columns]
    if absent:
        raise ValueError(f"{path}: the runs lack the column(s) {', '.join(absent)}; were they "
                         "written by `thermosgd train` / `sweep run`?")
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
                                f"{spec.name}, momentum {beta:g}", bootstrap, seed)
                for beta, part in table.groupby("momentum", sort=True)]
    return [_sweep_analysis(path, spec, table, metrics, spec.name, bootstrap, seed)]


def _optimizer_label(table: pd.DataFrame) -> str:
    """The optimizer of a sweep's table, as ``thermosgd.theory.optimizers.Optimizer.label``."""
    if "optimizer" not in table or table.empty:
        return "sgd"
    from thermosgd.analysis.checks import table_optimizer

    return table_optimizer(table).label


def _sweep_analysis(path, spec, table, metrics, name, bootstrap, seed) -> Analysis:
    """One Analysis of a sweep's table (all of it, or one value of its momentum axis)."""
    missing = table.loc[~table["status"].isin(["finished", "diverged"]), "run"].tolist()
    diverged = table.loc[table["status"] == "diverged", "run"].tolist()
    done = table[table["status"] == "finished"]
    still = table.loc[table["converging"], "run"].tolist()
    if spec.protocol in ("fixed-lr", "fixed-elr"):
        found = int(np.isfinite(seed_average(table)["entropy"].to_numpy(float)).sum())
        if found < MIN_FIT_POINTS:
            raise ValueError(
                f"{path}: the quadratic entropy fit needs at least {MIN_FIT_POINTS} "
                f"configurations with an entropy, got {found}: {len(still)} still converging "
                f"(appendix H), {len(missing)} not finished, {len(diverged)} diverged")
    checks = stationary_checks(table, bootstrap=bootstrap, seed=seed)
    if "V3" in checks:
        paper = PAPER_TABLE4.get((spec.model, spec.width, spec.dataset), {})
        checks["V3"]["table4"]["paper"] = paper.get(spec.protocol)
    setup = {"sweep": spec.name, "protocol": spec.protocol, "model": spec.model,
             "width": spec.width, "dataset": spec.dataset,
             "d": int(done["d"].iloc[0]) if not done.empty else None,
             "iterations": spec.iterations, "configurations": len(table),
             "seeds": len(spec.seeds), "optimizer": _optimizer_label(table)}
    runs = {"missing": missing, "diverged": diverged, "converging": still}
    path = Path(path)
    figures = (path / "figures" if name == spec.name
               else path / "figures" / f"momentum{name.rsplit(' ', 1)[-1]}")
    return Analysis(name, spec.protocol, table, checks, setup, runs, metrics, figures,
                    _mtime(path.glob("runs/*/summary.json")))


def grid_checks(table: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0) -> dict:
    """:func:`stationary_checks`, or why not: a grid axis with a single value."""
    x, y = grid_axes(table["protocol"].iloc[0])
    if min(table[x].nunique(), table[y].nunique()) < 2:
        return {"skipped": "the checks need at least two values on each grid axis"}
    return stationary_checks(table, bootstrap=bootstrap, seed=seed)


def read_isotropic(path, *, bootstrap: int = 1000, seed: int = 0) -> list[Analysis]:
    """An isotropic-model output (``thermosgd reproduce isotropic``, ``thermosgd simulate``): one
    Analysis per protocol its manifest names; a protocol without results is skipped with the
    reason. Raises ValueError when it holds no protocol's results."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        manifest = {}
    if manifest.get("kind") != "isotropic":
        raise ValueError(f"{path} is not an isotropic output (no thermosgd.json of kind "
                         "'isotropic'); give the --out of `thermosgd reproduce isotropic`")
    out = []
    for protocol in manifest.get("config", {}).get("protocols", []):
        folder = path / protocol
        try:
            table = read_stationary(folder / "stationary.csv")
            config = json.loads((folder / "config.json").read_text()).get("config", {})
        except (OSError, ValueError):
            out.append(Analysis(protocol, protocol, pd.DataFrame(), {"skipped": (
                f"no results in {protocol}/stationary.csv (run `thermosgd reproduce isotropic` "
                "with the same --out again to finish it)")}, {"protocol": protocol}))
            continue
        checks = grid_checks(table, bootstrap=bootstrap, seed=seed)
        setup = {"protocol": protocol, "model": "isotropic noise", "d": config.get("dim"),
                 "sigma": config.get("sigma"), "iterations": config.get("iterations"),
                 "seeds": len(config.get("seeds", [0])), "configurations": len(table)}
        x, y = grid_axes(protocol)
        diverged = table[table["status"] == "diverged"]
        runs = {"diverged": [f"{x} {a:g}, {y} {b:g}, seed {s}" for a, b, s in
                             zip(diverged[x], diverged[y], diverged["seed"])]}
        out.append(Analysis(protocol, protocol, table, checks, setup, runs, None, folder,
                            _mtime([folder / "stationary.csv"])))
    if all(a.skipped and a.table.empty for a in out):
        raise ValueError(f"{path} holds no finished protocol (no <protocol>/stationary.csv); "
                         "run `thermosgd reproduce isotropic` with the same --out to finish it")
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
