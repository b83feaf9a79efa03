"""Where a monitor's rows go at each flush: its run directory, TensorBoard, Weights & Biases.

A sink has ``write(rows)`` (a DataFrame of one flush, ``schema.MONITOR_COLUMNS``) and
``close(summary)``. Scalars go to TensorBoard and W&B as ``thermosgd/<column>/<group>``, with the
monitor's step as their step (W&B: its own step metric ``thermosgd/step``, so the user's own
``wandb.log`` steps are left alone).

The scalar sinks log the whole layers by default (rows of level "layer", "other" and "all"): a
ResNet-18 has 4800 per-channel groups but 21 weights, and a dashboard of 38k curves per log is
neither readable nor cheap to write; every group stays in the run directory.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pandas as pd

from thermosgd.results import monitordir

__all__ = ["SCALARS", "SCALAR_ROWS", "RunDirSink", "TensorBoardSink", "WandbSink",
           "check_scalars", "regimes_by_level"]

# what the scalar sinks log by default
SCALARS = ("norm", "angular_update", "radius_theory_corrected", "angular_update_theory",
           "temperature", "compressibility", "radial_share", "distance")
# which rows they log: "layers" (every level but "group": whole weights, "other", "all") or
# "groups" (every row, each channel of a per-channel layer too); or a list of row names
SCALAR_ROWS = ("layers", "groups")


def check_scalars(scalars):
    """``scalars`` as the sinks take it: "layers", "groups" or a tuple of row names. Raises
    ValueError on anything else."""
    if isinstance(scalars, str):
        if scalars not in SCALAR_ROWS:
            raise ValueError(f"scalars must be 'layers' (whole weights, 'other' and 'all'), "
                             f"'groups' (every group, each channel too) or a list of group or "
                             f"layer names; got {scalars!r}")
        return scalars
    names = tuple(scalars) if isinstance(scalars, (list, tuple, set, frozenset)) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"scalars must be 'layers', 'groups' or a non-empty list of group or "
                         f"layer names (str), e.g. ['all', 'conv1.weight']; got {scalars!r}")
    return names


def _chosen(rows: pd.DataFrame, scalars) -> pd.DataFrame:
    if scalars == "groups":
        return rows
    if scalars == "layers":
        return rows[rows["level"] != "group"]
    return rows[rows["group"].isin(scalars)]


def _scalars(rows: pd.DataFrame, columns, scalars):
    """(step, {tag: value}) per log step, finite values only. Vectorized over rows and
    columns: a flush of a ResNet's per-channel groups holds 10^5-10^6 values."""
    rows = _chosen(rows, scalars)
    columns = [c for c in columns if c in rows]
    if rows.empty or not columns:
        return
    values = rows[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)  # (N, C)
    names = rows["group"].to_numpy(str)  # (N,)
    tags = np.stack([np.char.add(f"thermosgd/{c}/", names) for c in columns], 1)  # (N, C)
    steps = rows["step"].to_numpy(np.int64)
    finite = np.isfinite(values)
    for step in np.unique(steps):  # sorted
        at = (steps == step)[:, None] & finite
        yield int(step), dict(zip(tags[at].tolist(), values[at].tolist()))


class _ScalarSink:
    def _rows(self, rows: pd.DataFrame):
        if isinstance(self.scalars, tuple) and not self._checked and len(rows):
            self._checked = True
            known = set(rows["group"].astype(str))
            missing = [n for n in self.scalars if n not in known]
            if missing:
                layers = sorted(set(rows.loc[rows["level"] == "layer", "group"]))[:5]
                warnings.warn(f"thermosgd.Monitor: scalars= names rows that do not exist: "
                              f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''};"
                              f" rows are named as the layers ({', '.join(layers)}, ...), their "
                              "groups (a channel: 'conv1.weight[3]'), 'other' and 'all'",
                              UserWarning, stacklevel=4)
        return _scalars(rows, self.columns, self.scalars)


class TensorBoardSink(_ScalarSink):
    """Scalars into a ``torch.utils.tensorboard.SummaryWriter`` (or a new one at a log dir).

    ``scalars``: which rows, "layers" (default), "groups" or a list of names (module docstring).
    """

    def __init__(self, writer, *, columns=SCALARS, scalars="layers"):
        self.scalars, self._checked = check_scalars(scalars), False
        if isinstance(writer, (str, bytes)) or hasattr(writer, "__fspath__"):
            from torch.utils.tensorboard import SummaryWriter  # needs `pip install tensorboard`

            writer, self._own = SummaryWriter(log_dir=str(writer)), True
        else:
            self._own = False
        self.writer, self.columns = writer, tuple(columns)

    def write(self, rows: pd.DataFrame) -> None:
        # torch's writer: one event per log step holding every tag (an add_scalar per tag
        # builds and frames an event each, 7x the time for thousands of channel tags); any
        # other writer (tensorboardX, a stand-in) through its public add_scalar
        events = getattr(self.writer, "_get_file_writer", None)
        for step, values in self._rows(rows):
            if events is not None:
                from tensorboard.compat.proto.summary_pb2 import Summary

                events().add_summary(Summary(value=[
                    Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()]),
                    step)
                continue
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self, summary: dict) -> None:
        if self._own:
            self.writer.close()


class WandbSink(_ScalarSink):
    """Scalars into a W&B run (``wandb.init(...)``'s answer; None: the active ``wandb.run``).

    ``scalars``: which rows, "layers" (default), "groups" or a list of names (module docstring).
    """

    def __init__(self, run=None, *, columns=SCALARS, scalars="layers"):
        self.scalars, self._checked = check_scalars(scalars), False
        if run is None:
            import wandb

            run = wandb.run
            if run is None:
                raise ValueError("no active W&B run: call wandb.init() first or pass run=")
        self.run, self.columns = run, tuple(columns)
        run.define_metric("thermosgd/step")
        run.define_metric("thermosgd/*", step_metric="thermosgd/step")

    def write(self, rows: pd.DataFrame) -> None:
        for step, values in self._rows(rows):
            self.run.log(values | {"thermosgd/step": step})

    def close(self, summary: dict) -> None:
        pass


def regimes_by_level(last: list[dict]) -> dict:
    """{level: {regime: rows}} over a summary's last rows ("" for a row without a regime)."""
    out: dict = {}
    for row in last:
        regime = row.get("regime")
        counts = out.setdefault(row.get("level", ""), Counter())
        counts[regime if isinstance(regime, str) else ""] += 1
    return {level: dict(counts) for level, counts in out.items()}


class RunDirSink:
    """The run directory in the result schema (claimed when the monitor is built)."""

    def __init__(self, out):
        self.out = out
        self.parts = 0

    def write(self, rows: pd.DataFrame) -> None:
        monitordir.write_part(self.out, self.parts, rows)
        self.parts += 1

    def close(self, summary: dict) -> None:
        # the report counts whole weights (level "layer"): the summary counts per level too, so
        # that its numbers and the report's are the same numbers
        if "regimes_by_level" not in summary:
            summary = summary | {"regimes_by_level": regimes_by_level(summary.get("last", []))}
        monitordir.write_summary(self.out, summary)
