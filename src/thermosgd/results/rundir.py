"""A network run's directory: what every engine writes, and how a reader finds its state.

``thermosgd.json`` (kind "train"), ``config.json`` (the configuration, d, the data's shape, the
log schedule, provenance), ``metrics.parquet`` (one row per log point, ``schema.METRIC_COLUMNS``
first), ``summary.json`` (status, stationary means over the last logs, timings) and
``checkpoint.pt`` (everything a resumed run needs to continue bit for bit) with
``checkpoint.prev.pt``, the one before it: a new checkpoint replaces the old only once it is
complete and loads back, and a resumed run falls back to the previous one when the newest is
damaged. A checkpoint carries a CRC-32 of its contents (every tensor's bytes, then the rest), so
that a changed byte inside tensor data, which torch's reader does not check, is found as well.

Every file carries the configuration (config.json, the manifest, summary.json, the
checkpoint): a run is resumed or read back only when all of them agree with the options given.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.results import io
from thermosgd.results.schema import ARCHITECTURES, METRIC_COLUMNS

__all__ = ["CHECKPOINT", "KIND", "PREVIOUS", "TrainResult", "checkpoint_iteration",
           "config_record", "differences", "finish", "load_checkpoint", "problem",
           "read_finished", "recorded_configs", "save_checkpoint", "stationary_summary",
           "write_metrics"]

KIND = "train"  # manifest kind of a run directory
CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
RUNTIME_FIELDS = ("data", "device")  # may change between a run and its resumption
_log = logging.getLogger("thermosgd")


@dataclass
class TrainResult:
    metrics: pd.DataFrame  # one row per log point
    summary: dict  # status, stationary means, timings
    out: Path | None = None
    extra: dict = field(default_factory=dict)


def stationary_summary(metrics: pd.DataFrame, logs: int = 30) -> dict:
    """Stationary values: the mean of every numeric column over the last ``logs`` log points,
    ignoring missing entries (entropy before the queue is full)."""
    tail = metrics.tail(logs).drop(columns=["iteration"], errors="ignore")
    means = tail.mean(numeric_only=True, skipna=True)
    return {name: (None if not np.isfinite(v) else float(v)) for name, v in means.items()}


def config_record(config, data, d: int, device, schedule) -> dict:
    """The content of a run directory's config.json; ``architecture`` names the network's
    version (``schema.ARCHITECTURES``)."""
    return {"config": config.to_dict(), "architecture": ARCHITECTURES[config.model], "d": d,
            "device": str(device),
            "num_train": data.num_train, "num_test": data.num_test,
            "image_size": data.image_size, "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "log_iterations": np.asarray(schedule).tolist()} | io.provenance()


def metrics_table(rows: list[dict]) -> pd.DataFrame:
    """The logged rows as a table; none (a run that ended before its first log) gives the
    schema's columns, typed, with no row."""
    if rows:
        return pd.DataFrame(rows)
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "iteration" else "float64")
                         for c in METRIC_COLUMNS})


def write_metrics(out: Path, rows: list[dict]) -> None:
    table = metrics_table(rows)
    io.atomic_write(out / "metrics.parquet", lambda tmp: table.to_parquet(tmp, index=False))


def _plain(record: dict) -> dict:
    return json.loads(json.dumps(record, default=io._jsonable))  # tuples -> lists, as on disk


