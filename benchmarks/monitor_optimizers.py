"""The Monitor's predictions on a real network, for every optimizer, against a frozen-weight probe.

The paper's ConvNet (thermosgd.nn, k = 8, BatchNorm without affine parameters, frozen head) on
scikit-learn's digits at 8 px with 30 % of the labels random, batch 32, monitored every 10 steps with a 10-step noise window,
trained by plain SGD (lr 1.0), heavy ball and Nesterov (lr 0.1, momentum 0.9: the same
SGD-equivalent rate) and AdamW (lr 4e-3, betas (0.9, 0.999)), weight decay 5e-3 (AdamW 0.5).

Per layer (median over its per-channel groups) and for the union of all groups, over the last
30 logs (``analysis.monitor.stationary_groups``: sqrt(mean r^2) against (mean r*^4)^(1/4), rms
angles): the norm against the predicted r* (SDE from Tr Sigma; the optimizer's discrete
balance), the rms angle per step against its prediction, Z, and the full-batch share rho.

Then the probes: at ``--probes`` points of the last 300 steps, between two steps, ``--probe``
mini-batch gradients at the frozen weights (BatchNorm in train mode, as in training) give the
union's Tr Sigma (their sample covariance trace) and ||grad L||^2 (the squared mean less
Tr Sigma / probe), on the unit sphere; their mean against the monitor's estimate averaged over
the last 30 logs.

Usage: python benchmarks/monitor_optimizers.py [--out runs/optimizers] [--steps 3000]
       [--runs sgd momentum nesterov adamw] [--probe 200] [--probes 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import thermosgd
from thermosgd.analysis.monitor import stationary_groups
from thermosgd.nn import build_model
from thermosgd.results import monitordir

RUNS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=1.0, weight_decay=5e-3),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=5e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=4e-3, weight_decay=0.5),
}


def digits(label_noise=0.3):
    """The digits with a fixed share of labels drawn at random (as the digits sweep presets):
    a network that cannot fit them keeps a floor of gradient noise, so a stationary state
    exists instead of appendix H's convergence."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target)
    gen = torch.Generator().manual_seed(1)
    flip = torch.rand(len(y), generator=gen) < label_noise
    y = torch.where(flip, torch.randint(0, 10, (len(y),), generator=gen), y)
    return (x - x.mean()) / x.std(), y


def batches(x, y, steps, batch_size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        yield x[idx], y[idx]


def run(name, out, steps, probes=0, probe_batches=200):
    """Train under the monitor; ``probes`` frozen-weight probes spread over the last 300 steps
    (the stationary window), each of ``probe_batches`` batch gradients: a list of (step,
    Tr Sigma, ||grad L||^2)."""
    torch.manual_seed(0)
    model = build_model("convnet", width=8, in_channels=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = RUNS[name](params)
    x, y = digits()
    at = set(np.linspace(steps - 300, steps, probes).astype(int).tolist()) if probes else set()
    probed = []
    with thermosgd.Monitor(model, optimizer, out=out, every=10, noise_window=10,
                           overwrite=True) as monitor:
        for step, (xb, yb) in enumerate(batches(x, y, steps)):
            if step in at:  # between two steps: the monitor's hooks see none of it
                probed.append((step, *probe(model, monitor, probe_batches, seed=step)))
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model, monitor, float(loss.detach()), probed


def probe(model, monitor, count, seed=12345):
    """Union Tr Sigma and ||grad L||^2 on the unit sphere from ``count`` batch gradients."""
    names = {n for g in monitor._groups for n in g.params}  # the scale-invariant weights
    params = [p for n, p in model.named_parameters() if n in names]
    radius2 = float(sum((p.detach().double() ** 2).sum() for p in params))
    x, y = digits()
    grads = []
    for xb, yb in batches(x, y, count, seed=10_000 + seed):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        grads.append(torch.cat([p.grad.detach().double().reshape(-1) for p in params]))
    g = torch.stack(grads)  # (count, D)
    mean = g.mean(0)
    trace = float(((g - mean) ** 2).sum(1).mean() * count / (count - 1))
    full = float((mean @ mean)) - trace / count
    return radius2 * trace, radius2 * full


def per_layer(table):
    si = table[table["scale_invariant"].astype(bool) & (table["group"] != "all")]
    si = si[si["radius_theory"] > 0]  # idle channels have nothing to predict
    rows = []
    for layer, g in si.groupby("layer", sort=False):
        rows.append((layer, len(g), int(g["d"].iloc[0]),
                     (g["norm"] / g["radius_theory"] - 1).median(),
                     (g["norm"] / g["radius_theory_corrected"] - 1).median(),
                     (g["norm"] / g["radius_theory_corrected"] - 1).abs().max(),
                     (g["angular_update"] / g["angular_update_theory"] - 1).median(),
                     g["compressibility"].median(),
                     (g["full_grad_norm2"] / g["trace_cov"]).median(),
                     ", ".join(f"{k} {v}" for k, v in g["regime"].value_counts().items())))
    u = table[table["group"] == "all"].iloc[0]
    rows.append(("union", 1, int(u["d"]), u["norm"] / u["radius_theory"] - 1,
                 u["norm"] / u["radius_theory_corrected"] - 1,
                 abs(u["norm"] / u["radius_theory_corrected"] - 1),
                 u["angular_update"] / u["angular_update_theory"] - 1, u["compressibility"],
                 u["full_grad_norm2"] / u["trace_cov"], u["regime"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/optimizers")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--probe", type=int, default=200, help="batch gradients per probe")
    parser.add_argument("--probes", type=int, default=6, help="probes in the last 300 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.runs:
        out = Path(args.out) / name
        start = time.perf_counter()
        model, monitor, loss, probed = run(name, out, args.steps, args.probes, args.probe)
        metrics = monitordir.read_metrics(out)
        table = stationary_groups(metrics, 30)
        print(f"\n### {name} (final batch loss {loss:.3f}, {time.perf_counter() - start:.0f} s)\n")
        print("| layer | groups | d | norm vs r* SDE | vs r* discrete (max abs) | rms angle vs "
              "prediction | Z | rho | regimes |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in per_layer(table):
            print(f"| {r[0]} | {r[1]} | {r[2]} | {100 * r[3]:+.1f} % | {100 * r[4]:+.1f} % "
                  f"({100 * r[5]:.1f} %) | {100 * r[6]:+.1f} % | {r[7]:.3f} | {r[8]:.3f} | "
                  f"{r[9]} |")
        union = metrics[metrics["group"] == "all"].sort_values("step").tail(30)
        trace, full = np.mean([p[1] for p in probed]), np.mean([p[2] for p in probed])
        print(f"\nunion, monitor (last 30 logs) against {len(probed)} frozen-weight probes of "
              f"{args.probe} batches in the last 300 steps: Tr Sigma "
              f"{union['trace_cov'].mean():.4g} vs {trace:.4g} "
              f"({100 * (union['trace_cov'].mean() / trace - 1):+.1f} %), ||grad L||^2 "
              f"{union['full_grad_norm2'].mean():.4g} vs {full:.4g}, rho "
              f"{union['full_grad_norm2'].mean() / union['trace_cov'].mean():.3f} vs "
              f"{full / trace:.3f}")
    print(f"\nnumpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
