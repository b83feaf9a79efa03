"""Entropy timings against a research-style baseline measured in the same run, alternating.

High dimension (sphere entropy, eq. 26-27): queues of N float32 snapshots drifting slowly around a
fixed direction (an Ornstein-Uhlenbeck walk of the direction, correlation 0.99 per snapshot,
angular spread 0.05, radius 3), the shape of the SGD weight queues of section 6: N = 1000 and
4000, d = 24408 (ConvNet k=8) and 43692 (ResNet-18 k=4). thermosgd runs both charts, the aligned
default ``sphere_entropy(w)`` and the paper's raw chart ``sphere_entropy(w, align=False)``.
The baseline is the estimator written the paper's way: the raw chart in float32 with NumPy
(unit rows, reverse cumulative sums, arctan2), scikit-learn ``NearestNeighbors`` for the
nearest-neighbour distances, then the Kozachenko-Leonenko formula with the trigonometric
log-Jacobian.

Moderate dimension (``knn_entropy``, eq. 25): Gaussian samples, D from 4 to 100, N up to 1e4,
against scikit-learn's KD-tree and ball-tree searches (``NearestNeighbors(algorithm=...)``).

Every case runs ``--rounds`` rounds; a round times each contender once, in an order that rotates
from round to round, after one untimed warm-up call of thermosgd's (compilation, and this VM's
first touch of fresh memory, ~3 s per GB). Reported: median times and the median of the per-round ratios.

Usage: python benchmarks/bench_entropy.py [--rounds 3] [--only high|moderate]
       [--cases 0 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch
from scipy import special

from thermosgd.entropy import knn_entropy, sphere_entropy

HIGH = [(1000, 24408), (1000, 43692), (4000, 24408), (4000, 43692)]
MODERATE = [(10_000, 4), (10_000, 10), (10_000, 20), (10_000, 50), (10_000, 100), (2000, 100)]
EULER = 0.5772156649015329
NO_WARMUP = {"baseline"}  # NumPy and scikit-learn compile nothing: its first call is timed


def weight_queue(n, d, *, seed=0, spread=0.05, correlation=0.99, radius=3.0):
    """(n, d) float32 snapshots: an OU walk of the direction around a fixed unit vector."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    base /= base.norm()
    xi = torch.randn(d, generator=g, dtype=torch.float64)
    out = torch.empty((n, d), dtype=torch.float32)
    kick = math.sqrt(1.0 - correlation**2)
    for t in range(n):
        xi.mul_(correlation).add_(torch.randn(d, generator=g, dtype=torch.float64), alpha=kick)
        w = base + spread / math.sqrt(d) * xi
        out[t] = radius * w / w.norm()
    return out


def kl_constant(n, dim):
    """C(N, D) of eq. 101."""
    return (math.log(n - 1) - special.gammaln(dim / 2 + 1) + dim / 2 * math.log(math.pi)
            + EULER)


def baseline_sphere_entropy(w):
    """The paper's way: float32 raw-chart angles with NumPy, scikit-learn nearest neighbours."""
    from sklearn.neighbors import NearestNeighbors

    w = np.asarray(w, dtype=np.float32)
    n, d = w.shape
    x = w / np.linalg.norm(w, axis=1, keepdims=True)
    tail = np.cumsum((x * x)[:, ::-1], axis=1)[:, ::-1]  # S_j = sum_(i >= j) x_i^2
    theta = np.arctan2(np.sqrt(tail[:, 1:-1]), x[:, :-2])
    phi = np.arctan2(x[:, -1], x[:, -2])
    angles = np.concatenate([theta, phi[:, None]], axis=1)
    weights = (d - 2 - np.arange(d - 2)).astype(np.float32)  # d - 1 - j for j = 1..d-2
    logj = float((np.log(np.sin(theta)) @ weights).mean())
    dist, _ = NearestNeighbors(n_neighbors=2).fit(angles).kneighbors(angles)
    zeta = dist[:, 1].astype(np.float64)
    dim = d - 1
    return dim * np.log(zeta).mean() + kl_constant(n, dim) + logj


def baseline_knn_entropy(x, algorithm):
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=2, algorithm=algorithm).fit(x).kneighbors(x)
    n, dim = x.shape
    return dim * np.log(dist[:, 1]).mean() + kl_constant(n, dim)


