"""What ``thermosgd.Monitor`` costs a training loop: time per step and extra memory.

Two loops: the paper's pre-activation ResNet-18 (BatchNorm, width k = 4 by default, 32 x 32
random images, SGD momentum 0.9 + weight decay) and a small pre-norm GPT-style language model
(token + position embedding, blocks of LayerNorm -> causal attention -> residual, LayerNorm ->
MLP -> residual, d_model 128, random tokens, AdamW). Each mode (no monitor, ``every`` = 10, 1)
trains its own copy of the model from the same weights, so every monitor runs in its steady
state (flushes every 100 logs included). The modes take turns in blocks of ``--steps`` steps, in
a rotating order, ``--repeats`` times; overhead = median time per step of a mode over the
median of the unmonitored copy, minus 1, by the wall clock and by the process's CPU time (on a
shared machine the CPU time does not count the time other processes hold the cores), and the
CPU time spent inside the monitor's own calls (its step hooks' work and its flushes, timed
call by call: the steadiest of the three where other processes share the cores; on CUDA it
counts launches, not kernels). On CUDA the clocks are read after ``torch.cuda.synchronize()``.

Memory, in units of the trained weights' bytes, for each ``every``: ``held``, the tensors the
monitor's device sums keep between steps (params and their gradients excluded; the log slots
held until a flush, ``flush_every`` x 12 x columns float64, are given apart: they scale with
the groups, not the weights), and ``step peak``, how far the allocations inside
``optimizer.step()`` (the monitor's hooks run there) rise above the unmonitored step's, over a
log and a whole noise window: CPU allocations from the profiler's memory events, CUDA from
``torch.cuda.max_memory_allocated``. Their sum bounds the monitor's extra peak (it is what the
step adds if the forward pass is not the peak).

Usage: python benchmarks/monitor_overhead.py [--models resnet18 transformer] [--steps 50]
       [--repeats 5] [--every 10 1] [--width 4] [--batch 16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import thermosgd
from thermosgd.nn import build_model


class _Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).split(d, 2))  # (B, heads, T, d / heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Pre-norm decoder: d_model 128, 4 heads, MLP 4 d_model."""

    def __init__(self, vocab: int = 256, context: int = 64, d: int = 128, blocks: int = 4):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*(_Block(d, 4) for _ in range(blocks)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1], device=tokens.device))
        return self.head(self.ln(self.blocks(x)))


