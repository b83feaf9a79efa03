"""Network training throughput and measurement overhead, against a research-style loop.

1. Steps per second of ConvNet k=8 and ResNet-18 k=4 at batch 128 on 32 px CIFAR-shaped inputs,
   fixed LR (eta = 0.01, lambda = 1e-3), for
   - the research-style loop: an nn.Module with its own parameters, loss.backward(), the weight
     norm from per-tensor ``.item()`` calls, the gradient copied to the host every step, a
     per-tensor update, ``loss.item()`` every step;
   - ``thermosgd``'s trainer between log points (flat weights, the protocol's fused update,
     device-side accumulators, the entropy-queue snapshot every 25 steps).
   Both are timed in the same process, alternating, after a warm-up.
2. Measurement overhead at the paper's schedule (appendix F: 200 log points; 1e6 iterations and
   a queue of 1000 for ResNet-18, 2e6 and 4000 for ConvNet): one log point is timed at CIFAR-10
   sizes (50,000 train / 10,000 test images, a full queue) and scaled by 200 against the time of
   the run's training steps. The paper's own way, 4000 extra mini-batch gradients per log point,
   is costed from the same run's gradient time.

The data are random tensors of CIFAR's shape (speed does not depend on pixel values; this machine
has no CIFAR). Usage: python benchmarks/bench_train.py [--device cpu|cuda] [--steps 60]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from thermosgd.nn.data import Dataset
from thermosgd.nn.models import build_model
from thermosgd.nn.trainer import TrainConfig, _Run

SETUPS = {  # model, k, iterations, queue N (SPEC table, CIFAR-10 rows)
    "convnet": (8, 2_000_000, 4000),
    "resnet18": (4, 1_000_000, 1000),
}


def synthetic_cifar(device, n_train=50_000, n_test=10_000) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic-cifar10",
        train_x=torch.randn(n_train, 3, 32, 32, generator=g).to(device),
        train_y=torch.randint(0, 10, (n_train,), generator=g).to(device),
        test_x=torch.randn(n_test, 3, 32, 32, generator=g).to(device),
        test_y=torch.randint(0, 10, (n_test,), generator=g).to(device),
        num_classes=10)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def research_loop(model, data, steps, *, lr=0.01, wd=1e-3, device="cpu") -> float:
    """Seconds for ``steps`` fixed-LR steps written the way research code usually is."""
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator(device=device).manual_seed(0)
    losses, norms, grads = [], [], None
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, data.num_train, (128,), generator=gen, device=device)
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        model.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(sum(p.norm().item() ** 2 for p in params) ** 0.5)  # a sync per tensor
        grads = torch.cat([p.grad.reshape(-1) for p in params]).cpu().numpy()  # host copy
        with torch.no_grad():
            for p in params:
                p.add_(p.grad + wd * p, alpha=-lr)
        losses.append(loss.item())
    _sync(device)
    assert grads is not None
    return time.perf_counter() - start


class _NoBar:
    def update(self, n):
        pass


def thermosgd_steps(run, steps) -> float:
    _sync(run.device)
    start = time.perf_counter()
    run._segment(run.iteration + steps, _NoBar())
    _sync(run.device)
    return time.perf_counter() - start


def gradient_time(run, batches) -> float:
    """Seconds per extra mini-batch gradient at a log point (the paper's sigma^2 estimate)."""
    x, y = run.data.train_x, run.data.train_y
    _sync(run.device)
    start = time.perf_counter()
    for i in range(batches):
        idx = torch.arange(i * 128, (i + 1) * 128, device=run.device)
        loss = F.cross_entropy(run.model(x[idx]), y[idx])
        torch.autograd.grad(loss, run.params)
    _sync(run.device)
    return (time.perf_counter() - start) / batches


def bench(name, data, device, steps):
    width, iterations, queue = SETUPS[name]
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, model=name,
                         width=width, iterations=iterations, queue_size=queue, device=device)
    run = _Run(config, data, device, None)
    research_model = build_model(name, width=width).to(device).train()
    thermosgd_steps(run, 5)
    research_loop(research_model, data, 5, device=device)
    ours, theirs = [], []
    for _ in range(2):  # alternate to share the machine's noise
        ours.append(thermosgd_steps(run, steps))
        theirs.append(research_loop(research_model, data, steps, device=device))
    t_ours, t_theirs = min(ours) / steps, min(theirs) / steps
    # one log point at the paper's sizes, with a full queue of nearby weights
    with torch.no_grad():
        noise = torch.randn(queue, run.d, generator=torch.Generator().manual_seed(1)).to(device)
        run.queue.copy_(run.w + 1e-3 * run.w.norm() / run.d**0.5 * noise)
    run.iteration = queue * config.queue_every  # the queue counts as full
    run.window = {"stoch_grad_norm2": 0.0, "batch_loss": 0.0, "lambda_eff": float("nan")}
    _sync(device)
    start = time.perf_counter()
    row = run._measure()
    _sync(device)
    t_log = time.perf_counter() - start
    assert row["entropy"] == row["entropy"], "the queue should be full"
    t_grad = gradient_time(run, 20)
    logs = 200
    return {
        "model": f"{name} k={width} (d={run.d})",
        "ours_ms": t_ours * 1e3, "research_ms": t_theirs * 1e3, "speedup": t_theirs / t_ours,
        "log_s": t_log, "grad_ms": t_grad * 1e3,
        "overhead": logs * t_log / (iterations * t_ours),
        "paper_overhead": logs * 4000 * t_grad / (iterations * t_theirs),
        "iterations": iterations, "queue": queue,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", nargs="+", default=list(SETUPS))
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    data = synthetic_cifar(args.device)
    print("| model | research loop | thermosgd | speed-up | one log point | overhead at paper "
          "schedule | paper's 4000 extra gradients |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        r = bench(name, data, args.device, args.steps)
        print(f"| {r['model']} | {r['research_ms']:.1f} ms/step | {r['ours_ms']:.1f} ms/step | "
              f"{r['speedup']:.2f}x | {r['log_s']:.1f} s | {100 * r['overhead']:.1f} % "
              f"({r['iterations']:.0e} it, N={r['queue']}) | {100 * r['paper_overhead']:.0f} % |",
              flush=True)


if __name__ == "__main__":
    main()