def timed(fn):
    """(wall seconds, CPU seconds of all this process's threads, value)."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu, value


def alternate(contenders, rounds):
    """{name: fn} -> {name: [wall times, CPU times, value]}: one warm-up call each (but the
    baseline's), then rounds in an order that rotates."""
    names = list(contenders)
    out = {name: [[], [], None] for name in names}
    for name in names:
        if name not in NO_WARMUP:
            out[name][2] = contenders[name]()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds, cpu, out[name][2] = timed(contenders[name])
            out[name][0].append(seconds)
            out[name][1].append(cpu)
    return out


def ratio(result, base, name, which=0):
    """Median over rounds of baseline time / contender time (which: 0 wall, 1 CPU)."""
    return statistics.median(b / t for b, t in zip(result[base][which], result[name][which]))


def load():
    return f"{os.getloadavg()[0]:.2f}"


def high(rounds, device):
    print("| case | device | load | baseline (s) | aligned (s) | speed-up | raw chart (s) | "
          "speed-up | CPU-time speed-up aligned / raw | S aligned | S raw | S baseline (float32) |")
    print("|---" * 12 + "|")
    for n, d in HIGH:
        w = weight_queue(n, d)
        t = w.to(device)
        before = load()
        res = alternate({"baseline": lambda w=w: baseline_sphere_entropy(w.numpy()),
                         "aligned": lambda t=t: sphere_entropy(t),
                         "raw": lambda t=t: sphere_entropy(t, align=False)}, rounds)
        med = {k: statistics.median(v[0]) for k, v in res.items()}
        print(f"| N={n}, d={d} | {device} | {before}-{load()} | {med['baseline']:.2f} | "
              f"{med['aligned']:.3f} | {ratio(res, 'baseline', 'aligned'):.1f}x | "
              f"{med['raw']:.3f} | {ratio(res, 'baseline', 'raw'):.1f}x | "
              f"{ratio(res, 'baseline', 'aligned', 1):.1f}x / "
              f"{ratio(res, 'baseline', 'raw', 1):.1f}x | {res['aligned'][2]:.10g} | "
              f"{res['raw'][2]:.10g} | {res['baseline'][2]:.7g} |", flush=True)


def moderate(rounds, device):
    print("| N | D | load | KD-tree (s) | ball tree (s) | thermosgd (s) | vs KD-tree | "
          "vs ball tree | CPU time vs KD / ball | S thermosgd - S KD-tree |")
    print("|---" * 10 + "|")
    for n, dim in MODERATE:
        x = np.random.default_rng(dim).standard_normal((n, dim))
        t = torch.from_numpy(x).to(device)
        before = load()
        res = alternate({"kd": lambda x=x: baseline_knn_entropy(x, "kd_tree"),
                         "ball": lambda x=x: baseline_knn_entropy(x, "ball_tree"),
                         "ours": lambda t=t: knn_entropy(t)}, rounds)
        med = {k: statistics.median(v[0]) for k, v in res.items()}
        print(f"| {n} | {dim} | {before}-{load()} | {med['kd']:.3f} | {med['ball']:.3f} | "
              f"{med['ours']:.3f} | {ratio(res, 'kd', 'ours'):.1f}x | "
              f"{ratio(res, 'ball', 'ours'):.1f}x | {ratio(res, 'kd', 'ours', 1):.1f}x / "
              f"{ratio(res, 'ball', 'ours', 1):.1f}x | {res['ours'][2] - res['kd'][2]:.1e} |",
              flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["high", "moderate"])
    parser.add_argument("--cases", type=int, nargs="*", help="indices into the case list")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the baseline stays on the "
                        "CPU, as in the paper's code)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {args.device}, load average {load()}")
    sphere_entropy(weight_queue(50, 300))  # compile (then cached on disk)
    knn_entropy(np.random.default_rng(0).standard_normal((100, 20)))
    if args.cases:
        HIGH[:] = [HIGH[i] for i in args.cases if i < len(HIGH)]
        MODERATE[:] = [MODERATE[i] for i in args.cases if i < len(MODERATE)]
    if args.only in (None, "high"):
        high(args.rounds, args.device)
    if args.only in (None, "moderate"):
        moderate(args.rounds, args.device)


if __name__ == "__main__":
    main()
