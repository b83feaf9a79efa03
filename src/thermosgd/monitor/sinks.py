"""Where a monitor's rows go at each flush: its run directory, TensorBoard, Weights & Biases.

A sink has ``write(rows)`` (a DataFrame of one flush, ``schema.MONITOR_COLUMNS``) and
``close(summary)``. Scalars go to TensorBoard and W&B as ``thermosgd/<column>/<group>``, with the
monitor's step as their step (W&B: its own step metric ``thermosgd/step``, so the user's own
``wandb.log`` steps are left alone).
"""

from __future__ import annotations

import math

import pandas as pd

from thermosgd.results import monitordir

__all__ = ["SCALARS", "RunDirSink", "TensorBoardSink", "WandbSink"]

# what the scalar sinks log by default
SCALARS = ("norm", "angular_update", "radius_theory_corrected", "angular_update_theory",
           "temperature", "compressibility", "radial_share", "distance")


class RunDirSink:
    """The run directory in the result schema (claimed when the monitor is built)."""

    def __init__(self, out):
        self.out = out
        self.parts = 0

    def write(self, rows: pd.DataFrame) -> None:
        monitordir.write_part(self.out, self.parts, rows)
        self.parts += 1

    def close(self, summary: dict) -> None:
        monitordir.write_summary(self.out, summary)


def _scalars(rows: pd.DataFrame, columns, groups):
    """(step, {tag: value}) per log step, finite values only."""
    if groups is not None:
        rows = rows[rows["group"].isin(groups)]
    for step, at in rows.groupby("step", sort=True):
        values = {}
        for _, row in at.iterrows():
            for column in columns:
                value = row.get(column)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    values[f"thermosgd/{column}/{row['group']}"] = float(value)
        yield int(step), values


class TensorBoardSink:
    """Scalars into a ``torch.utils.tensorboard.SummaryWriter`` (or a new one at a log dir).

    ``groups``: which groups to log (None: all; per-channel groups can be hundreds).
    """

    def __init__(self, writer, *, columns=SCALARS, groups=None):
        if isinstance(writer, (str, bytes)) or hasattr(writer, "__fspath__"):
            from torch.utils.tensorboard import SummaryWriter  # needs `pip install tensorboard`

            writer, self._own = SummaryWriter(log_dir=str(writer)), True
        else:
            self._own = False
        self.writer, self.columns, self.groups = writer, tuple(columns), groups

    def write(self, rows: pd.DataFrame) -> None:
        for step, values in _scalars(rows, self.columns, self.groups):
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self, summary: dict) -> None:
        if self._own:
            self.writer.close()


class WandbSink:
    """Scalars into a W&B run (``wandb.init(...)``'s answer; None: the active ``wandb.run``)."""

    def __init__(self, run=None, *, columns=SCALARS, groups=None):
        if run is None:
            import wandb

            run = wandb.run
            if run is None:
                raise ValueError("no active W&B run: call wandb.init() first or pass run=")
        self.run, self.columns, self.groups = run, tuple(columns), groups
        run.define_metric("thermosgd/step")
        run.define_metric("thermosgd/*", step_metric="thermosgd/step")

    def write(self, rows: pd.DataFrame) -> None:
        for step, values in _scalars(rows, self.columns, self.groups):
            self.run.log(values | {"thermosgd/step": step})

    def close(self, summary: dict) -> None:
        pass
