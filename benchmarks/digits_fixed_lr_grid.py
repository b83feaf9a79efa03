"""A CPU-scale real run: ConvNet k=8 on scikit-learn's digits, fixed LR, a 3 x 3 (eta, lambda) grid.

Each configuration runs 8000 steps at batch 128 (stationary well before: the radius and the
running gradient norm level off within ~2000 steps at these eta * lambda); stationary values are
means over the last 30 of 70 logs. Prints the measured r* against the SDE radius (eq. 20) and
the appendix-G corrected radius (eq. 119), both with E||grad L_B(w_bar)||^2 from the running
mean over training steps and from the log points' Tr Sigma + ||grad L||^2.

Usage: python benchmarks/digits_fixed_lr_grid.py OUT_DIR   (about 20 minutes on 2 cores)
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pandas as pd

from thermosgd.nn.data import load_dataset
from thermosgd.nn import TrainConfig, train

LEARNING_RATES = (0.2, 0.4, 0.8)
WEIGHT_DECAYS = (0.02, 0.04, 0.08)


def run_grid(out: Path) -> pd.DataFrame:
    data = load_dataset("digits")
    rows = []
    for lr, wd in itertools.product(LEARNING_RATES, WEIGHT_DECAYS):
        config = TrainConfig(protocol="fixed-lr", learning_rate=lr, weight_decay=wd,
                             model="convnet", width=8, iterations=8000, log_every=200,
                             log_linear_until=2000, log_points=60, stationary_logs=30,
                             queue_size=200, measure_passes=2, device="cpu")
        start = time.time()
        result = train(config, out / f"lr{lr}-wd{wd}", dataset=data, progress=False)
        rows.append({"lr": lr, "wd": wd, "status": result.summary["status"],
                     "seconds": time.time() - start, **result.summary["stationary"]})
    table = pd.DataFrame(rows)
    table.to_csv(out / "stationary.csv", index=False)
    return table


def markdown(table: pd.DataFrame) -> str:
    lines = ["| eta | lambda | train loss | test acc | r* measured | SDE (eq. 20) | corrected, "
             "running mean (eq. 119) | corrected, log points | Tr Sigma +- SE | ||grad L||^2 | "
             "running E||grad L_B||^2 |", "|" + "---|" * 11]
    for _, r in table.iterrows():
        def rel(col, r=r):
            return f"{r[col]:.2f} ({100 * (r[col] - r.radius) / r.radius:+.0f} %)"
        lines.append(
            f"| {r.lr:g} | {r.wd:g} | {r.train_loss:.3f} | {r.test_acc:.3f} | {r.radius:.2f} | "
            f"{rel('radius_theory')} | {rel('radius_theory_corrected')} | "
            f"{rel('radius_theory_corrected_logpoint')} | {r.trace_cov:.1f} +- "
            f"{r.trace_cov_se:.1f} | {r.full_grad_norm2:.1f} | {r.stoch_grad_norm2:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run_grid(Path(sys.argv[1]))))
