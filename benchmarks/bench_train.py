"""Network training throughput and measurement overhead, against a research-style loop.

1. Steps per second of ConvNet k=8 and ResNet-18 k=4 at batch 128 on 32 px CIFAR-shaped inputs,
   fixed LR (eta = 0.01, lambda = 1e-3), for
   - the research-style loop: an nn.Module with its own parameters, loss.backward(), the weight
     norm from per-tensor ``.item()`` calls, the gradient copied to the host every step, a
     per-tensor update, ``loss.item()`` every step;
   - ``thermosgd``'s trainer between log points (flat weights, the protocol's fused update,
     device-side accumulators, the entropy-queue snapshot every 25 steps).
   Both are timed in the same process, alternating, after a warm-up.
   ``--engine-only`` times instead the engine at G = 1 (``thermosgd.nn.Engine``) against the
   single-run trainer it replaced (``reference_trainer._Run``, a copy kept for this), on
   scikit-learn's digits (``--dataset digits``) or the CIFAR-shaped tensors, alternating.
2. Measurement overhead at the paper's schedule (appendix F: 200 log points; 1e6 iterations and
   a queue of 1000 for ResNet-18, 2e6 and 4000 for ConvNet): one log point is timed at CIFAR-10
   sizes (50,000 train / 10,000 test images, a full queue) and scaled by 200 against the time of
   the run's training steps. The paper's own way, 4000 extra mini-batch gradients per log point,
   is costed from the same run's gradient time.

The data are random tensors of CIFAR's shape (speed does not depend on pixel values; this machine
has no CIFAR). Usage: python benchmarks/bench_train.py [--device cpu|cuda] [--steps 60]
       python benchmarks/bench_train.py --engine-only [--dataset digits] [--models convnet]
           [--widths 4 8] [--steps 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from reference_trainer import _Run

from thermosgd.nn import Engine, TrainConfig
from thermosgd.nn.data import Dataset, load_dataset
from thermosgd.nn.models import build_model, scale_invariant_parameters

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


def thermosgd_steps(engine, steps, clock=time.perf_counter) -> float:
    """Seconds for ``steps`` engine steps and the log point's window close."""
    _sync(engine.device)
    start = clock()
    engine.advance(engine.iteration + steps)
    engine.close_window()
    _sync(engine.device)
    return clock() - start


def reference_steps(run, steps, clock=time.perf_counter) -> float:
    """The same for the single-run trainer the engine replaced."""
    _sync(run.device)
    start = clock()
    run._segment(run.iteration + steps, _NoBar())
    _sync(run.device)
    return clock() - start


def bench_engine(name, width, data, device, steps, rounds, clock=time.perf_counter):
    """Engine at G = 1 against the reference trainer: alternating rounds, same process.
    ``clock``: wall time, or with one torch thread ``time.thread_time`` (the CPU time of the
    one thread doing the work, which a busy shared machine does not inflate)."""
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, model=name,
                         width=width, iterations=10**7, queue_size=100, device=device)
    engine = Engine([config], data, device=device)
    run = _Run(config, data, device, None)
    thermosgd_steps(engine, 10)
    reference_steps(run, 10)
    new, old = [], []
    for _ in range(rounds):
        old.append(reference_steps(run, steps, clock) / steps)
        new.append(thermosgd_steps(engine, steps, clock) / steps)
    # same start, same batches, same kernels: the two trajectories must be bitwise equal
    same = torch.equal(engine.weights[0], run.w)
    return {"model": f"{name} k={width} (d={engine.d})", "old_ms": 1e3 * min(old),
            "new_ms": 1e3 * min(new), "old_median_ms": 1e3 * sorted(old)[len(old) // 2],
            "new_median_ms": 1e3 * sorted(new)[len(new) // 2],
            "ratios": [n / o for n, o in zip(new, old)], "bitwise": same}


def gradient_time(engine, batches) -> float:
    """Seconds per extra mini-batch gradient at a log point (the paper's sigma^2 estimate)."""
    x, y = engine.data.train_x, engine.data.train_y
    params = scale_invariant_parameters(engine.model)
    _sync(engine.device)
    start = time.perf_counter()
    for i in range(batches):
        idx = torch.arange(i * 128, (i + 1) * 128, device=engine.device)
        loss = F.cross_entropy(engine.model(x[idx]), y[idx])
        torch.autograd.grad(loss, params)
    _sync(engine.device)
    return (time.perf_counter() - start) / batches


def bench(name, data, device, steps):
    width, iterations, queue = SETUPS[name]
    config = TrainConfig(protocol="fixed-lr", learning_rate=0.01, weight_decay=1e-3, model=name,
                         width=width, iterations=iterations, queue_size=queue, device=device)
    run = Engine([config], data, device=device)
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
        w = run.weights[0]
        noise = torch.randn(queue, run.d, generator=torch.Generator().manual_seed(1)).to(device)
        run.queue.data[0].copy_(w + 1e-3 * w.norm() / run.d**0.5 * noise)
    run.iteration = queue * config.queue_every  # the queue counts as full
    _sync(device)
    start = time.perf_counter()
    row = run.measure()[0]
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
    parser.add_argument("--engine-only", action="store_true",
                        help="time the engine at G = 1 against the reference trainer only")
    parser.add_argument("--dataset", default="cifar-shaped", choices=["cifar-shaped", "digits"])
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="widths k for --engine-only (default: the paper's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"],
                        help="--engine-only: wall time, or the CPU time of one torch thread "
                             "(sets one thread; steady on a shared machine)")
    args = parser.parse_args()
    clock = time.perf_counter
    if args.clock == "thread":
        torch.set_num_threads(1)
        clock = time.thread_time
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    if args.engine_only:
        data = (load_dataset("digits", device=args.device) if args.dataset == "digits"
                else synthetic_cifar(args.device))
        print(f"# {args.dataset}, {args.steps} steps per round, {args.rounds} alternating rounds, "
              f"{args.clock} clock")
        print("| model | reference trainer (best / median) | engine G = 1 (best / median) | "
              "engine / reference (per round) | bitwise |")
        print("|---|---|---|---|---|")
        for name in args.models:
            for width in args.widths or [SETUPS[name][0]]:
                r = bench_engine(name, width, data, args.device, args.steps, args.rounds, clock)
                ratios = sorted(r["ratios"])
                print(f"| {r['model']} | {r['old_ms']:.2f} / {r['old_median_ms']:.2f} ms | "
                      f"{r['new_ms']:.2f} / {r['new_median_ms']:.2f} ms | median "
                      f"{ratios[len(ratios) // 2]:.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f}, "
                      f"best / best {r['new_ms'] / r['old_ms']:.3f} | {r['bitwise']} |",
                      flush=True)
        return
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
