"""Sphere-entropy timings (eq. 26-27) on SGD-like weight queues, with a baseline in the same run.

Data: a queue of N float32 snapshots drifting slowly around a fixed direction (an
Ornstein-Uhlenbeck walk of the direction, correlation time ~100 snapshots, angular spread 0.05),
the shape of the SGD weight queues in section 6: N = 1000, d = 43692 (ResNet-18 k=4) and
N = 4000, d = 24408 (ConvNet k=8). Also the isotropic simulator's batch: B = 289 sets of
N = 1000 points on S^2.

Baseline, run here on the same data: the straightforward estimator, float64 angles from
``to_spherical`` (the paper's raw chart), nearest neighbours from ``torch.cdist`` in float64, and
the same Jacobian term; for the d = 3 batch, ``scipy.spatial.cKDTree`` per set. The paper's own
code is quoted at 8 s and 27 s for the two large cases on this kind of 2-core machine.

Usage: python benchmarks/bench_entropy.py [--repeat 3] [--no-baseline]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

from thermosgd import entropy
from thermosgd.entropy import sphere_entropy, to_spherical

PAPER_SECONDS = {(1000, 43692): 8.0, (4000, 24408): 27.0}


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


def baseline_sphere_entropy(w):
    """Straightforward eq. 26: float64 raw-chart angles, torch.cdist float64, trig Jacobian."""
    theta = torch.from_numpy(to_spherical(np.asarray(w, dtype=np.float64)))  # (N, d-1)
    dist = torch.cdist(theta, theta)
    dist.fill_diagonal_(float("inf"))
    zeta2 = dist.min(1).values.square().numpy()
    dim = theta.shape[1]
    d = dim + 1
    j = torch.arange(1, d - 1, dtype=torch.float64)
    logj = ((d - 1 - j) * torch.log(torch.sin(theta[:, : d - 2]))).sum(-1).mean().item()
    return entropy._kl_from_sqdist(zeta2[None], dim, np.ones(1), np.ones(1), "w", None,
                                   stacklevel=2)[0] + logj


def baseline_batch(w):
    """cKDTree per set on the raw-chart angles of a (B, N, 3) batch."""
    out = []
    for s in w:
        theta = to_spherical(s)
        zeta2 = cKDTree(theta).query(theta, k=2)[0][:, 1] ** 2
        logj = np.log(np.sin(theta[:, 0])).mean()
        kl = entropy._kl_from_sqdist(zeta2[None], 2, np.ones(1), np.ones(1), "w", None,
                                     stacklevel=2)
        out.append(kl[0] + logj)
    return np.array(out)


def best_of(fn, repeat):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.2f}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    # warm-up: numba compiles (then cached on disk) and the allocator settles
    sphere_entropy(weight_queue(50, 300))
    sphere_entropy(np.random.default_rng(0).standard_normal((2, 100, 3)))

    header = ("| case | device | thermosgd (s) | baseline (s) | speed-up | paper (s) | vs paper | "
              "S aligned | S raw chart | S baseline |")
    rows = [header, "|---" * 10 + "|"]
    for (n, d), paper in PAPER_SECONDS.items():
        w = weight_queue(n, d)
        for device in devices:
            t = w.to(device)
            ours, value = best_of(lambda t=t: sphere_entropy(t), args.repeat)
            raw = sphere_entropy(t, align=False)
            base, base_value = (float("nan"), float("nan"))
            if not args.no_baseline and device == "cpu":
                base, base_value = best_of(lambda w=w: baseline_sphere_entropy(w), 1)
            rows.append(f"| N={n}, d={d} | {device} | {ours:.2f} | {base:.2f} | "
                        f"{base / ours:.1f}x | {paper:.0f} | {paper / ours:.1f}x | {value:.1f} | "
                        f"{raw:.1f} | {base_value:.1f} |")
            print(rows[-1], flush=True)

    b, n = 289, 1000
    g = np.random.default_rng(1)
    mu = g.standard_normal(3)
    kappa = np.geomspace(1.0, 1000.0, b)[:, None, None]
    batch = mu / np.linalg.norm(mu) + g.standard_normal((b, n, 3)) / np.sqrt(kappa)
    for device in devices:
        t = torch.from_numpy(batch).to(device) if device != "cpu" else batch
        ours, value = best_of(lambda t=t: sphere_entropy(t), max(args.repeat, 5))
        base, base_value = float("nan"), np.full(b, np.nan)
        if not args.no_baseline and device == "cpu":
            base, base_value = best_of(lambda: baseline_batch(batch), 1)
        rows.append(f"| B={b} x N={n}, d=3 (per set) | {device} | {ours / b * 1e6:.0f} us | "
                    f"{base / b * 1e6:.0f} us | {base / ours:.1f}x | - | - | "
                    f"{value.mean():.3f} (mean) | - | {base_value.mean():.3f} (mean) |")
        print(rows[-1], flush=True)
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
