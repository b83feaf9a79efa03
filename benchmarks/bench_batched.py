"""Batched engine throughput: configuration-steps per second against one-at-a-time training.

For ConvNet k=8 and ResNet-18 k=4 at batch 128 (32 px CIFAR-shaped random inputs), fixed LR,
this times in one process:
- the research-style loop (``bench_train.research_loop``) and the single-run trainer, one
  configuration (their per-configuration cost is what running G configurations one after another
  costs, G times);
- ``thermosgd.nn.batched`` with G configurations (different LRs and seeds) under vmap;
and reports configuration-steps per second and the process's peak memory (CPU: ru_maxrss, which
only grows, so the G column is cumulative; CUDA: torch.cuda.max_memory_allocated per G).

Usage: python benchmarks/bench_batched.py [--device cpu|cuda] [--groups 1 8 32 95] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from bench_train import _NoBar, _sync, research_loop, synthetic_cifar
from thermosgd.nn.batched import _Batch
from thermosgd.nn.models import build_model
from thermosgd.nn.trainer import TrainConfig, _Run

WIDTH = {"convnet": 8, "resnet18": 4}


def _peak_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def configs(name, g, device):
    rates = np.geomspace(1e-3, 1e-1, g)
    return [TrainConfig(protocol="fixed-lr", learning_rate=float(lr), weight_decay=1e-3,
                        seed=i, model=name, width=WIDTH[name], iterations=10**6, queue_size=8,
                        device=device) for i, lr in enumerate(rates)]


def time_batch(name, g, data, device, steps) -> float:
    batch = _Batch(configs(name, g, device), [None] * g, data, device, queue_device=None,
                   queue_dtype=torch.float32)
    batch._advance(1, _NoBar())  # warm-up
    _sync(device)
    start = time.perf_counter()
    batch._advance(1 + steps, _NoBar())
    _sync(device)
    return (time.perf_counter() - start) / steps


def time_single(name, data, device, steps) -> float:
    run = _Run(configs(name, 1, device)[0], data, device, None)
    run._advance(1, _NoBar())
    _sync(device)
    start = time.perf_counter()
    run._advance(1 + steps, _NoBar())
    _sync(device)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8, 32, 95])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(WIDTH))
    args = parser.parse_args()
    data = synthetic_cifar(args.device)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print("| model | engine | G | s/step | config-steps/s | vs research loop | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        model = build_model(name, width=WIDTH[name]).to(args.device).train()
        research_loop(model, data, 1, device=args.device)
        t_research = research_loop(model, data, args.steps, device=args.device) / args.steps
        t_single = time_single(name, data, args.device, args.steps)
        for label, t in (("research loop", t_research), ("single-run trainer", t_single)):
            print(f"| {name} | {label} | 1 | {t:.3f} | {1 / t:.1f} | {t_research / t:.2f}x | "
                  f"{_peak_mb(args.device):.0f} |", flush=True)
        for g in args.groups:
            if torch.device(args.device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t = time_batch(name, g, data, args.device, args.steps)
            print(f"| {name} | batched (vmap) | {g} | {t:.3f} | {g / t:.1f} | "
                  f"{g * t_research / t:.2f}x | {_peak_mb(args.device):.0f} |", flush=True)


if __name__ == "__main__":
    main()
