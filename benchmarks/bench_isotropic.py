"""Isotropic simulator throughput against a research-style PyTorch loop, in the same run.

The baseline is how research code usually steps the isotropic model: the whole 289-point grid as
one (G, d) tensor, one autograd call per iteration, torch.randn noise, and a host sync (.item()
of loss and radius) at every log point. thermosgd runs the same grid, same protocol (fixed LR),
same number of steps, entropy queue included. Both are timed after a warm-up (numba compiles).

Usage: python benchmarks/bench_isotropic.py [--steps 20000] [--paper]
  --paper also times the full paper-scale reproduction (3 protocols x 289 points x 2e6 steps).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from thermosgd.isotropic import IsotropicConfig, simulate

GRID = tuple(np.geomspace(1e-3, 1e-1, 17))


def research_loop(steps: int, log_every: int = 50, queue_every: int = 50, d: int = 3,
                  sigma: float = 1.0) -> float:
    """Seconds for ``steps`` iterations of fixed-LR noisy GD over the 17x17 grid, autograd style."""
    lr, wd = (torch.tensor(a).reshape(-1, 1) for a in np.meshgrid(GRID, GRID, indexing="ij"))
    lr, wd = lr.reshape(-1, 1), wd.reshape(-1, 1)
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    mu /= mu.norm()
    w0 = torch.randn(d, generator=g, dtype=torch.float64)
    w = (w0 / w0.norm()).repeat(lr.shape[0], 1).requires_grad_(True)
    losses, radii, queue = [], [], []
    start = time.perf_counter()
    for k in range(1, steps + 1):
        loss = 1 + (w @ mu) / w.norm(dim=1)
        (grad,) = torch.autograd.grad(loss.sum(), w)
        with torch.no_grad():
            r = w.norm(dim=1, keepdim=True)
            wb = w / r
            eps = torch.randn(w.shape, generator=g, dtype=torch.float64)
            noise = sigma * (eps - (eps * wb).sum(1, keepdim=True) * wb) / r
            w -= lr * (grad + noise + wd * w)
        if k % log_every == 0:
            losses.append(loss.mean().item())
            radii.append(w.norm(dim=1).mean().item())
        if k % queue_every == 0:
            queue.append(w.detach().clone())
            queue = queue[-1000:]
    return time.perf_counter() - start


def thermosgd_run(steps: int, protocol: str = "fixed-lr") -> float:
    """Seconds for the same grid and steps; the 1000-snapshot queue is sampled every
    steps/1000 iterations so that it fills, and its entropy is evaluated once, at the end."""
    second = {"radii": tuple(np.geomspace(0.1, 10, 17))} if protocol == "fixed-sphere" else {
        "weight_decays": GRID}
    config = IsotropicConfig(protocol=protocol, learning_rates=GRID, iterations=steps,
                             queue_every=steps // 1000, entropy_every=steps, entropy_average=1,
                             **second)
    start = time.perf_counter()
    simulate(config, progress=False)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40_000, help="a multiple of 1000")
    parser.add_argument("--paper", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}")
    thermosgd_run(args.steps)  # warm-up: numba compilation (cached on disk afterwards)
    ours = thermosgd_run(args.steps)
    base = research_loop(args.steps, queue_every=args.steps // 1000)
    print(f"{args.steps} steps, 289-point fixed-LR grid, d=3, loss/radius logged every 50, "
          f"queue of 1000 snapshots (thermosgd also evaluates its entropy once)")
    print(f"  research-style autograd loop: {base:8.2f} s  ({base / args.steps * 1e6:7.1f} us/step)")
    print(f"  thermosgd.simulate:           {ours:8.2f} s  ({ours / args.steps * 1e6:7.1f} us/step)")
    print(f"  speed-up: {base / ours:.1f}x")
    if args.paper:
        from thermosgd.reproduce import isotropic_configs

        total = 0.0
        for config in isotropic_configs("paper"):
            start = time.perf_counter()
            simulate(config, progress=False)
            wall = time.perf_counter() - start
            total += wall
            print(f"  paper scale {config.protocol}: {wall:.1f} s")
        print(f"  paper scale, three protocols, 2e6 steps each: {total:.1f} s")


if __name__ == "__main__":
    main()
