"""Two checks of rows the Monitor predicts beyond one scale-invariant group with one decay rate.

``radial``: weight matrices that are not scale-invariant (softmax regression and a one-hidden-
layer MLP on scikit-learn's digits with 30 % random labels, plain SGD and heavy ball 0.9, weight
decay 1e-2, 6000 steps), their norm against the rotational-equilibrium r* and the gradient's
radial push kappa (``radial_force``): the balance with the push reads r^4 (1 + kappa) = r*^4.

``mixed``: a Linear -> LayerNorm layer (scale-invariant with its bias) whose bias decays at
another rate, or not at all (the usual recipe), predicted with the norm-weighted decay
lambda = sum_k lambda_k |w_k|^2 / |w|^2 (``thermosgd.monitor.columns``); frozen head, 8000 steps.

Both average the logs of the last half (``mon.state()`` every 100 steps): r / r* as
sqrt(mean r^2) / (mean r*^4)^(1/4), the rms angle per step against its prediction.

Usage: python benchmarks/monitor_radial.py [radial] [mixed]
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import thermosgd

OPTIMIZERS = {"sgd": dict(lr=0.5), "momentum": dict(lr=0.05, momentum=0.9)}


def digits():
    data = load_digits()
    x, y = torch.tensor(data.data, dtype=torch.float32) / 16, torch.tensor(data.target)
    gen = torch.Generator().manual_seed(1)
    flip = torch.rand(len(y), generator=gen) < 0.3
    return x, torch.where(flip, torch.randint(0, 10, (len(y),), generator=gen), y)


def run(model, opt, steps):
    """The Monitor's last-log rows every 100 steps of the second half."""
    x, y = digits()
    gen, kept = torch.Generator().manual_seed(2), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no scale-invariant group": known here
        with thermosgd.Monitor(model, opt, every=5, noise_window=5) as mon:
            for t in range(steps):
                i = torch.randint(0, len(x), (32,), generator=gen)
                loss = F.cross_entropy(model(x[i]), y[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if t % 100 == 99 and t >= steps // 2:
                    kept.append(mon.state())
    return pd.concat(kept)


def ratios(rows):
    r = np.sqrt(np.mean(rows["norm"] ** 2)) / np.mean(rows["radius_theory_corrected"] ** 4) ** 0.25
    angle = np.sqrt(np.mean(rows["angular_update"] ** 2)) / rows["angular_update_theory"].mean()
    return r, angle


def radial():
    print(f"{'optimizer':9s} {'matrix':9s} {'kappa':>7s} {'r/r*':>6s} {'(1+kappa)^-1/4':>15s} "
          f"{'angle/pred':>10s}")
    for name, options in OPTIMIZERS.items():
        for hidden in (False, True):
            torch.manual_seed(0)
            model = (torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                         torch.nn.Linear(32, 10)) if hidden
                     else torch.nn.Linear(64, 10))
            rows = run(model, torch.optim.SGD(model.parameters(), weight_decay=1e-2, **options),
                       6000)
            for layer, m in rows[rows["level"] == "layer"].groupby("layer"):
                kappa = m["radial_force"].mean()
                r, angle = ratios(m)
                print(f"{name:9s} {layer:9s} {kappa:7.3f} {r:6.3f} {(1 + kappa) ** -0.25:15.3f} "
                      f"{angle:10.3f}")


def mixed():
    print(f"{'bias decay':>10s} {'optimizer':9s} {'r/r*':>6s} {'angle/pred':>10s} "
          f"{'lambda shown':>12s}")
    for bias_decay in (5e-3, 1e-3, 0.0):
        for name, options in OPTIMIZERS.items():
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(64, 32),
                                        torch.nn.LayerNorm(32, elementwise_affine=False),
                                        torch.nn.ReLU(), torch.nn.Linear(32, 10))
            model[3].requires_grad_(False)
            opt = torch.optim.SGD([{"params": [model[0].weight], "weight_decay": 5e-3},
                                   {"params": [model[0].bias], "weight_decay": bias_decay}],
                                  **options)
            rows = run(model, opt, 8000)
            m = rows[rows["group"] == "0.weight"]
            r, angle = ratios(m)
            print(f"{bias_decay:10g} {name:9s} {r:6.3f} {angle:10.3f} "
                  f"{m['weight_decay'].mean():12.3e}")


if __name__ == "__main__":
    for part in sys.argv[1:] or ["radial", "mixed"]:
        {"radial": radial, "mixed": mixed}[part]()
