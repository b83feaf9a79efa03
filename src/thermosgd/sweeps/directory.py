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
from filelock import FileLock, Timeout

from thermosgd.results import io as _io
from thermosgd.sweeps.grid import Sweep

__all__ = ["KIND", "STATES", "collect", "gather", "read_sweep_dir", "run_dir", "run_name",
           "run_state", "status"]

KIND = "sweep"  # manifest kind of a sweep directory
LEGACY_GRID_KIND = "train-grid"  # thermosgd 0.1's `train` grids, read as sweeps
STATES = ("finished", "diverged", "running", "interrupted", "pending", "damaged")
# the fixed sphere's r is "sphere_radius": "radius" is the measured ||w|| (r*) of every protocol
HYPER_COLUMNS = ("run", "protocol", "learning_rate", "weight_decay", "sphere_radius", "seed")
# the optimizer on the scale-invariant weights (plain SGD: "sgd", momentum 0, no beta2 / eps)
OPTIMIZER_COLUMNS = ("optimizer", "momentum", "beta2", "eps")


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
        found, fscale = Sweep.from_dict(record["config"]["sweep"]), record["config"]["scale"]
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
    return Sweep.from_dict(record["config"]["sweep"]), float(record["config"]["scale"])


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


def _lock(out: Path, name: str) -> FileLock:
    (Path(out) / "locks").mkdir(parents=True, exist_ok=True)
    return FileLock(Path(out) / "locks" / f"{name}.lock")


def run_state(out: Path, name: str) -> str:
    """finished, diverged, running (locked by a live worker), interrupted (a checkpoint, no
    worker), pending, or damaged (a summary.json that cannot be read)."""
    run = run_dir(out, name)
    summary = run / "summary.json"
    if summary.is_file():
        try:
            found = json.loads(summary.read_text()).get("status")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return "damaged"  # named by `sweep status`; the other runs go on
        if found in ("finished", "diverged"):
            return found
    path = Path(out) / "locks" / f"{name}.lock"
    if path.is_file():  # a worker creates its lock file before taking it
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return "running"
        lock.release()
    return "interrupted" if (run / "checkpoint.pt").is_file() else "pending"


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
        row = hyper | {"status": state} | optimizer
        run = run_dir(out, name)
        if state in ("finished", "diverged"):
            summary = json.loads((run / "summary.json").read_text())
            row |= {"iterations_done": summary["iterations_done"],
                    "diverged_at": summary["diverged_at"], "d": summary["d"]}
            row |= summary["stationary"]
            # U, the stationary mean loss of the schema, is the train loss for a network
            row["U"] = summary["stationary"].get("train_loss")
        if (run / "metrics.parquet").is_file():
            metrics = pd.read_parquet(run / "metrics.parquet")
            logs.append(metrics.assign(**hyper, **optimizer)[
                list(HYPER_COLUMNS) + list(OPTIMIZER_COLUMNS) + list(metrics.columns)])
        rows.append(row)
    table = pd.DataFrame(rows)
    metrics = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(
        columns=list(HYPER_COLUMNS))
    return metrics, table



def describe_status(out) -> str:
    """The sweep's runs counted by state, and the names of those running."""
    states = status(out)
    lines = [f"{out}: {sum(map(len, states.values()))} configurations"]
    lines += [f"  {state:<12}{len(names):>5}" for state, names in states.items()]
    lines += [f"  running: {name}" for name in states["running"]]
    lines += [f"  damaged: {name} (runs/{name}/summary.json cannot be read; delete it to "
              "train the run again)" for name in states["damaged"]]
    return "\n".join(lines)
