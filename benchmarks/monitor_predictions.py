"""How close the predicted equilibrium norm and angle per step come, per group, in monitored runs.

Runs (each monitored with thermosgd.Monitor, every = 10, noise_window = 10, into OUT/<run>):
- ``example-sgd``, ``example-adamw``: examples/monitor_digits.py's CNN (BatchNorm with affine
  parameters, conv biases) on scikit-learn's digits, batch 32, SGD momentum 0.9 (lr 0.1,
  weight decay 5e-3) and AdamW (lr 4e-3, weight decay 0.5);
- ``convnet-momentum``: the paper's ConvNet (thermosgd.nn, BatchNorm without affine, frozen head)
  k = 8 on digits at 8 px, SGD momentum 0.9, lr 0.1, weight decay 5e-3, batch 32.
Per group, the stationary state is the last 30 logs (analysis.monitor.stationary_groups: sqrt of
the mean r^2 against (mean r*^4)^(1/4)); printed per layer: the median and the largest relative
error of the norm against r* (SDE and appendix-G corrected) and the median ratio of the angle
per step to its equilibrium value, with the groups' regimes.

Usage: python benchmarks/monitor_predictions.py [--out runs/predictions] [--steps 3000]
       [--runs example-sgd example-adamw convnet-momentum]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import monitor_digits  # noqa: E402

import thermosgd  # noqa: E402
from thermosgd.analysis.monitor import stationary_groups  # noqa: E402
from thermosgd.nn import build_model  # noqa: E402
from thermosgd.results import monitordir  # noqa: E402

RUNS = {
    "example-sgd": (lambda: monitor_digits.CNN(),
                    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3)),
    "example-adamw": (lambda: monitor_digits.CNN(),
                      lambda p: torch.optim.AdamW(p, lr=4e-3, weight_decay=0.5)),
    "convnet-momentum": (lambda: build_model("convnet", width=8, in_channels=1),
                         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3)),
}


def run(name, out, steps):
    make_model, make_optimizer = RUNS[name]
    torch.manual_seed(0)
    model = make_model()
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    x, y = monitor_digits.digits()
    with thermosgd.Monitor(model, optimizer, out=out, every=10, noise_window=10,
                           overwrite=True) as monitor:
        loss = monitor_digits.train(model, optimizer, x, y, steps=steps)
    return loss, monitor


def per_layer(table):
    si = table[table["scale_invariant"].astype(bool) & (table["group"] != "all")]
    lines = []
    for layer, g in si.groupby("layer", sort=False):
        sde = (g["norm"] / g["radius_theory"] - 1).abs()
        cor = (g["norm"] / g["radius_theory_corrected"] - 1).abs()
        angle = g["angular_update"] / g["angular_update_theory"]
        regimes = g["regime"].value_counts().to_dict()
        lines.append(f"| {layer} | {len(g)} | {int(g['d'].iloc[0])} | {100 * sde.median():.1f} % "
                     f"| {100 * cor.median():.1f} % (max {100 * cor.max():.1f} %) | "
                     f"{angle.median():.3f} ({angle.min():.2f}-{angle.max():.2f}) | "
                     f"{', '.join(f'{k} {v}' for k, v in regimes.items())} |")
    union = table[table["group"] == "all"].iloc[0]
    lines.append(f"| union | 1 | {int(union['d'])} | "
                 f"{100 * abs(union['norm'] / union['radius_theory'] - 1):.1f} % | "
                 f"{100 * abs(union['norm'] / union['radius_theory_corrected'] - 1):.1f} % | "
                 f"{union['angular_update'] / union['angular_update_theory']:.3f} | "
                 f"{union['regime']} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/predictions")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", nargs="+", default=list(RUNS))
    parser.add_argument("--reuse", action="store_true", help="analyse existing runs only")
    args = parser.parse_args(argv)
    for name in args.runs:
        out = Path(args.out) / name
        if not args.reuse:
            loss, _ = run(name, out, args.steps)
            print(f"{name}: final batch loss {loss:.3f}")
        table = stationary_groups(monitordir.read_metrics(out), 30)
        print(f"\n{name} (stationary: last 30 logs)\n")
        print("| layer | groups | d per group | norm vs r* SDE, median | vs r* appendix G | "
              "angle / equilibrium, median (range) | regimes |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(per_layer(table)))
    print(f"\nnumpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
