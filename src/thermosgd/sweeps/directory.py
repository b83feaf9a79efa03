"""A sweep directory: its manifest, one run directory per configuration, locks, collection.

``thermosgd.json`` (kind "sweep": the definition and ``scale``), ``runs/<name>/`` (one run
directory per configuration, :mod:`thermosgd.results.rundir`) and ``locks/<name>.lock``. A
configuration belongs to one worker at a time: the worker holds its lock (an OS file lock,
released when the process dies, so a killed worker leaves no stale lock).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from thermosgd.results import io as _io
from thermosgd.results import rundir as _rundir
from thermosgd.results.lock import OwnerLock
from thermosgd.results.schema import ARCHITECTURES, OPTIMIZER_COLUMNS, architecture_of
from thermosgd.sweeps.grid import Sweep

__all__ = ["KIND", "STATES", "collect", "gather", "read_sweep_dir", "run_dir", "run_name",
           "run_state", "status"]

KIND = "sweep"  # manifest kind of a sweep directory
LEGACY_GRID_KIND = "train-grid"  # thermosgd 0.1's `train` grids, read as sweeps
STATES = ("finished", "diverged", "running", "interrupted", "pending", "damaged", "failed")
# the fixed sphere's r is "sphere_radius": "radius" is the measured ||w|| (r*) of every protocol
HYPER_COLUMNS = ("run", "protocol", "learning_rate", "weight_decay", "sphere_radius", "seed")
# beside them, results.schema.OPTIMIZER_COLUMNS: the optimizer on the scale-invariant weights
# (plain SGD: "sgd", momentum 0, no beta2 / eps)


def run_name(config) -> str:
    """A run's directory name: protocol, the optimizer and its momentum (not for plain SGD),
    rate, lambda or r, seed."""
    second = (f"r{config.radius:g}" if config.protocol == "fixed-sphere"
              else f"wd{config.weight_decay:g}")
    optimizer = "" if config.optimizer == "sgd" else f"_{config.optimizer}{config.momentum:g}"
    return f"{config.protocol}{optimizer}_lr{config.learning_rate:g}_{second}_seed{config.seed}"


def run_dir(out: Path, name: str) -> Path:
    """Where run ``name`` of the sweep in ``out`` lives: ``runs/<name>``, or ``<name>`` itself
    in a grid written by ``thermosgd train`` 0.1 (kind "train-grid")."""
    out = Path(out)
    legacy = out / name
    return legacy if legacy.is_dir() and not (out / "runs").is_dir() else out / "runs" / name


def _definition(sweep: Sweep, scale: float) -> dict:
    return {"sweep": sweep.to_dict(), "scale": scale}


def open_sweep_dir(out: Path, sweep: Sweep, scale: float) -> None:
    """Refuse a directory that is not this sweep's (before anything is written)."""
    out = Path(out)
    record = _io.read_manifest(out) if out.is_dir() else None
    if record is not None and record["kind"] == LEGACY_GRID_KIND:
        found, fscale = _legacy_grid(out, record), 1.0
    else:
        _io.check_output_dir(out, KIND)
        if record is None:
            return
        found, fscale = _definition_of(out, record)
    if found != sweep or fscale != scale:
        raise ValueError(f"{out} holds the sweep {found.name!r} (scale {fscale:g}), not "
                         f"{sweep.name!r} (scale {scale:g}) or a different grid; choose "
                         "another --out")


def claim_sweep_dir(out: Path, sweep: Sweep, scale: float) -> None:
    if not (Path(out) / _io.MANIFEST).is_file():
        _io.claim_output_dir(out, KIND, _definition(sweep, scale))


def read_sweep_dir(out: Path) -> tuple[Sweep, float]:
    """The sweep's definition and scale, read from its manifest (any readable schema)."""
    out = Path(out)
    record = _io.read_manifest(out) if out.is_dir() else None
    if record is not None and record["kind"] == LEGACY_GRID_KIND:
        return _legacy_grid(out, record), 1.0
    if record is None or record["kind"] != KIND:
        raise ValueError(f"{out} is not a sweep directory (no thermosgd.json of kind 'sweep'); "
                         "give the --out of `thermosgd sweep run`")
    return _definition_of(out, record)


