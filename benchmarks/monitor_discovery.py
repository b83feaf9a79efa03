"""Cost of finding a model's scale-invariant groups, against one plain training step.

The model is torchvision's ResNet-18 (7x7 stride-2 stem, max-pool, BasicBlocks with BatchNorm
after every convolution, 1x1 BatchNorm-ed downsampling, 10 classes), built in _resnet.py without
torchvision: 4800 BatchNorm-fed channels, each a group. At 32x32 and batch 16 on the CPU, one
plain step (forward, backward, SGD step) is the yardstick. Discovery is what the Monitor does
on the first optimizer step: the structural groups from the recorded forward pass, then the
scaling test on 8 of the 16 samples (two reference passes, the screen of the weights no rule
names, the confirming passes). Both clocks: the process's CPU time (``time.process_time``: on
a shared machine it does not count the time other processes hold the cores) and the wall clock;
the median of ``--repeats`` runs, alternated, after ``--warmup`` of each (a process's first
passes run far slower while the allocator settles; the first, cold discovery is printed apart).

Usage: python benchmarks/monitor_discovery.py [--repeats 7] [--warmup 5] [--batch 16]
       [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from _resnet import ResNet18

from thermosgd.monitor import groups as _groups
from thermosgd.monitor import scaling as _scaling


def _clocks(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet18(stem="imagenet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def discovery():
        recorder = _groups.Recorder(model)
        F.cross_entropy(model(x), y).backward()  # the user's first step, recorded: not timed
        optimizer.zero_grad()
        return recorder

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    cold_step = _clocks(step)[:2]  # a process's first step and first discovery: cold
    recorder = discovery()
    cold = _clocks(lambda: _scaling.discover(model, recorder))[:2]
    for _ in range(args.warmup):
        step()  # the allocator settles: the first passes of a process run 10-50x slower
        _scaling.discover(model, discovery())
    steps, finds, report, groups = [], [], None, []
    for _ in range(args.repeats):
        steps.append(_clocks(step)[:2])
        recorder = discovery()
        cpu, wall, (groups, report) = _clocks(lambda: _scaling.discover(model, recorder))
        finds.append((cpu, wall))
    step_cpu, step_wall = (statistics.median(t[k] for t in steps) for k in (0, 1))
    find_cpu, find_wall = (statistics.median(t[k] for t in finds) for k in (0, 1))
    found = {g.found for g in groups}
    print(f"torchvision-style ResNet-18, 32x32, batch {args.batch}: {len(groups)} groups "
          f"({', '.join(sorted(found))}), {len(report.dropped)} dropped, "
          f"{len(report.screened)} weights screened; scaling test on {report.samples} samples: "
          f"{report.passes} forward + {report.backward} backward passes")
    print(f"discovery {find_cpu:.3f} s CPU ({find_wall:.3f} s wall); plain step "
          f"{step_cpu:.3f} s CPU ({step_wall:.3f} s wall); discovery / step "
          f"{find_cpu / step_cpu:.2f} CPU ({find_wall / step_wall:.2f} wall); median of "
          f"{args.repeats}")
    print(f"cold (the process's first): discovery {cold[0]:.3f} s CPU ({cold[1]:.3f} s wall), "
          f"step {cold_step[0]:.3f} s CPU ({cold_step[1]:.3f} s wall)")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