def _loop(name, *, width, batch, device):
    """(model, optimizer factory, step(model, optimizer)) of one benchmark loop."""
    gen = torch.Generator().manual_seed(0)
    if name == "resnet18":
        model = build_model("resnet18", width=width)
        x = torch.randn(512, 3, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 10, (512,), generator=gen).to(device)

        def make_opt(m):
            return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

        def loss(m, idx):
            return F.cross_entropy(m(x[idx]), y[idx])
    else:
        model = TinyGPT()
        tokens = torch.randint(0, 256, (512, 65), generator=gen).to(device)

        def make_opt(m):
            return torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.1)

        def loss(m, idx):
            logits = m(tokens[idx, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   tokens[idx, 1:].reshape(-1))
    picks = torch.Generator().manual_seed(1)

    def forward_backward(m, opt):
        idx = torch.randint(0, 512, (batch,), generator=picks).to(device)
        opt.zero_grad()
        loss(m, idx).backward()
    return model.to(device), make_opt, forward_backward


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _held_bytes(stats, params) -> int:
    """Bytes of the tensors the monitor's device sums hold, params and grads excluded."""
    skip = {p.data_ptr() for p in params} | {p.grad.data_ptr() for p in params
                                             if p.grad is not None}
    seen, total, todo = set(), 0, [vars(stats)]
    while todo:
        item = todo.pop()
        if isinstance(item, torch.Tensor):
            ptr = item.untyped_storage().data_ptr()
            if ptr not in skip and ptr not in seen:
                seen.add(ptr)
                total += item.untyped_storage().nbytes()
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return total


def _step_peak(opt, device) -> int:
    """Bytes the allocations inside ``opt.step()`` rise above their level at its start."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        opt.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(str(Path(tmp) / "trace.json"))
        events = json.loads((Path(tmp) / "trace.json").read_text())["traceEvents"]
    level = peak = 0
    for e in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        level += e["args"]["Bytes"]
        peak = max(peak, level)
    return peak


def memory(model, make_opt, forward_backward, device, every) -> dict:
    """Bytes the monitor (``every``) holds and adds to the step's peak, and the weights'."""
    out, steps = {}, max(every, 6)  # a log, a whole noise window (5 steps) and its close
    for monitored in (False, True):
        m = copy.deepcopy(model)
        opt = make_opt(m)
        mon = thermosgd.Monitor(m, opt, every=every) if monitored else None
        for _ in range(2 * steps):  # buffers made on first use exist before measuring
            forward_backward(m, opt)
            opt.step()
        peaks = []
        for _ in range(steps):
            forward_backward(m, opt)
            peaks.append(_step_peak(opt, device))
        out["monitored" if monitored else "plain"] = max(peaks)
        if mon is not None:
            params = [p for p in m.parameters() if p.requires_grad]
            out["held"] = _held_bytes(mon._stats, params)
            out["log_slots"] = mon._stats.buffer.untyped_storage().nbytes()
            out["columns"] = mon._stats.buffer.shape[-1]
            out["weights"] = sum(p.numel() * p.element_size() for p in params)
            mon.close()
    out["step_peak"] = max(out["monitored"] - out["plain"], 0)
    return out


def _count_cpu(mon, spent: list) -> None:
    """Add the CPU time of the monitor's work (its hooks' calls, flushes included) to
    ``spent[0]``."""
    def timed(f):
        def call(*args, **kwargs):
            start = time.process_time()
            try:
                return f(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - start
        return call
    # the hooks are bound at registration; what they call is looked up at each call
    mon._start, mon.flush = timed(mon._start), timed(mon.flush)
    mon._stats.after, mon._adam_state = timed(mon._stats.after), timed(mon._adam_state)


def timing(model, make_opt, forward_backward, device, *, everies, steps, repeats) -> dict:
    """Median seconds per step (wall, CPU) of each mode, blocks interleaved, and the CPU
    seconds per step spent in the monitor's own calls."""
    runs, spent = {}, {}
    for every in (None, *everies):
        m = copy.deepcopy(model)
        opt = make_opt(m)
        mon = thermosgd.Monitor(m, opt, every=every) if every is not None else None
        for _ in range(3):  # warm-up; the groups are found on the first step
            forward_backward(m, opt)
            opt.step()
        if mon is not None:
            spent[every] = [0.0]
            _count_cpu(mon, spent[every])
        runs[every] = (m, opt, mon)
    modes = list(runs)
    times = {e: ([], []) for e in modes}
    for r in range(repeats):
        for every in modes[r % len(modes):] + modes[:r % len(modes)]:
            m, opt, _ = runs[every]
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                forward_backward(m, opt)
                opt.step()
            _sync(device)
            times[every][0].append((time.perf_counter() - wall) / steps)
            times[every][1].append((time.process_time() - cpu) / steps)
    for _, _, mon in runs.values():
        if mon is not None:
            mon.close()
    return {e: (statistics.median(w), statistics.median(c),
                spent[e][0] / (steps * repeats) if e in spent else 0.0)
            for e, (w, c) in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "transformer"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--width", type=int, default=4, help="ResNet-18 width k")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"thermosgd from {Path(thermosgd.__file__).parent}; torch {torch.__version__}, "
          f"{device}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no scale-invariant group in the GPT, a stem shortcut
        for name in args.models:
            model, make_opt, forward_backward = _loop(name, width=args.width, batch=args.batch,
                                                      device=device)
            d = sum(p.numel() for p in model.parameters() if p.requires_grad)
            t = timing(model, make_opt, forward_backward, device, everies=args.every,
                       steps=args.steps, repeats=args.repeats)
            base_wall, base_cpu, _ = t[None]
            print(f"{name} ({d} trained weights, batch {args.batch}): unmonitored "
                  f"{1e3 * base_wall:.2f} ms wall, {1e3 * base_cpu:.2f} ms CPU per step "
                  f"(median of {args.repeats} blocks of {args.steps} steps)")
            for every in args.every:
                wall, cpu, own = t[every]
                print(f"  every={every:>3}: overhead {100 * (wall / base_wall - 1):+.1f} % wall, "
                      f"{100 * (cpu / base_cpu - 1):+.1f} % CPU; the monitor's own calls "
                      f"{100 * own / base_cpu:.1f} % of the unmonitored CPU time")
            for every in args.every:
                mem = memory(model, make_opt, forward_backward, device, every)
                w, held = mem["weights"], mem["held"] - mem["log_slots"]
                print(f"  memory every={every:>3}: held {held / w:.2f}x weights (+ log slots "
                      f"{mem['log_slots'] / 2**20:.2f} MiB, {mem['columns']} columns), step "
                      f"peak {mem['step_peak'] / w:.2f}x, sum {(held + mem['step_peak']) / w:.2f}x"
                      f" (weights {w / 2**20:.2f} MiB)")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
