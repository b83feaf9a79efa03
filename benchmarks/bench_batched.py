"""Engine throughput at G >= 1: configuration-steps per second, by mechanism, against one-at-a-time.

For ConvNet k=8 and ResNet-18 k=4 at batch 128 (32 px CIFAR-shaped random inputs), fixed LR,
configurations with different learning rates and seeds, this times:
- the research-style loop (``bench_train.research_loop``) and the engine at G = 1 ("single"):
  G configurations one after another cost G times their time per step;
- ``thermosgd.nn.Engine`` with G configurations, by mechanism:
  "loop" (G modules on the stacked state, differentiated in turn), "vmap" (one torch.func.vmap
  call, which PyTorch lowers to grouped convolutions), "vmap+compile" (the vmapped gradient
  under torch.compile; mode "reduce-overhead", i.e. CUDA graphs, on a GPU);
- "grouped" (ConvNet only): a hand-written network holding the G ConvNets as one, with
  groups=G convolutions and BatchNorm over the G*C channels, trained by plain autograd, to see
  whether vmap's machinery costs anything over writing the grouped model by hand.

Every case runs in its own process so that its peak memory is its own (CPU: ru_maxrss, which
includes the ~0.6 GB synthetic dataset and PyTorch itself; CUDA: torch.cuda.max_memory_allocated).
A case's steps are timed after warm-up steps (compilation happens there). Each batched case also
reports how far configuration 0 drifted from its run alone (the engine at G = 1) over the
warm-up and timed steps (relative weight difference): 0 means bitwise the same trajectory.

``--alternate`` instead times, in one process and alternating round by round, the engine at
G = 1 and the "loop" and "vmap" mechanisms at each G, on scikit-learn's digits (ConvNet,
``--width``), by the CPU time of one torch thread (``time.thread_time``), which a shared,
busy machine does not inflate the way it inflates wall time.

Usage: cd benchmarks && python bench_batched.py [--device cpu|cuda] [--groups 1 8 32 95]
       [--engines ...] [--models convnet resnet18] [--steps 3]
       python bench_batched.py --alternate [--groups 8] [--width 4] [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from bench_train import _sync, research_loop, synthetic_cifar
from torch import nn

from thermosgd.nn import Engine, TrainConfig
from thermosgd.nn.models import BN_EPS, build_model

WIDTH = {"convnet": 8, "resnet18": 4}
ENGINES = ("research", "single", "loop", "vmap", "vmap+compile", "grouped")
WARMUP = {"vmap+compile": 2}  # steps before timing (compilation); others 1


def configs(name, g, device):
    rates = np.geomspace(1e-3, 1e-1, g) if g > 1 else np.array([1e-2])
    return [TrainConfig(protocol="fixed-lr", learning_rate=float(lr), weight_decay=1e-3,
                        seed=i, model=name, width=WIDTH[name], iterations=10**6, queue_size=8,
                        device=device) for i, lr in enumerate(rates)]


class GroupedConvNet(nn.Module):
    """G scale-invariant ConvNets as one network: the input (G, B, C, H, W) becomes
    (B, G*C, H, W), every convolution has groups=G, and BatchNorm over G*C channels normalizes
    each configuration's channels over its own batch; the frozen head is shared."""

    def __init__(self, template: nn.Module, g: int):
        super().__init__()
        convs = [m for m in template.features if isinstance(m, nn.Conv2d)]
        self.g = g
        self.weights = nn.ParameterList(
            [nn.Parameter(c.weight.detach().repeat(g, 1, 1, 1)) for c in convs])
        for i, c in enumerate(convs):
            self.register_buffer(f"mean{i}", torch.zeros(g * c.out_channels))
            self.register_buffer(f"var{i}", torch.ones(g * c.out_channels))
        self.head = template.head

    def forward(self, x):  # (G, B, C, H, W) -> (G, B, classes)
        g, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, -1, *x.shape[3:])
        for i, w in enumerate(self.weights):
            h = F.conv2d(h, w, padding=1, groups=self.g)
            h = F.batch_norm(h, getattr(self, f"mean{i}"), getattr(self, f"var{i}"),
                             training=True, eps=BN_EPS)
            h = torch.relu(h)
            if i > 0:
                h = F.max_pool2d(h, 2)
        h = h.amax(dim=(2, 3)).view(b, g, -1).transpose(0, 1)  # (G, B, 8k)
        return self.head(h)