def _definition_of(out: Path, record: dict) -> tuple[Sweep, float]:
    """The sweep and scale a manifest records; ValueError naming a manifest that has none."""
    try:
        return Sweep.from_dict(record["config"]["sweep"]), float(record["config"]["scale"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{out / _io.MANIFEST} is damaged (no sweep definition in it: "
                         f"{type(err).__name__} {err}); restore it, or run the sweep into a "
                         "new --out") from None


def _legacy_grid(out: Path, record: dict) -> Sweep:
    """The sweep a grid trained by ``thermosgd train`` 0.1 was: its runs' own configurations
    (they share everything but the learning rate, the second hyperparameter and the seed)."""
    from thermosgd.nn.config import TrainConfig

    configs = []
    for name in record["config"]["runs"]:
        try:
            stored = json.loads((out / name / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{out / name / 'config.json'} cannot be read ({err}); the grid "
                             "needs every run's configuration") from None
        known = {f for f in TrainConfig.__dataclass_fields__}
        configs.append(TrainConfig(**{k: v for k, v in stored.items() if k in known}))
    first = configs[0]
    own = {"protocol", "model", "width", "dataset", "data", "iterations", "queue_size",
           "learning_rate", "weight_decay", "radius", "seed", "device"}
    train = {k: v for k, v in first.to_dict().items() if k not in own}
    axis = "radii" if first.protocol == "fixed-sphere" else "weight_decays"
    second = "radius" if first.protocol == "fixed-sphere" else "weight_decay"
    return Sweep(name=out.name, protocol=first.protocol, model=first.model, width=first.width,
                 dataset=first.dataset, iterations=first.iterations,
                 queue_size=first.queue_size,
                 learning_rates=tuple(dict.fromkeys(c.learning_rate for c in configs)),
                 **{axis: tuple(dict.fromkeys(getattr(c, second) for c in configs))},
                 seeds=tuple(dict.fromkeys(c.seed for c in configs)), train=train,
                 description="a grid trained by `thermosgd train` (thermosgd 0.1)")


def _lock(out: Path, name: str) -> OwnerLock:
    return OwnerLock(Path(out) / "locks" / f"{name}.lock")


def _failure_path(out: Path, name: str) -> Path:
    return Path(out) / "failed" / f"{name}.json"


def record_failures(out: Path, results: dict) -> None:
    """Write why each run whose result is "failed" failed (``failed/<name>.json``), so that
    ``sweep status`` names it; the next ``sweep run`` retries it."""
    for name, result in results.items():
        if result.get("status") == "failed":
            _io.write_json(_failure_path(out, name), {"run": name, "error": result["error"]})


def clear_failure(out: Path, name: str) -> None:
    """Forget a run's recorded failure: its worker holds the lock and trains it again."""
    _failure_path(out, name).unlink(missing_ok=True)


def run_failure(out: Path, name: str) -> str | None:
    """Why run ``name`` failed at its last attempt, or None."""
    try:
        return str(json.loads(_failure_path(out, name).read_text())["error"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:  # a damaged record still says so
        return f"(its record {_failure_path(out, name)} cannot be read: {err})"


def run_problem(out: Path, name: str) -> str | None:
    """Why run ``name`` is damaged (a file named, and what to do), or None."""
    return _rundir.problem(run_dir(out, name))


def run_state(out: Path, name: str) -> str:
    """finished, diverged, running (locked by a live worker), interrupted (a checkpoint, no
    worker), pending, damaged (a record, metrics table or checkpoint that cannot be read:
    :func:`run_problem` says which; the other runs go on), or failed (its last attempt raised:
    :func:`run_failure` says why; the next run retries it)."""
    run = run_dir(out, name)
    if _lock(out, name).is_locked():  # a worker creates its lock file before taking it
        return "running"
    if run_problem(out, name):
        return "damaged"
    summary = run / "summary.json"
    if summary.is_file():
        found = json.loads(summary.read_text()).get("status")
        if found in ("finished", "diverged"):
            return found
    if _failure_path(out, name).is_file():
        return "failed"
    return "interrupted" if any((run / n).is_file() for n in (
        _rundir.CHECKPOINT, _rundir.PREVIOUS)) else "pending"


def status(out: str | Path) -> dict[str, list[str]]:
    """Run names by state (STATES) of the sweep in ``out``."""
    sweep, scale = read_sweep_dir(out)
    states: dict[str, list[str]] = {s: [] for s in STATES}
    for config in sweep.configs(scale=scale, device="cpu", data=_any_data(sweep)):
        name = run_name(config)
        states[run_state(out, name)].append(name)
    return states


def _any_data(sweep: Sweep) -> str | None:
    return None if sweep.dataset == "digits" else "-"  # names only, nothing is read


def collect(out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``out/metrics.parquet`` (every log of every run, with its hyperparameters) and
    ``out/stationary.csv`` (one row per configuration: hyperparameters, state, stationary
    means of the last ``stationary_logs`` logs); return both tables."""
    out = Path(out)
    metrics, table = gather(out)
    _io.atomic_write(out / "metrics.parquet", lambda tmp: metrics.to_parquet(tmp, index=False))
    _io.write_csv(out / "stationary.csv", table)
    return metrics, table


def gather(out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`collect`'s two tables, read from the run directories, nothing written. The
    stationary table is in the schema's columns (:mod:`thermosgd.results.schema`): one row per
    configuration, its ``status`` (finished, diverged, running, interrupted, pending)."""
    out = Path(out)
    sweep, scale = read_sweep_dir(out)
    logs, rows = [], []
    for config in sweep.configs(scale=scale, device="cpu", data=_any_data(sweep)):
        name = run_name(config)
        hyper = {"run": name, "protocol": config.protocol,
                 "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
                 "sphere_radius": config.radius, "seed": config.seed}
        optimizer = {"optimizer": config.optimizer, "momentum": config.momentum or 0.0,
                     "beta2": config.beta2, "eps": config.eps}
        state = run_state(out, name)
        run = run_dir(out, name)
        # what a run not yet written would use: this thermosgd's network and the sweep's options
        row = hyper | {"status": state, "architecture": ARCHITECTURES[config.model],
                       "chart": config.chart, "measurement": config.measurement} | optimizer
        try:
            if state in ("finished", "diverged"):
                row |= _summary_row(run / "summary.json")
            if (run / "metrics.parquet").is_file() and state != "damaged":
                metrics = _read_metrics(run / "metrics.parquet", finished=state in (
                    "finished", "diverged"))
                if metrics is not None:
                    logs.append(metrics.assign(**hyper, **optimizer)[
                        list(HYPER_COLUMNS) + list(OPTIMIZER_COLUMNS) + list(metrics.columns)])
        except ValueError as err:  # damage the cheap checks of run_state could not see
            row = hyper | optimizer | {"status": "damaged", "problem": str(err)}
        if row["status"] == "damaged" and "problem" not in row:
            row["problem"] = run_problem(out, name)
        rows.append(row)
    table = pd.DataFrame(rows)
    metrics = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(
        columns=list(HYPER_COLUMNS))
    return metrics, table



def _summary_row(path: Path) -> dict:
    """The columns a finished run's summary.json gives the stationary table. Raises
    ValueError naming a summary that is not one."""
    summary = json.loads(path.read_text())
    try:
        row = {"iterations_done": summary["iterations_done"],
               "diverged_at": summary["diverged_at"], "d": summary["d"]}
        stationary = dict(summary["stationary"])
        recorded = summary.get("config") or {}
        # runs written before these were recorded: the first ResNet-18, the aligned chart only,
        # thermosgd's measurement
        row |= {"architecture": architecture_of(summary),
                "chart": recorded.get("chart", "aligned"),
                "measurement": recorded.get("measurement", "thermosgd")}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is damaged (no {err}); delete it: the run is read back from "
                         "its last checkpoint, or trained again") from None
    # U, the stationary mean loss of the schema, is the train loss for a network
    return row | stationary | {"U": stationary.get("train_loss")}


def _read_metrics(path: Path, *, finished: bool) -> pd.DataFrame | None:
    """A run's metrics table; a damaged one of a finished run raises ValueError, one of a run
    still going is skipped (the next checkpoint rewrites it)."""
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow's errors share no base class but Exception
        if not finished:
            return None
        raise ValueError(f"{path} is damaged ({(str(err).splitlines() or [''])[0]}); delete "
                         "the run's summary.json to read the run back from its last "
                         "checkpoint") from None


def describe_status(out) -> str:
    """The sweep's runs counted by state, and the names of those running."""
    states = status(out)
    lines = [f"{out}: {sum(map(len, states.values()))} configurations"]
    lines += [f"  {state:<12}{len(names):>5}" for state, names in states.items()]
    lines += [f"  running: {name}" for name in states["running"]]
    lines += [f"  damaged: {name}: {run_problem(out, name)}" for name in states["damaged"]]
    lines += [f"  failed: {name}: {run_failure(out, name)}" for name in states["failed"]]
    return "\n".join(lines)
