"""A tiny sweep through the local and the Ray executors: same stationary table? wall time?

The sweep: scikit-learn's digits, ConvNet k=4, fixed LR, 3 x 3 grid (eta in {0.1, 0.2, 0.4},
lambda in {0.02, 0.04, 0.08}), 2000 steps each. Three runs of the CLI, each into a new directory:
- local: one configuration after another, torch on all cores (2 threads here);
- ray, --cpus-per-task 2: one task per configuration on a local Ray instance, 2 threads each
  (the same thread count as local, so the same floating-point sums);
- ray, --cpus-per-task 1: two tasks at once, 1 thread each.
The CPU's convolution sums depend on the thread count, so only equal counts can agree bit for
bit; for the 1-thread run the table's differences are reported instead.

Usage: cd benchmarks && python bench_sweep.py OUT_DIR
"""

from __future__ import annotations

import subprocess
import sys
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


def run(out: Path, grid: Path, *extra) -> float:
    start = time.perf_counter()
    subprocess.run(["thermosgd", "sweep", "run", str(grid), "--out", str(out), "--no-progress",
                    *extra], check=True)
    seconds = time.perf_counter() - start
    subprocess.run(["thermosgd", "collect", str(out)], check=True, capture_output=True)
    return seconds


def main():
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=False)
    grid = root / "grid.toml"
    grid.write_text(GRID)
    times = {
        "local": run(root / "local", grid),
        "ray, 2 CPUs per task": run(root / "ray2", grid, "--executor", "ray",
                                    "--cpus-per-task", "2"),
        "ray, 1 CPU per task": run(root / "ray1", grid, "--executor", "ray",
                                   "--cpus-per-task", "1"),
    }
    tables = {name: pd.read_csv(root / d / "stationary.csv")
              for name, d in zip(times, ("local", "ray2", "ray1"))}
    local = tables["local"]
    print("| executor | wall time (s) | stationary table vs local |")
    print("|---|---|---|")
    for name, seconds in times.items():
        table = tables[name]
        if table.drop(columns=[]).equals(local):
            verdict = "identical (every column, bit for bit)"
        else:
            rel = np.abs(table[COLUMNS] - local[COLUMNS]) / np.abs(local[COLUMNS])
            worst = rel.max()
            verdict = "differs: max relative " + ", ".join(
                f"{c} {worst[c]:.1e}" for c in COLUMNS)
        print(f"| {name} | {seconds:.1f} | {verdict} |")
    print("\nstatus:", dict(zip(times, [t["status"].value_counts().to_dict()
                                       for t in tables.values()])))


if __name__ == "__main__":
    main()