def time_grouped(name, g, data, device, steps):
    if name != "convnet":
        raise ValueError("the hand-written grouped model exists for the ConvNet only")
    model = GroupedConvNet(build_model(name, width=WIDTH[name]), g).to(device)
    lr = torch.as_tensor(np.geomspace(1e-3, 1e-1, g) if g > 1 else [1e-2],
                         dtype=torch.float32, device=device)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(g)]
    params = list(model.weights)

    def step():
        idx = torch.stack([torch.randint(0, data.num_train, (128,), generator=gen,
                                         device=device) for gen in gens])  # (G, B)
        logits = model(data.train_x[idx])
        # sum over configurations of each one's mean loss: the gradients stay separate
        loss = F.cross_entropy(logits.flatten(0, 1), data.train_y[idx].flatten(),
                               reduction="none").view(g, -1).mean(1).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, gr in zip(params, grads):  # per-configuration lr: rows of G blocks
                rate = lr.repeat_interleave(p.shape[0] // g).view(-1, 1, 1, 1)
                p.sub_(rate * (gr + 1e-3 * p))

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps, None


def time_engine(name, engine, g, data, device, steps):
    """Seconds per step of G configurations, and config 0's relative drift from a single run."""
    if engine == "grouped":
        return time_grouped(name, g, data, device, steps)
    cfgs = configs(name, g, device)
    warm = WARMUP.get(engine, 1)
    if engine == "research":
        model = build_model(name, width=WIDTH[name]).to(device).train()
        research_loop(model, data, warm, device=device)
        return research_loop(model, data, steps, device=device) / steps, None
    if engine == "single":
        run = Engine(cfgs[:1], data, device=device)
        run.advance(warm)
        _sync(device)
        start = time.perf_counter()
        run.advance(warm + steps)
        _sync(device)
        return (time.perf_counter() - start) / steps, None
    mechanism = "loop" if engine == "loop" else "vmap"
    batch = Engine(cfgs, data, device=device, mechanism=mechanism)
    if engine == "vmap+compile":
        mode = "reduce-overhead" if torch.device(device).type == "cuda" else "default"
        batch._vgrad = torch.compile(batch._vgrad, mode=mode)  # a benchmark-only experiment
    batch.advance(warm)
    _sync(device)
    start = time.perf_counter()
    batch.advance(warm + steps)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    reference = Engine(cfgs[:1], data, device=device)
    reference.advance(warm + steps)
    drift = float((batch.weights[0] - reference.weights[0]).norm() / reference.weights[0].norm())
    return seconds, drift


def alternate(groups, width, steps, rounds):
    """Configuration-steps per CPU-second of one thread: G = 1 against loop and vmap at G."""
    from thermosgd.nn.data import load_dataset

    torch.set_num_threads(1)
    data = load_dataset("digits")
    print(f"# digits, ConvNet k={width}, one torch thread, CPU time, {steps} steps per round, "
          f"{rounds} alternating rounds (best round)")
    print("| G | engine G = 1 | loop | vmap | loop / G = 1 | vmap / G = 1 | loop drift |")
    print("|---|---|---|---|---|---|---|")
    for g in groups:
        cfgs = [TrainConfig(protocol="fixed-lr", learning_rate=float(lr), weight_decay=1e-3,
                            seed=i, model="convnet", width=width, iterations=10**7,
                            queue_size=8, device="cpu")
                for i, lr in enumerate(np.geomspace(1e-3, 1e-1, g) if g > 1 else [1e-2])]
        engines = {"single": Engine(cfgs[:1], data), "loop": Engine(cfgs, data, mechanism="loop"),
                   "vmap": Engine(cfgs, data, mechanism="vmap")}
        best = dict.fromkeys(engines, math.inf)
        for engine in engines.values():
            engine.advance(2)
        for _ in range(rounds):
            for name, engine in engines.items():
                start = time.thread_time()
                engine.advance(engine.iteration + steps)
                best[name] = min(best[name], (time.thread_time() - start) / steps)
        rate = {k: (1 if k == "single" else g) / v for k, v in best.items()}  # config-steps/s
        drift = float((engines["loop"].weights[0] - engines["single"].weights[0]).norm())
        print(f"| {g} | {rate['single']:.1f} /s | {rate['loop']:.1f} /s | {rate['vmap']:.1f} /s "
              f"| {rate['loop'] / rate['single']:.2f}x | {rate['vmap'] / rate['single']:.2f}x "
              f"| {drift:.1e} |", flush=True)


def _peak_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def one_case(args):
    torch.manual_seed(0)
    data = synthetic_cifar(args.device)
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, drift = time_engine(args.models[0], args.engines[0], args.groups[0], data,
                                 args.device, args.steps)
    print(json.dumps({"seconds": seconds, "drift": drift, "peak_mb": _peak_mb(args.device)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8, 32, 95])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--models", nargs="+", default=list(WIDTH), choices=list(WIDTH))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile-max-g", type=int, default=None,
                        help="skip vmap+compile above this G (compiling is slow on CPU)")
    parser.add_argument("--alternate", action="store_true",
                        help="G = 1, loop and vmap alternating in one process, on digits")
    parser.add_argument("--width", type=int, default=4, help="--alternate: ConvNet width k")
    parser.add_argument("--rounds", type=int, default=5, help="--alternate: rounds")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_case(args)
    if args.alternate:
        return alternate(args.groups, args.width, args.steps, args.rounds)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        platform.processor() or platform.machine())
    print(f"# {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {args.device}, {args.steps} timed steps per case")
    print("| model | engine | G | s/step | config-steps/s | vs research loop | "
          "drift from single run | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        research = None
        for engine in args.engines:
            for g in ([1] if engine in ("research", "single") else args.groups):
                if engine == "grouped" and model != "convnet":
                    continue
                if engine == "vmap+compile" and args.compile_max_g and g > args.compile_max_g:
                    continue
                cmd = [sys.executable, __file__, "--one", "--device", args.device, "--models",
                       model, "--engines", engine, "--groups", str(g), "--steps",
                       str(args.steps)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                    print(f"| {model} | {engine} | {g} | failed: {tail[0]} |||||", flush=True)
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                if engine == "research":
                    research = r["seconds"]
                rate = g / r["seconds"]
                versus = f"{rate * research:.2f}x" if research else "-"
                drift = "-" if r["drift"] is None else f"{r['drift']:.1e}"
                print(f"| {model} | {engine} | {g} | {r['seconds']:.3f} | {rate:.1f} | {versus} | "
                      f"{drift} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
