"""Sweeps: the paper's grids as presets, custom grids, and a resumable local runner.

A sweep is one protocol on one architecture and dataset over a grid of (rate, second) values,
rate = eta (fixed LR) or eta_eff (fixed ELR, fixed sphere), second = lambda or r, times seeds.
The paper's grids are appendix F's Table 3 (SPEC): for example ResNet-18 k=4 on CIFAR-10 has
19 LRs 10^(-3+n/6) x 5 WDs 10^(-3+n/2) = 95 fixed-LR runs.

A sweep directory holds ``thermosgd.json`` (kind "sweep": the definition and ``scale``),
``runs/<name>/`` (one run directory per configuration, the trainer's format) and
``locks/<name>.lock``. A configuration belongs to one worker at a time: the worker holds its
lock (an OS file lock, released when the process dies, so a killed worker leaves no stale
lock). Running a sweep again skips finished and diverged runs and resumes interrupted ones from
their checkpoints; every file is written atomically. Executors: ``run_local`` here, Ray in
``thermosgd.sweep_ray``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from thermosgd import _io

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before Python 3.11
    import tomli as tomllib

__all__ = ["KIND", "PRESETS", "Sweep", "collect", "gather", "load_sweep", "run_local", "status"]

KIND = "sweep"  # manifest kind of a sweep directory
STATES = ("finished", "diverged", "running", "interrupted", "pending")
_LOCK_WAIT = 2.0  # seconds a worker waits for a configuration's lock (status holds it briefly)


def _log_grid(start: float, step: float, count: int) -> tuple[float, ...]:
    """10^(start + n step), n = 0..count-1 (Table 3's grids)."""
    return tuple(float(10 ** (start + n * step)) for n in range(count))


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """One protocol, architecture and dataset over rates x seconds x seeds."""

    name: str  # preset name or the TOML file's stem
    protocol: str  # "fixed-lr", "fixed-elr" or "fixed-sphere"
    model: str  # "convnet" or "resnet18"
    width: int  # k, width multiplier
    dataset: str  # "cifar10", "cifar100" or "digits"
    iterations: int  # SGD steps per run
    queue_size: int  # N, weight snapshots for the entropy
    rates: tuple[float, ...]  # eta (fixed LR) or eta_eff (fixed ELR, fixed sphere)
    seconds: tuple[float, ...]  # lambda (fixed LR, fixed ELR) or r (fixed sphere)
    seeds: tuple[int, ...] = (0,)  # mini-batch streams
    train: dict = field(default_factory=dict)  # any other TrainConfig field, e.g. log_every
    description: str = ""

    def __post_init__(self):
        for axis in ("rates", "seconds", "seeds"):
            values = tuple(getattr(self, axis))
            object.__setattr__(self, axis, values)
            if not values:
                raise ValueError(f"sweep {self.name!r}: the {axis} grid is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"sweep {self.name!r}: the {axis} grid repeats a value")
        from thermosgd.nn.trainer import TrainConfig

        allowed = {f.name for f in fields(TrainConfig)} - set(_OWN_FIELDS)
        unknown = set(self.train) - allowed
        if unknown:
            raise ValueError(f"sweep {self.name!r}: unknown training option(s) "
                             f"{', '.join(sorted(unknown))}; choose from {', '.join(sorted(allowed))}")
        for rate in self.rates:  # every grid value goes through TrainConfig's checks
            for second in self.seconds:
                self._config(rate, second, self.seeds[0], data=None, scale=1.0, device="cpu",
                             check_data=False)

    @property
    def size(self) -> int:
        return len(self.rates) * len(self.seconds) * len(self.seeds)

    @property
    def second_name(self) -> str:
        return "radius" if self.protocol == "fixed-sphere" else "weight_decay"

    def configs(self, *, data: str | None = None, scale: float = 1.0, device: str = "auto"):
        """The grid's TrainConfigs, rates outermost. ``scale`` multiplies the run length: the
        iterations, the linear log spacing and the snapshot spacing (the shape of the log
        schedule and the queue are kept), for trial runs."""
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"--scale must be positive, got {scale}")
        return [self._config(r, s, seed, data=data, scale=scale, device=device)
                for r in self.rates for s in self.seconds for seed in self.seeds]

    def _config(self, rate, second, seed, *, data, scale, device, check_data=True):
        from thermosgd.nn.trainer import TrainConfig

        base = TrainConfig(protocol="fixed-lr", learning_rate=1.0, weight_decay=1.0)
        opts = dict(self.train)

        def scaled(name, low):
            return max(low, round(opts.get(name, getattr(base, name)) * scale))

        opts.update(iterations=max(1, round(self.iterations * scale)),
                    log_every=scaled("log_every", 1), queue_every=scaled("queue_every", 1),
                    log_linear_until=scaled("log_linear_until", 0))
        if self.dataset != "digits" and not check_data:
            data = data or "unchecked"  # grid checks only; the real path comes at run time
        second_kw = {self.second_name: float(second)}
        try:
            return TrainConfig(protocol=self.protocol, model=self.model, width=self.width,
                               dataset=self.dataset, data=data, queue_size=self.queue_size,
                               learning_rate=float(rate), seed=int(seed), device=device,
                               **second_kw, **opts)
        except ValueError as err:
            raise ValueError(f"sweep {self.name!r}, grid point ({rate:g}, {second:g}): {err}") \
                from None

    def to_dict(self) -> dict:
        return asdict(self)


_OWN_FIELDS = ("protocol", "model", "width", "dataset", "data", "iterations", "queue_size",
               "learning_rate", "weight_decay", "radius", "seed", "device")


def _presets() -> dict[str, Sweep]:
    """Appendix F, Table 3: four setups x three protocols; appendix H; small CPU grids."""
    elr = {"resnet18": _log_grid(-4, 1 / 6, 14), "convnet": _log_grid(-4, 1 / 6, 13)}
    lr = {"resnet18": _log_grid(-3, 1 / 6, 19), "convnet": _log_grid(-3, 1 / 6, 13)}
    radii = tuple(2.0 ** (-2 + n) for n in range(5))
    setups = {  # name: model, k, dataset, iterations, N, WD grid
        "resnet18-cifar10": ("resnet18", 4, "cifar10", 10**6, 1000, _log_grid(-3, 1 / 2, 5)),
        "resnet18-cifar100": ("resnet18", 4, "cifar100", 2 * 10**6, 1000,
                              _log_grid(-3, 1 / 2, 5)),
        "convnet-cifar10": ("convnet", 8, "cifar10", 2 * 10**6, 4000, _log_grid(-3, 1 / 4, 9)),
        "convnet-cifar100": ("convnet", 16, "cifar100", 2 * 10**6, 4000,
                             _log_grid(-2, 1 / 4, 9)),
    }
    presets = {}
    for setup, (model, k, dataset, iterations, n, wds) in setups.items():
        common = {"model": model, "width": k, "dataset": dataset, "iterations": iterations,
                  "queue_size": n}
        for protocol, rates, seconds in (("fixed-lr", lr[model], wds),
                                         ("fixed-elr", elr[model], wds),
                                         ("fixed-sphere", elr[model], radii)):
            name = f"{setup}-{protocol}"
            presets[name] = Sweep(name=name, protocol=protocol, rates=rates, seconds=seconds,
                                  description=f"paper, appendix F (Table 3): {setup}, {protocol}",
                                  **common)
    presets["resnet18x32-cifar10-overparam"] = Sweep(
        name="resnet18x32-cifar10-overparam", protocol="fixed-elr", model="resnet18", width=32,
        dataset="cifar10", iterations=10**6, queue_size=500, rates=_log_grid(-4, 1 / 2, 5),
        seconds=(1e-3,), description="paper, appendix H (Figure 13): k=32, lambda=1e-3; the "
        "paper says 'several ELRs' without values, these five are ours")
    # CPU scale, not from the paper. On clean digits the ConvNet interpolates (loss -> 0, the
    # radius shrinks: appendix H's convergence regime), and from ||w|| = 1 fixed ELR diverges
    # within ~10 steps for eta_eff >= 0.02 at k = 8. With k = 4 and 30 % of the train labels
    # redrawn the network cannot fit the set, and all three protocols become stationary.
    cpu = {"model": "convnet", "width": 4, "dataset": "digits", "iterations": 6000,
           "queue_size": 200, "train": {"log_every": 200, "log_linear_until": 2000,
                                        "log_points": 60, "measure_passes": 2,
                                        "label_noise": 0.3}}
    elr_digits = (0.004, 0.006, 0.009, 0.0135, 0.02)
    for protocol, rates, seconds in (("fixed-lr", (0.2, 0.4, 0.8, 1.6, 3.2), (0.004, 0.008, 0.016)),
                                     ("fixed-elr", elr_digits, (0.003, 0.01, 0.03)),
                                     ("fixed-sphere", elr_digits, (1.0, 2.0, 4.0))):
        name = f"convnet-digits-{protocol}"
        presets[name] = Sweep(name=name, protocol=protocol, rates=rates, seconds=seconds,
                              description="CPU scale, not from the paper: scikit-learn's digits "
                              "with 30 % label noise, ConvNet k=4, 5 x 3 grid, 6000 steps", **cpu)
    return presets


PRESETS = _presets()


def load_sweep(spec: str) -> Sweep:
    """A preset's name or a TOML file (see README): name, protocol, model, width, dataset,
    iterations, queue_size, learning_rates, weight_decays or radii, seeds, [train]."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix != ".toml":
        raise ValueError(f"unknown preset {spec!r}; `thermosgd sweep list` shows them, or give a "
                         ".toml file")
    if not path.is_file():
        raise ValueError(f"sweep file {path} does not exist")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep file {path} is not valid TOML: {err}") from None
    return sweep_from_dict(table, default_name=path.stem, where=str(path))


def sweep_from_dict(table: dict, *, default_name: str = "custom", where: str = "grid") -> Sweep:
    from thermosgd.nn.trainer import PAPER_WIDTH

    table = dict(table)
    protocol = table.pop("protocol", None)
    if protocol is None:
        raise ValueError(f"{where}: give protocol = \"fixed-lr\", \"fixed-elr\" or \"fixed-sphere\"")
    second_key = "radii" if protocol == "fixed-sphere" else "weight_decays"
    missing = [k for k in ("learning_rates", second_key) if k not in table]
    if missing:
        raise ValueError(f"{where}: the {protocol} grid needs {' and '.join(missing)}")
    model = table.pop("model", "convnet")
    known = {"name", "width", "dataset", "iterations", "queue_size", "seeds", "train",
             "description", "learning_rates", second_key}
    extra = set(table) - known
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; "
                         f"allowed: {', '.join(sorted(known | {'protocol', 'model'}))}")
    return Sweep(name=table.get("name", default_name), protocol=protocol, model=model,
                 width=table.get("width", PAPER_WIDTH.get(model, 8)),
                 dataset=table.get("dataset", "digits"),
                 iterations=table.get("iterations", 10_000),
                 queue_size=table.get("queue_size", 1000),
                 rates=_axis(table["learning_rates"], "learning_rates", where),
                 seconds=_axis(table[second_key], second_key, where),
                 seeds=tuple(table.get("seeds", (0,))), train=table.get("train", {}),
                 description=table.get("description", f"custom grid from {where}"))


def _axis(value, key, where) -> tuple[float, ...]:
    """A list of numbers, or {from, to, num}: num log-spaced values from..to."""
    if isinstance(value, dict):
        try:
            return tuple(float(v) for v in np.geomspace(value["from"], value["to"], value["num"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: {key} as a table needs from, to (> 0) and num") from None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{where}: {key} must be a list of numbers or {{from, to, num}}")
    return tuple(float(v) for v in value)


# --- the sweep directory ---------------------------------------------------------------------

def run_name(config) -> str:
    """A run's directory name: protocol, rate, lambda or r, seed."""
    second = (f"r{config.radius:g}" if config.protocol == "fixed-sphere"
              else f"wd{config.weight_decay:g}")
    return f"{config.protocol}_lr{config.learning_rate:g}_{second}_seed{config.seed}"


def _definition(sweep: Sweep, scale: float) -> dict:
    return {"sweep": sweep.to_dict(), "scale": scale}


def open_sweep_dir(out: Path, sweep: Sweep, scale: float) -> None:
    """Refuse a directory that is not this sweep's (before anything is written)."""
    out = Path(out)
    _io.check_output_dir(out, KIND)
    manifest = out / _io.MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text())["config"]
        if found != json.loads(json.dumps(_definition(sweep, scale))):
            name, fscale = found["sweep"]["name"], found["scale"]
            raise ValueError(f"{out} holds the sweep {name!r} (scale {fscale:g}), not "
                             f"{sweep.name!r} (scale {scale:g}) or a different grid; choose "
                             "another --out")