def differences(recorded: dict, config) -> list[str]:
    """What differs between a recorded configuration and ``config`` (a dataclass with
    ``to_dict``), "field old -> new"; fields added after the run was written read as their
    defaults, and the data path and device may change."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)
                if f.default is not dataclasses.MISSING}
    now, before = _plain(config.to_dict()), _plain(defaults) | _plain(recorded)
    return [f"{k} {before.get(k)!r} -> {now[k]!r}" for k in now
            if k not in RUNTIME_FIELDS and before.get(k) != now[k]]


def _read_json(path: Path, what: str) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is damaged ({str(err).splitlines()[0]}); {what}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is damaged (not a JSON object); {what}")
    return record


def recorded_configs(out: Path) -> list[tuple[Path, dict]]:
    """Every configuration the run directory ``out`` records, with the file it is in:
    config.json, the manifest (the configuration it was claimed for) and summary.json. Raises
    ValueError naming a damaged file."""
    out = Path(out)
    fixes = {"config.json": "delete it: it is rebuilt from the run's other records",
             io.MANIFEST: f"restore it, or move {out} aside and train again",
             "summary.json": f"delete it: the run is read back from its last checkpoint, or "
                             "trained again"}
    found = []
    for name, fix in fixes.items():
        path = out / name
        if not path.is_file():
            continue
        record = _read_json(path, fix)
        config = record.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{path} is damaged (no configuration in it); {fix}")
        found.append((path, config))
    return found


def _zip_problem(path: Path) -> str | None:
    """Why a checkpoint is damaged, from its zip directory alone (no tensor is read): empty,
    truncated (the directory sits at the end) or not a torch file."""
    try:
        if path.stat().st_size == 0:
            return "empty"
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("data.pkl") for n in archive.namelist()):
                return "not a torch checkpoint"
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as err:
        return f"truncated or not a torch checkpoint ({str(err).splitlines()[0]})"
    return None


def _digest(state: dict) -> int:
    """CRC-32 of a checkpoint's contents but its ``digest``: every tensor's bytes in a fixed
    order, then the JSON of the rest (keys, dtypes, shapes, numbers: exact as JSON writes
    floats)."""
    import torch

    crc, layout = 0, []

    def walk(path, value):
        nonlocal crc
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            crc = zlib.crc32(flat.view(torch.uint8).numpy(), crc)
            layout.append([path, str(value.dtype), list(value.shape)])
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(f"{path}/{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{path}/{i}", item)
        else:
            layout.append([path, value])

    walk("", {k: v for k, v in state.items() if k != "digest"})
    return zlib.crc32(json.dumps(layout, default=repr).encode(), crc)


def _load(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch reports damage as OSError, EOFError, UnpicklingError...
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(why.split(". ")[0][:160]) from None
    if not isinstance(state, dict) or not {"iteration", "w", "rows", "config"} <= set(state):
        raise ValueError("not a thermosgd checkpoint")
    if "digest" in state and _digest(state) != state["digest"]:  # older ones carry none
        raise ValueError("its contents do not match their CRC-32: a byte changed on disk")
    return state


def _damaged_checkpoint(out: Path, why: str) -> ValueError:
    return ValueError(f"{out / CHECKPOINT} is damaged ({why}) and there is no good "
                      f"{PREVIOUS}; delete {out / CHECKPOINT} to train the run from the start")


def load_checkpoint(out: Path | None, config=None) -> dict | None:
    """The newest good checkpoint of a run directory (None: none). A damaged newest one falls
    back to the previous one, with a warning; both damaged raises ValueError naming the file.
    ``config``: refuse (ValueError) a checkpoint of another configuration."""
    if out is None:
        return None
    out = Path(out)
    newest, previous = out / CHECKPOINT, out / PREVIOUS
    if not newest.is_file() and not previous.is_file():
        return None
    why = "missing"
    try:
        if not newest.is_file():
            raise ValueError("missing")
        state = _load(newest)
    except ValueError as err:
        why = str(err)
        if not previous.is_file():
            raise _damaged_checkpoint(out, why) from None
        try:
            state = _load(previous)
        except ValueError:
            raise _damaged_checkpoint(out, why) from None
        _log.warning("thermosgd: %s is %s; resuming from the previous checkpoint %s "
                     "(iteration %d)", newest, "missing" if why == "missing" else
                     f"damaged ({why})", previous.name, state["iteration"])
    if config is not None:
        diff = differences(state["config"], config)
        if diff:
            raise ValueError(f"{out} holds a checkpoint of another configuration "
                             f"({', '.join(diff)}); use a new --out, or the original options "
                             "to resume it")
    return state


def problem(out: Path) -> str | None:
    """Why a run directory cannot be read or resumed as it is (None: it can), from its files'
    structure alone, cheap enough for every run of a sweep: a damaged config.json, manifest,
    summary.json, metrics.parquet of a finished run, or checkpoint (with no good previous
    one)."""
    out = Path(out)
    try:
        recorded = recorded_configs(out)
    except ValueError as err:
        return str(err)
    summary = next((r for p, r in recorded if p.name == "summary.json"), None)
    if summary is not None:
        record = _read_json(out / "summary.json", "")
        if record.get("status") in ("finished", "diverged"):
            try:
                import pyarrow.parquet as pq

                pq.read_metadata(out / "metrics.parquet")
            except Exception as err:  # pyarrow's errors share no base class but Exception
                return (f"{out / 'metrics.parquet'} is damaged or missing "
                        f"({str(err).splitlines()[0]}); delete summary.json to train the run "
                        "again")
            return None
    newest, previous = out / CHECKPOINT, out / PREVIOUS
    if newest.is_file() and (why := _zip_problem(newest)):
        if not previous.is_file() or _zip_problem(previous):
            return str(_damaged_checkpoint(out, why))
    return None


def save_checkpoint(path: Path, *, config, iteration, w, buffers, generator_state, queue, rows,
                    seconds, optimizer_state: dict | None = None) -> None:
    """Everything a resumed run needs to continue bit for bit; ``queue`` (N, d) is cut to the
    snapshots taken so far; ``optimizer_state``: momentum buffers or AdamW's moments and step
    count (None for plain SGD, which has none: older checkpoints lack the key). The new file is
    loaded back before it replaces the old one, and the old one is kept as
    ``checkpoint.prev.pt``: a damaged write never costs the run."""
    import torch

    path = Path(path)
    filled = min(iteration // config.queue_every, config.queue_size)
    state = {
        "iteration": iteration,
        "w": w.detach().cpu(),
        "buffers": {k: v.detach().cpu() for k, v in buffers.items()},
        "generator": generator_state,
        "queue": queue[:filled].cpu(),
        "rows": rows,
        "seconds": seconds,
        "config": config.to_dict(),
    }
    if optimizer_state is not None:
        state["optimizer"] = optimizer_state
    state["digest"] = _digest(state)

    def write(tmp):
        torch.save(state, tmp)
        try:
            back = _load(tmp)
        except ValueError as err:
            raise OSError(errno.EIO, f"the checkpoint written does not load back ({err})") from None
        if back["iteration"] != iteration:
            raise OSError(errno.EIO, "the checkpoint written does not load back")
        if path.is_file():
            os.replace(path, path.with_name(PREVIOUS))

    io.atomic_write(path, write)


def checkpoint_iteration(out: Path | None) -> int:
    """The iteration a run directory's checkpoint holds (0: none). Raises ValueError when it
    is damaged and no previous one is good."""
    state = load_checkpoint(out)
    return 0 if state is None else int(state["iteration"])


def read_finished(out: Path | None) -> TrainResult | None:
    """A finished or diverged run read back from its directory; None for any other state.
    Raises ValueError naming a damaged summary.json or metrics.parquet."""
    if out is None or not (out / "summary.json").is_file():
        return None
    summary = _read_json(out / "summary.json", "delete it to train the run again")
    if summary.get("status") not in ("finished", "diverged"):
        return None
    try:
        metrics = pd.read_parquet(out / "metrics.parquet")
    except Exception as err:  # pyarrow's errors share no base class but Exception
        raise ValueError(f"{out / 'metrics.parquet'} is damaged or missing "
                         f"({str(err).splitlines()[0]}); delete summary.json to train the run "
                         "again") from None
    return TrainResult(metrics, summary, out)


def finish(config, out: Path | None, rows: list[dict], *, status: str,
           diverged_at: int | None, iteration: int, d: int, seconds: dict,
           reason: str | None = None) -> TrainResult:
    """Stationary summary, and with ``out`` the final metrics.parquet and summary.json.
    ``reason``: why a run diverged, where it is not a non-finite value."""
    metrics = metrics_table(rows)
    train_s, measure_s = seconds["train"], seconds["measure"]
    summary = {
        "status": status,
        "architecture": ARCHITECTURES[config.model],
        "diverged_at": diverged_at,
        # a divergence is found at the end of a window: the run did not get past it
        "iterations_done": iteration if diverged_at is None else min(iteration, diverged_at),
        "d": d,
        "stationary_logs": config.stationary_logs,
        "stationary": stationary_summary(metrics, config.stationary_logs),
        "train_seconds": train_s,
        "measure_seconds": measure_s,
        "measure_fraction": measure_s / train_s if train_s > 0 else None,
        "config": config.to_dict(),
    } | ({"reason": reason} if reason else {}) | io.provenance()
    if out is not None:
        write_metrics(out, rows)
        io.write_json(out / "summary.json", summary)
    return TrainResult(metrics, summary, out)
