"""A network run's directory: what every engine writes, and how a reader finds its state.

``thermosgd.json`` (kind "train"), ``config.json`` (the configuration, d, the data's shape, the
log schedule, provenance), ``metrics.parquet`` (one row per log point, ``schema.METRIC_COLUMNS``
first), ``summary.json`` (status, stationary means over the last logs, timings) and
``checkpoint.pt`` (everything a resumed run needs to continue bit for bit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.results import io
from thermosgd.results.schema import METRIC_COLUMNS

__all__ = ["KIND", "TrainResult", "checkpoint_iteration", "config_record", "finish",
           "read_finished", "save_checkpoint", "stationary_summary", "write_metrics"]

KIND = "train"  # manifest kind of a run directory


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
    """The content of a run directory's config.json."""
    return {"config": config.to_dict(), "d": d, "device": str(device),
            "num_train": data.num_train, "num_test": data.num_test,
            "image_size": data.image_size, "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "log_iterations": np.asarray(schedule).tolist()} | io.provenance()


def write_metrics(out: Path, rows: list[dict]) -> None:
    table = pd.DataFrame(rows)
    io.atomic_write(out / "metrics.parquet", lambda tmp: table.to_parquet(tmp, index=False))


def save_checkpoint(path: Path, *, config, iteration, w, buffers, generator_state, queue, rows,
                    seconds, optimizer_state: dict | None = None) -> None:
    """Everything a resumed run needs to continue bit for bit; ``queue`` (N, d) is cut to the
    snapshots taken so far; ``optimizer_state``: momentum buffers or AdamW's moments and step
    count (None for plain SGD, which has none: older checkpoints lack the key)."""
    import torch

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
    io.atomic_write(path, lambda tmp: torch.save(state, tmp))


def checkpoint_iteration(out: Path | None) -> int:
    """The iteration a run directory's checkpoint holds (0: none)."""
    if out is None or not (out / "checkpoint.pt").is_file():
        return 0
    import torch

    return int(torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
               ["iteration"])


def read_finished(out: Path | None) -> TrainResult | None:
    """A finished or diverged run read back from its directory; None for any other state."""
    if out is None or not (out / "summary.json").is_file():
        return None
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("status") not in ("finished", "diverged"):
        return None
    return TrainResult(pd.read_parquet(out / "metrics.parquet"), summary, out)


def finish(config, out: Path | None, rows: list[dict], *, status: str,
           diverged_at: int | None, iteration: int, d: int, seconds: dict) -> TrainResult:
    """Stationary summary, and with ``out`` the final metrics.parquet and summary.json."""
    metrics = pd.DataFrame(rows)
    if metrics.empty:
        metrics = pd.DataFrame(columns=list(METRIC_COLUMNS), dtype=float)
    train_s, measure_s = seconds["train"], seconds["measure"]
    summary = {
        "status": status,
        "diverged_at": diverged_at,
        "iterations_done": iteration,
        "d": d,
        "stationary_logs": config.stationary_logs,
        "stationary": stationary_summary(metrics, config.stationary_logs),
        "train_seconds": train_s,
        "measure_seconds": measure_s,
        "measure_fraction": measure_s / train_s if train_s > 0 else None,
        "config": config.to_dict(),
    } | io.provenance()
    if out is not None:
        write_metrics(out, rows)
        io.write_json(out / "summary.json", summary)
    return TrainResult(metrics, summary, out)