def claim_sweep_dir(out: Path, sweep: Sweep, scale: float) -> None:
    if not (Path(out) / _io.MANIFEST).is_file():
        _io.claim_output_dir(out, KIND, _definition(sweep, scale))


def read_sweep_dir(out: Path) -> tuple[Sweep, float]:
    manifest = Path(out) / _io.MANIFEST
    try:
        record = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        record = {}
    if record.get("kind") != KIND:
        raise ValueError(f"{out} is not a sweep directory (no thermosgd.json of kind 'sweep'); "
                         "give the --out of `thermosgd sweep run`")
    definition = record["config"]["sweep"]
    return Sweep(**definition), float(record["config"]["scale"])


def _lock(out: Path, name: str) -> FileLock:
    (Path(out) / "locks").mkdir(parents=True, exist_ok=True)
    return FileLock(Path(out) / "locks" / f"{name}.lock")


def run_state(out: Path, name: str) -> str:
    """finished, diverged, running (locked by a live worker), interrupted (a checkpoint, no
    worker) or pending."""
    run = Path(out) / "runs" / name
    summary = run / "summary.json"
    if summary.is_file():
        found = json.loads(summary.read_text()).get("status")
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


def run_group(configs, outs, *, sweep_dir: Path, dataset=None, max_batch: int | None = None,
              progress: bool = True, checkpoint_every: float = 600.0,
              mechanism: str = "auto") -> dict[str, dict]:
    """Train the configurations whose locks this worker gets; returns {run name: {"status",
    "resumed_from"}} (status "running" for those another worker holds). Finished runs are read
    back, interrupted ones resume from their checkpoints (``thermosgd.nn.batched``)."""
    from thermosgd.nn.batched import checkpoint_iteration, train_batched
    from thermosgd.nn.trainer import train

    held, mine = [], []
    results = {}
    try:
        for config, out in zip(configs, outs):
            lock = _lock(sweep_dir, out.name)
            try:
                lock.acquire(timeout=_LOCK_WAIT)
            except Timeout:
                results[out.name] = {"status": "running", "resumed_from": None}
                continue
            held.append(lock)
            mine.append((config, out))
        if len(mine) == 1:  # the single-run trainer: same trajectory, less per-step overhead
            config, out = mine[0]
            starts = [checkpoint_iteration(out)]
            done = [train(config, out, dataset=dataset, progress=progress,
                          checkpoint_every=checkpoint_every)]
        elif mine:
            starts = [checkpoint_iteration(out) for _, out in mine]
            done = train_batched([c for c, _ in mine], [o for _, o in mine], dataset=dataset,
                                 progress=progress, checkpoint_every=checkpoint_every,
                                 max_batch=max_batch, mechanism=mechanism)
        if mine:
            for (_, out), start, result in zip(mine, starts, done):
                results[out.name] = {"status": result.summary["status"], "resumed_from": start}
    finally:
        for lock in held:
            lock.release()
    return results


