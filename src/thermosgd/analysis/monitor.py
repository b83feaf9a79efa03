"""A monitored run (``thermosgd.Monitor(..., out=DIR)``) read as an :class:`Analysis`.

The table has one row per group: the mean of each numeric column over the group's last
``stationary_logs`` logs (the norm, its predictions and the angles as the balance defines them:
:func:`stationary_groups`), its last regime. The checks report, over the scale-invariant groups
with a prediction, how far the measured norm and rms angle per step sit from the predicted
equilibrium (SDE and appendix-G corrected): reported, not judged, since a user's run need not
be at equilibrium; the regime column says which groups are, and the checks count them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd import theory
from thermosgd.analysis.sources import READERS, Analysis, _mtime
from thermosgd.analysis.tables import error_summary
from thermosgd.monitor.predictions import REGIMES
from thermosgd.results import monitordir

__all__ = ["ANGLES", "STATIONARY_LOGS", "monitor_checks", "read_monitor", "rms_angles",
           "stationary_groups"]

STATIONARY_LOGS = 30  # logs averaged per group for its stationary row (as the paper, appendix F)
ANGLES = ("angular_update", "angular_update_theory", "angular_update_theory_corrected")


def rms_angles(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The rms angle per step of each ``by`` key over its rows (the logs of a group, or the
    groups of a layer at one step), measured and predicted (``ANGLES``), norm-weighted:
    sqrt(sum r^2 theta^2 / sum r^2).

    The predictions are root-mean-square quantities, sqrt(E|u|^2 / E|w|^2) with u the step, and
    r theta ~ |u| (the step is orthogonal to w up to O(theta^2)): the norm-weighted rms is that
    ratio itself over the rows, where the plain rms is it only when r stays put and a plain
    mean reads low by half the relative variance of theta (Jensen; 5-10 % on conv layers). The
    predictions get the same weights, so a group that follows its prediction row by row reads
    a ratio of exactly 1."""
    r2 = frame["norm"].astype(float) ** 2
    columns = [c for c in ANGLES if c in frame]
    parts = {}
    for column in columns:
        angle = frame[column].astype(float)
        ok = np.isfinite(angle) & np.isfinite(r2)
        parts[column], parts[f"{column}/r2"] = (r2 * angle**2).where(ok), r2.where(ok)
    sums = pd.DataFrame(parts).groupby([frame[k] for k in by], sort=False).sum(min_count=1)
    return pd.DataFrame({c: np.sqrt(sums[c] / sums[f"{c}/r2"]) for c in columns},
                        index=sums.index)


def stationary_groups(metrics: pd.DataFrame, logs: int = STATIONARY_LOGS) -> pd.DataFrame:
    """One row per group: numeric means over its last ``logs`` logs, its last regime.

    The norm balance holds in expectation, 2 lambda E|w|^2 = eta' E|grad L_B(w_bar)|^2 / E|w|^2
    (eq. 116-118), and r*^4 is linear in the noise, so the stationary norm is sqrt(E r^2) and
    its predictions are (E r*^4)^(1/4) (SGD and momentum; AdamW's r*^2 = eta d_eff / (2 lambda)
    is linear in the noise: (E r*^2)^(1/2)); Z is the gas law on these means. The angles per step, measured and predicted, are rms over the logs
    (:func:`rms_angles`), as the predictions are."""
    tails = metrics.sort_values("step", kind="stable").groupby("group", sort=False).tail(logs)
    angles = rms_angles(tails, ["group"])
    rows = []
    for group, tail in tails.groupby("group", sort=False):
        means = tail.drop(columns=["step"]).mean(numeric_only=True)
        means["norm"] = float(np.sqrt((tail["norm"] ** 2).mean()))
        # r*^4 is linear in the noise under SGD and momentum, r*^2 (d_eff) under AdamW, whose
        # rows carry a preconditioner: the noise is averaged, then the power taken
        adamw = "preconditioner" in tail and np.isfinite(tail["preconditioner"].astype(float)).any()
        power = 2 if adamw else 4
        for column in ("radius_theory", "radius_theory_corrected"):
            means[column] = float((tail[column] ** power).mean() ** (1 / power))
        # one log's Z = (r / r*)^power inherits its noise's spread (Jensen): the stationary
        # Z is the gas law on the stationary means, and the distance that of the means
        if {"pressure", "temperature", "d"} <= set(means.index):
            means["compressibility"] = float(theory.compressibility(
                means["pressure"], means["norm"] ** 2 / 2, means["temperature"], means["d"]))
        means["distance"] = float(np.log(means["norm"] / means["radius_theory_corrected"]))
        for column in angles:
            means[column] = float(angles.loc[group, column])
        row = {"group": group, "layer": tail["layer"].iloc[-1],
               "scale_invariant": bool(tail["scale_invariant"].iloc[-1]),
               "regime": tail["regime"].iloc[-1], "last_step": int(tail["step"].iloc[-1]),
               "logs_averaged": len(tail)}
        rows.append(row | {k: v for k, v in means.items() if k not in row})
    return pd.DataFrame(rows)


def monitor_checks(table: pd.DataFrame) -> dict:
    """Norm and rms angle per step against their predictions over the scale-invariant groups
    (not the union), and the union's own; the groups counted by their last regime (the one the
    table shows), every regime of :data:`REGIMES`."""
    si = table[table["scale_invariant"].astype(bool) & (table["group"] != "all")]
    regimes = si["regime"].fillna("").value_counts()
    predicted = si["radius_theory"].to_numpy(float)
    si = si[np.isfinite(predicted) & (predicted > 0)]
    if si.empty:
        return {"skipped": "no scale-invariant group with a prediction (see config.json: "
                           "the optimizer's note, or no group found)"}
    out = {
        "norm vs r*": error_summary(si["norm"], si["radius_theory"])
        | {"corrected": error_summary(si["norm"], si["radius_theory_corrected"])},
        "rms angle per step vs equilibrium": error_summary(si["angular_update"],
                                                           si["angular_update_theory"]),
    }
    union = table[table["group"] == "all"]
    if len(union) and np.isfinite(float(union["radius_theory"].iloc[0])):
        u = union.iloc[0]
        out["union"] = {"norm_rel_error": float(abs(u["norm"] / u["radius_theory_corrected"] - 1)),
                        "rms_angle_rel_error": float(abs(u["angular_update"]
                                                         / u["angular_update_theory"] - 1))}
    for regime in REGIMES:
        out[f"groups {regime}"] = int(regimes.get(regime, 0))
    if regimes.get("", 0):
        out["groups without a prediction"] = int(regimes[""])
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
    varied = metrics.groupby("group")[["learning_rate", "weight_decay"]].nunique() > 1
    setup = {"model": f"{model} ({len(si)} scale-invariant groups, monitored)",
             "protocol": ("scheduled LR or weight decay, " if varied.to_numpy().any()
                          else "fixed LR, ") + "; ".join(optimizers),
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
