"""A 3 x 3 digits sweep through the local executor: one worker against two worker processes.

The sweep: scikit-learn's digits, ConvNet k=4, fixed LR, eta in {0.1, 0.2, 0.4} x lambda in
{0.02, 0.04, 0.08}, 2000 steps each. Runs of the CLI, each into a new directory:
- sequential: ``--workers 1``, one configuration after another in one process with torch's
  default threads (2 here): the executor's behaviour before CPU workers;
- workers: ``--workers 2``, two worker processes of one torch thread each (the default on a
  2-core machine);
- one thread: ``--workers 1`` with ``OMP_NUM_THREADS=1``, one configuration after another on one
  thread: the reference the worker runs must equal bit for bit (CPU convolutions sum in an order
  that depends on the thread count, so only equal counts can agree).
``--ray`` adds the Ray executor with one CPU per task. Timings alternate over ``--rounds``.

Usage: python benchmarks/bench_sweep.py OUT_DIR [--rounds 1] [--scale 1] [--ray]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

GRID = """
name = "bench-tiny"
protocol = "fixed-lr"
model = "convnet"
width = 4
dataset = "digits"
iterations = 2000
queue_size = 50
learning_rates = [0.1, 0.2, 0.4]
weight_decays = [0.02, 0.04, 0.08]
[train]
log_every = 100
log_linear_until = 1000
log_points = 10
queue_every = 10
stationary_logs = 5
"""

COLUMNS = ["train_loss", "test_acc", "radius", "trace_cov", "entropy", "temperature"]


def run(out: Path, grid: Path, *extra, env=None, scale=1.0) -> float:
    start = time.perf_counter()
    subprocess.run(["thermosgd", "sweep", "run", str(grid), "--out", str(out), "--no-progress",
                    "--scale", str(scale), *extra], check=True, env=env)
    seconds = time.perf_counter() - start
    subprocess.run(["thermosgd", "collect", str(out)], check=True, capture_output=True, env=env)
    return seconds


def compare(table, reference):
    if table.equals(reference):
        return "identical (every column, bit for bit)"
    cols = [c for c in COLUMNS if c in table and c in reference]
    rel = (np.abs(table[cols] - reference[cols]) / np.abs(reference[cols])).max()
    return "differs: max relative " + ", ".join(f"{c} {rel[c]:.1e}" for c in cols)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ray", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply run lengths (the "
                        "CLI's --scale), e.g. 0.25 on a busy machine")
    args = parser.parse_args()
    root = args.out
    root.mkdir(parents=True, exist_ok=False)
    grid = root / "grid.toml"
    grid.write_text(GRID)
    one = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cases = {
        "sequential (1 worker, 2 threads)": ("--workers", "1"),
        "local workers (2 processes x 1 thread)": ("--workers", "2"),
    }
    if args.ray:
        cases["ray, 1 CPU per task"] = ("--executor", "ray", "--cpus-per-task", "1")
    times = {name: [] for name in cases}
    dirs = {}
    names = list(cases)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            dirs[name] = root / f"{len(dirs)}-{names.index(name)}"
            load = os.getloadavg()[0]
            times[name].append(run(dirs[name], grid, *cases[name], scale=args.scale))
            print(f"round {r}: {name}: {times[name][-1]:.1f} s (load before {load:.2f}, "
                  f"after {os.getloadavg()[0]:.2f})", flush=True)
    reference_dir = root / "one-thread"
    one_thread = run(reference_dir, grid, "--workers", "1", env=one, scale=args.scale)
    print(f"one thread, sequential: {one_thread:.1f} s", flush=True)
    reference = pd.read_csv(reference_dir / "stationary.csv")
    base = statistics.median(times[names[0]])
    print("\n| executor | wall time (s), median | speed-up vs sequential | "
          "stationary table vs one-thread sequential run |")
    print("|---|---|---|---|")
    for name in names:
        table = pd.read_csv(dirs[name] / "stationary.csv")
        median = statistics.median(times[name])
        print(f"| {name} | {median:.1f} | {base / median:.2f}x | {compare(table, reference)} |")
    print(f"| one thread, sequential | {one_thread:.1f} | {base / one_thread:.2f}x | - |")
    print("\nstatus:", {name: pd.read_csv(dirs[name] / "stationary.csv")["status"]
                        .value_counts().to_dict() for name in names})


if __name__ == "__main__":
    main()
