"""A monitored run (``thermosgd.Monitor(..., out=DIR)``) read as an :class:`Analysis`.

The table has one row per group: the mean of each numeric column over the group's last
``stationary_logs`` logs, its last regime. The checks report, over the scale-invariant groups
with a prediction, how far the measured norm and angle per step sit from the predicted
equilibrium (SDE and appendix-G corrected): reported, not judged, since a user's run need not
be at equilibrium; the regime column says which groups are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.analysis.sources import READERS, Analysis, _mtime
from thermosgd.analysis.tables import error_summary
from thermosgd.results import monitordir

__all__ = ["STATIONARY_LOGS", "monitor_checks", "read_monitor", "stationary_groups"]

STATIONARY_LOGS = 30  # logs averaged per group for its stationary row (as the paper, appendix F)


def stationary_groups(metrics: pd.DataFrame, logs: int = STATIONARY_LOGS) -> pd.DataFrame:
    """One row per group: numeric means over its last ``logs`` logs, its last regime.

    The norm balance holds in expectation, 2 lambda E|w|^2 = eta' E|grad L_B(w_bar)|^2 / E|w|^2
    (eq. 116-118), and r*^4 is linear in the noise, so the stationary norm is sqrt(E r^2) and
    its predictions are (E r*^4)^(1/4) (exact for SGD and momentum; AdamW's r*^2 barely
    depends on the noise)."""
    rows = []
    for group, part in metrics.groupby("group", sort=False):
        tail = part.sort_values("step").tail(logs)
        means = tail.drop(columns=["step"]).mean(numeric_only=True)
        means["norm"] = float(np.sqrt((tail["norm"] ** 2).mean()))
        for column in ("radius_theory", "radius_theory_corrected"):
            means[column] = float((tail[column] ** 4).mean() ** 0.25)
        row = {"group": group, "layer": tail["layer"].iloc[-1],
               "scale_invariant": bool(tail["scale_invariant"].iloc[-1]),
               "regime": tail["regime"].iloc[-1], "last_step": int(tail["step"].iloc[-1]),
               "logs_averaged": len(tail)}
        rows.append(row | {k: v for k, v in means.items() if k not in row})
    return pd.DataFrame(rows)


def monitor_checks(table: pd.DataFrame) -> dict:
    """Norm and angle against their predictions over the scale-invariant groups (not the
    union), and the union's own; regimes counted."""
    si = table[table["scale_invariant"].astype(bool) & (table["group"] != "all")]
    predicted = si["radius_theory"].to_numpy(float)
    idle = int((predicted == 0).sum())  # no gradient reached them: nothing to predict
    si = si[np.isfinite(predicted) & (predicted > 0)]
    if si.empty:
        return {"skipped": "no scale-invariant group with a prediction (see config.json: "
                           "the optimizer's note, or no group found)"}
    out = {
        "norm vs r*": error_summary(si["norm"], si["radius_theory"])
        | {"corrected": error_summary(si["norm"], si["radius_theory_corrected"])},
        "angle vs equilibrium": error_summary(si["angular_update"], si["angular_update_theory"]),
    }
    union = table[table["group"] == "all"]
    if len(union) and np.isfinite(float(union["radius_theory"].iloc[0])):
        u = union.iloc[0]
        out["union"] = {"norm_rel_error": float(abs(u["norm"] / u["radius_theory_corrected"] - 1)),
                        "angle_rel_error": float(abs(u["angular_update"]
                                                     / u["angular_update_theory"] - 1))}
    for regime in ("equilibrium", "relaxing", "converging", "collapsing"):
        out[f"groups {regime}"] = int((si["regime"] == regime).sum())
    out["groups idle"] = idle
    return out


def read_monitor(path, *, bootstrap: int = 1000, seed: int = 0) -> list[Analysis]:
    """A monitor's run directory as one Analysis. Raises ValueError when it has no logs."""
    path = Path(path)
    metrics = monitordir.read_metrics(path)
    if metrics.empty:
        raise ValueError(f"{path}: the monitored run has no logs yet (it flushes every "
                         "flush_every logs and when it closes)")
    config, summary = monitordir.read_config(path), monitordir.read_summary(path)
    table = stationary_groups(metrics)
    optimizers = [o.get("label") or f"not predicted: {o.get('note')}"
                  for o in config.get("optimizers", [])]
    si = table[table["scale_invariant"].astype(bool) & (table["group"] != "all")]
    model = config.get("settings", {}).get("model", "monitored model")
    setup = {"model": f"{model} ({len(si)} scale-invariant groups, monitored)",
             "protocol": "fixed LR, " + "; ".join(optimizers),
             "d": int(si["d"].sum()) if len(si) else None,
             "iterations": int(metrics["step"].max()),
             "status": summary.get("status", "running")}
    runs = {f"groups {regime}": si.loc[si["regime"] == regime, "group"].tolist()
            for regime in ("converging", "collapsing")}
    runs["groups whose gradient is not orthogonal to them"] = summary.get(
        "unconfirmed_groups", [])
    return [Analysis("monitor", "monitor", table, monitor_checks(table), setup, runs, metrics,
                     path / "figures", _mtime(list((path / "metrics").glob("*.parquet"))))]


READERS[monitordir.KIND] = read_monitor