def plan(sweep: Sweep, out: Path, *, data: str | None, scale: float, device: str,
         max_batch: int | None) -> list[list[int]]:
    """Check everything, then the groups of configuration indices still to train."""
    configs = sweep.configs(data=data, scale=scale, device=device)
    open_sweep_dir(out, sweep, scale)
    from thermosgd.nn.trainer import prepare

    for config in configs:
        prepare(config, Path(out) / "runs" / run_name(config))
    todo = [i for i, c in enumerate(configs)
            if run_state(out, run_name(c)) not in ("finished", "diverged")]
    from thermosgd.nn.trainer import resolve_device

    on_gpu = resolve_device(device).type != "cpu"
    size = max_batch or default_batch(configs[0], on_gpu=on_gpu)
    return [todo[k:k + size] for k in range(0, len(todo), size)]


def default_batch(config, *, on_gpu: bool) -> int:
    """CPU: one configuration at a time (batching gains nothing there, benchmarks/RESULTS.md).
    GPU: as many as fit 8 GiB of float32 entropy queues (N d 4 bytes each)."""
    if not on_gpu:
        return 1
    d_estimate = {"convnet": 24408 * (config.width / 8) ** 2,
                  "resnet18": 43692 * (config.width / 4) ** 2}[config.model]
    return max(1, int(8 * 2**30 // (config.queue_size * d_estimate * 4)))


def run_local(sweep: Sweep, out: str | Path, *, data: str | None = None, dataset=None,
              scale: float = 1.0, device: str = "auto", max_batch: int | None = None,
              progress: bool = True, checkpoint_every: float = 600.0,
              mechanism: str = "auto") -> dict[str, dict]:
    """Train every configuration of ``sweep`` not yet done, group after group, on this machine
    (``dataset``: already loaded data, else read from ``data``). Returns {run name: result}."""
    out = Path(out)
    groups = plan(sweep, out, data=data, scale=scale, device=device, max_batch=max_batch)
    configs = sweep.configs(data=data, scale=scale, device=device)
    from thermosgd.nn.trainer import load_data, resolve_device

    if dataset is None and groups:
        dataset = load_data(configs[0], resolve_device(device))
    claim_sweep_dir(out, sweep, scale)
    results = {}
    with tqdm(total=sum(map(len, groups)), unit="run", desc=sweep.name, disable=not progress,
              dynamic_ncols=True) as bar:  # the sweep's bar; each run shows its own below
        for group in groups:
            results |= run_group([configs[i] for i in group],
                                 [out / "runs" / run_name(configs[i]) for i in group],
                                 sweep_dir=out, dataset=dataset, max_batch=max_batch,
                                 progress=progress, checkpoint_every=checkpoint_every,
                                 mechanism=mechanism)
            bar.update(len(group))
    return results


# --- collect -----------------------------------------------------------------------------------

# the fixed sphere's r is "sphere_radius": "radius" is the measured ||w|| (r*) of every protocol
HYPER_COLUMNS = ("run", "protocol", "learning_rate", "weight_decay", "sphere_radius", "seed")


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
    """:func:`collect`'s two tables, read from the run directories, nothing written."""
    out = Path(out)
    sweep, scale = read_sweep_dir(out)
    logs, rows = [], []
    for config in sweep.configs(scale=scale, device="cpu", data=_any_data(sweep)):
        name = run_name(config)
        hyper = {"run": name, "protocol": config.protocol,
                 "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
                 "sphere_radius": config.radius, "seed": config.seed}
        state = run_state(out, name)
        row = hyper | {"status": state}
        run = out / "runs" / name
        if state in ("finished", "diverged"):
            summary = json.loads((run / "summary.json").read_text())
            row |= {"iterations_done": summary["iterations_done"],
                    "diverged_at": summary["diverged_at"], "d": summary["d"]}
            row |= summary["stationary"]
        if (run / "metrics.parquet").is_file():
            metrics = pd.read_parquet(run / "metrics.parquet")
            logs.append(metrics.assign(**{k: hyper[k] for k in HYPER_COLUMNS})[
                list(HYPER_COLUMNS) + list(metrics.columns)])
        rows.append(row)
    table = pd.DataFrame(rows)
    metrics = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(
        columns=list(HYPER_COLUMNS))
    return metrics, table

