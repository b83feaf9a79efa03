"""Overhead of thermosgd.Monitor on a training loop, as step-time ratios with and without it.

Two loops, each in one process: the example's CNN on scikit-learn's digits (batch 32, SGD
momentum 0.9 + weight decay; examples/monitor_digits.py) and the paper's ResNet-18 k=4 at batch
128 on random tensors of CIFAR's shape (speed does not depend on pixel values; 300
per-channel groups). Each block times ``--steps`` steps for every mode (no monitor, every = 1,
10, 100) in a rotating order; a monitored block builds a fresh Monitor writing a run directory,
does one untimed step (the groups are found on the first step), then times the steps (with the
flushes that fall in them: every 100 logs by default) and, apart, its close (the last flush,
its files, the summary): a run pays that once. The ratio of a mode is the median over blocks of
its time per step over the unmonitored time per step of the same block; "with close" adds the
close's time spread over the block's steps (an upper bound for a run longer than the block). Two clocks: the process's CPU time (``time.process_time``, the headline: on a shared
machine it does not count the time other processes hold the cores; one torch thread, so it is
the loop's compute) and the wall clock.

Usage: python benchmarks/bench_monitor.py [--models example resnet18] [--steps 300]
       [--blocks 5] [--every 1 10 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import monitor_digits  # noqa: E402

import thermosgd  # noqa: E402
from thermosgd.nn import build_model  # noqa: E402


def _loop(name):
    """(model, optimizer, step function) of one benchmark loop."""
    gen = torch.Generator().manual_seed(0)
    if name == "example":
        x, y = monitor_digits.digits()
        model, batch = monitor_digits.CNN(), 32
    else:
        x = torch.randn(1024, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (1024,), generator=gen)
        model, batch = build_model("resnet18", width=4), 128
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)

    def step():
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer, step


def _block(model, optimizer, step, steps, every, out):
    monitor = None
    if every is not None:
        monitor = thermosgd.Monitor(model, optimizer, every=every, out=out, overwrite=True)
        step()  # the groups are found on the first step: not timed
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    cpu_steps, wall = time.process_time() - cpu, time.perf_counter() - start
    cpu = time.process_time()
    if monitor is not None:
        monitor.close()
    return cpu_steps / steps, wall / steps, time.process_time() - cpu


def bench(name, *, steps, blocks, everies):
    model, optimizer, step = _loop(name)
    for _ in range(10):
        step()  # warm-up
    modes = [None, *everies]
    ratios = {e: [] for e in everies}
    walls = {e: [] for e in everies}
    closes = {e: [] for e in everies}
    base = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in range(blocks):
            order = modes[b % len(modes):] + modes[:b % len(modes)]
            times = {e: _block(model, optimizer, step, steps, e, Path(tmp) / f"run{e}")
                     for e in order}
            base.append(times[None][0])
            for e in everies:
                ratios[e].append(times[e][0] / times[None][0])
                walls[e].append(times[e][1] / times[None][1])
                closes[e].append(times[e][2])
    return statistics.median(base), ratios, walls, closes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["example", "resnet18"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    for name in args.models:
        base, ratios, walls, closes = bench(name, steps=args.steps, blocks=args.blocks,
                                            everies=args.every)
        print(f"{name}: {1e3 * base:.1f} ms CPU per step unmonitored (median of {args.blocks} "
              f"blocks of {args.steps} steps)")
        for e in args.every:
            spread = ", ".join(f"{r:.3f}" for r in ratios[e])
            print(f"  every={e:>4}: CPU-time ratio {statistics.median(ratios[e]):.3f} (blocks: "
                  f"{spread}); wall-clock ratio {statistics.median(walls[e]):.3f}; close "
                  f"{1e3 * statistics.median(closes[e]):.0f} ms CPU, with close "
                  f"{statistics.median(ratios[e]) + statistics.median(closes[e]) / (args.steps * base):.3f}")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
