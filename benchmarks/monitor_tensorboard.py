"""TensorBoard from thermosgd.Monitor on a torchvision-style ResNet-18: tags per log and the
time to write them, against the training step.

The model is torchvision's ResNet-18 layout at CIFAR size (3x3 stem, no max-pool, BasicBlocks
of 64-512 channels, BatchNorm after every conv, the 1x1 projection shortcuts with their own
BatchNorm), built in _resnet.py: 20 conv weights split into 4800 per-channel groups, and the fc matrix.
One process trains it on random tensors of CIFAR's shape (batch 16, SGD momentum 0.9, weight
decay 5e-4; speed does not depend on pixel values) with a Monitor at ``--every`` that hands its
rows to a capturing sink; the unmonitored step is timed apart. Each TensorBoard mode then writes
the same captured flushes into its own event file, timed: "layers" (the default: whole weights,
"other", "all") and "groups" (every channel too); and the row-by-row tag building the sinks
used before (``iterrows``) is timed on the same rows. The share of the step is the write time
per log over ``every`` steps of training: what the default costs a loop that logs every
``every`` steps.

Usage: python benchmarks/monitor_tensorboard.py [--every 10] [--logs 6] [--flush-every 3]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from _resnet import ResNet18

import thermosgd
from thermosgd.monitor.sinks import SCALARS, TensorBoardSink, _scalars


class PerTag:
    """A writer with add_scalar only (as tensorboardX's): the sink writes an event per tag."""

    def __init__(self, logdir):
        from torch.utils.tensorboard import SummaryWriter

        self.inner = SummaryWriter(log_dir=str(logdir))

    def add_scalar(self, tag, value, global_step):
        self.inner.add_scalar(tag, value, global_step=global_step)

    def flush(self):
        self.inner.flush()


class Capture:
    """A sink that keeps every flush's rows."""

    def __init__(self):
        self.flushes = []

    def write(self, rows):
        self.flushes.append(rows.copy())

    def close(self, summary):
        pass


def _iterrows_tags(rows: pd.DataFrame, columns=SCALARS) -> int:
    """The sinks' former tag building, row by row (kept here only to time it)."""
    count = 0
    for _, at in rows.groupby("step", sort=True):
        values = {}
        for _, row in at.iterrows():
            for column in columns:
                value = row.get(column)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    values[f"thermosgd/{column}/{row['group']}"] = float(value)
        count += len(values)
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--logs", type=int, default=6)
    parser.add_argument("--flush-every", type=int, default=3)
    parser.add_argument("--base-steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 3, 32, 32, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    model = ResNet18(stem="cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    for _ in range(3):
        step()  # warm-up
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.base_steps):
        step()
    step_wall = (time.perf_counter() - start) / args.base_steps
    step_cpu = (time.process_time() - start_cpu) / args.base_steps
    print(f"training step, unmonitored: {1e3 * step_cpu:.0f} ms CPU, {1e3 * step_wall:.0f} ms "
          f"wall (mean of {args.base_steps})")
    capture = Capture()
    with thermosgd.Monitor(model, opt, every=args.every, flush_every=args.flush_every,
                           sinks=[capture]) as mon:
        for _ in range(args.every * args.logs):
            step()
    frame = pd.concat(capture.flushes, ignore_index=True)
    logs = frame["step"].nunique()
    per_log = frame[frame["step"] == frame["step"].max()]
    print(f"{len(mon.groups)} scale-invariant groups; rows per log by level: "
          f"{per_log['level'].value_counts().to_dict()}")
    with tempfile.TemporaryDirectory() as tmp:
        for scalars, per_tag in (("layers", False), ("groups", False), ("groups", True)):
            tags = sum(len(v) for rows in capture.flushes
                       for _, v in _scalars(rows, SCALARS, scalars)) / logs
            where = Path(tmp) / f"{scalars}{'-per-tag' if per_tag else ''}"
            sink = TensorBoardSink(PerTag(where) if per_tag else where, scalars=scalars)
            start, cpu = time.perf_counter(), time.process_time()
            for rows in capture.flushes:
                sink.write(rows)
            w_wall = (time.perf_counter() - start) / logs
            w_cpu = (time.process_time() - cpu) / logs
            sink.close({})
            if per_tag:
                sink.writer.inner.close()
            start = time.process_time()
            for rows in capture.flushes:
                list(_scalars(rows, SCALARS, scalars))
            build = (time.process_time() - start) / logs
            how = "an event per tag (add_scalar)" if per_tag else "an event per log"
            print(f"scalars={scalars!r}, {how}: {tags:.0f} tags per log; write per log "
                  f"{1e3 * w_cpu:.1f} ms CPU ({1e3 * w_wall:.1f} ms wall), of which building "
                  f"the tags {1e3 * build:.1f} ms; share of the training at every="
                  f"{args.every}: {100 * w_cpu / (args.every * step_cpu):.2f} % CPU "
                  f"({100 * w_wall / (args.every * step_wall):.2f} % wall); of one step "
                  f"{100 * w_cpu / step_cpu:.2f} % CPU")
    start = time.process_time()
    count = _iterrows_tags(capture.flushes[0])
    old = (time.process_time() - start) / capture.flushes[0]["step"].nunique()
    print(f"former row-by-row tag building, every group: {old:.2f} s CPU per log "
          f"({count / capture.flushes[0]['step'].nunique():.0f} tags)")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
