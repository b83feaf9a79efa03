"""Tables for benchmarks/RESULTS.md from the optimizer sweeps on digits (the TOML files beside).

Reads each sweep directory's runs, recomputes the theory columns from every log point's
measured inputs with today's formulas (``thermosgd.nn.measure.optimizer_columns``; so sweeps
written by earlier code read alike), averages the last ``stationary_logs`` logs, and prints
Markdown: measured r* against the SDE radius, the discrete-step radius of the optimizer and
appendix G's SGD form, the angle per step against its prediction, and AdamW's preconditioner.

Usage: python benchmarks/digits_optimizers/summarize.py SWEEP_DIR [SWEEP_DIR ...]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.nn.config import TrainConfig
from thermosgd.nn.measure import optimizer_columns


def _stationary(run: Path) -> dict | None:
    summary = json.loads((run / "summary.json").read_text())
    if summary["status"] != "finished":
        return None
    config = TrainConfig(**summary["config"])
    metrics = pd.read_parquet(run / "metrics.parquet").tail(config.stationary_logs)
    protocol, opt, d = config.make_protocol(), config.optimizer_record, summary["d"]
    rows = []
    for _, m in metrics.iterrows():
        c = m.get("preconditioner")
        cols = optimizer_columns(
            protocol, opt, d, radius=m["radius"], trace_cov=m["trace_cov"],
            full_grad_norm2=m["full_grad_norm2"], stoch_grad_norm2=m["stoch_grad_norm2"],
            angular_update=m.get("angular_update", math.nan),
            preconditioner=None if c is None or not np.isfinite(c) else c)
        rows.append({k: m[k] for k in ("radius", "train_loss", "test_acc", "trace_cov",
                                       "full_grad_norm2", "stoch_grad_norm2", "temperature")}
                    | cols)
    mean = pd.DataFrame(rows).mean(numeric_only=True).to_dict()
    if opt.name == "sgd":  # the protocol's own columns, as logged
        for key in ("radius_theory", "radius_theory_corrected"):
            mean[key] = float(metrics[key].mean())
        mean["radius_theory_corrected_sgd_form"] = mean["radius_theory_corrected"]
    return {"optimizer": opt.label, "lr": config.learning_rate, "wd": config.weight_decay,
            "d": d} | mean


def adamw_table(table: pd.DataFrame) -> str:
    """AdamW's preconditioner and the ideal gas law with its effective pressure p = lambda c.

    Measured c against the spread-noise value sqrt(Q / d) / r + eps; Z = pV / (RT) with
    T = eta sigma^2 / (2 r^2 c) and p = lambda c from the measured c, r and Tr Sigma:
    Z = 2 lambda c^2 r^4 / (eta Q), with Q = Tr Sigma (SDE) or the running E||grad L_B||^2."""
    from thermosgd.theory.optimizers import adamw_preconditioner

    lines = ["| eta | lambda | r* measured | eta d / (2 lambda), sqrt | c measured | "
             "sqrt(Tr Sigma / d) / r | Z (Tr Sigma) | Z (E g_B^2) |", "|" + "---|" * 8]
    for _, r in table[table["optimizer"].str.startswith("adamw")].iterrows():
        spread = float(adamw_preconditioner(r.trace_cov, r.radius, r.d, 1e-8))
        z = 2 * r.wd * r.preconditioner**2 * r.radius**4 / r.lr
        lines.append(f"| {r.lr:g} | {r.wd:g} | {r.radius:.3f} | "
                     f"{math.sqrt(r.lr * r.d / (2 * r.wd)):.3f} | {r.preconditioner:.4g} | "
                     f"{spread:.4g} | {z / r.trace_cov:.3f} | {z / r.stoch_grad_norm2:.3f} |")
    return "\n".join(lines)


def _pct(value, reference):
    return f"{100 * (value - reference) / reference:+.1f} %"


def markdown(table: pd.DataFrame) -> str:
    lines = ["| optimizer | eta | lambda | train loss | r* measured | SDE | discrete (optimizer's "
             "w) | appendix G SGD form | angle / step | predicted | c (AdamW) |",
             "|" + "---|" * 11]
    for _, r in table.iterrows():
        c = "" if not np.isfinite(r.get("preconditioner", np.nan)) else f"{r.preconditioner:.4g}"
        lines.append(
            f"| {r.optimizer} | {r.lr:g} | {r.wd:g} | {r.train_loss:.3f} | {r.radius:.3f} | "
            f"{r.radius_theory:.3f} ({_pct(r.radius_theory, r.radius)}) | "
            f"{r.radius_theory_corrected:.3f} ({_pct(r.radius_theory_corrected, r.radius)}) | "
            f"{r.radius_theory_corrected_sgd_form:.3f} "
            f"({_pct(r.radius_theory_corrected_sgd_form, r.radius)}) | "
            f"{r.angular_update:.4g} | {r.angular_update_theory:.4g} "
            f"({_pct(r.angular_update_theory, r.angular_update)}) | {c} |")
    return "\n".join(lines)


def errors(table: pd.DataFrame) -> str:
    out = []
    for name, part in table.groupby("optimizer", sort=False):
        def med(col, part=part):
            e = np.abs(part[col] - part["radius"]) / part["radius"]
            return f"{100 * np.median(e):.2f} % / {100 * np.max(e):.2f} %"
        angle = np.abs(part["angular_update_theory"] - part["angular_update"]) / \
            part["angular_update"]
        out.append(f"| {name} | {len(part)} | {med('radius_theory')} | "
                   f"{med('radius_theory_corrected')} | {med('radius_theory_corrected_sgd_form')}"
                   f" | {100 * np.median(angle):.2f} % / {100 * np.max(angle):.2f} % |")
    head = ["| optimizer | runs | SDE r*: median / max abs. rel. error | discrete r* (optimizer's"
            " w) | appendix G SGD form | angle per step |", "|" + "---|" * 6]
    return "\n".join(head + out)


if __name__ == "__main__":
    found = [s for sweep in sys.argv[1:] for run in sorted((Path(sweep) / "runs").iterdir())
             if (run / "summary.json").is_file() and (s := _stationary(run)) is not None]
    table = pd.DataFrame(found)
    print(markdown(table))
    print()
    print(errors(table))
    if table["optimizer"].str.startswith("adamw").any():
        print()
        print(adamw_table(table))
