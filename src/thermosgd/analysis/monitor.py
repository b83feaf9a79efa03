"""A monitored run (``thermosgd.Monitor(..., out=DIR)``) read as an :class:`Analysis`.

The monitor writes rows of four levels (:mod:`thermosgd.monitor.columns`): per-channel groups,
whole weights ("layer": one group, the sum of a layer's groups, or a weight matrix that is not
scale-invariant, predicted approximately), "other" and "all". A person reads layers: a ResNet-18
has 4800 channel groups in 21 weights. The analysis therefore counts and tabulates layers, and
keeps every group in its table for whoever wants them. Runs written before the level existed
(schema 0.2) have no row for a layer split into channels: it is formed here from its groups
(:func:`with_layers`), as the monitor forms it now, but for its regime, which the groups' regimes
give only when they agree.

The table has one row per row name: the mean of each numeric column over its last
``stationary_logs`` logs (the norm, its predictions and the angles as the balance defines them:
:func:`stationary_groups`), its last regime. The checks report how far the measured norm and rms
angle per step sit from the predicted equilibrium (SDE and appendix-G corrected), over the
layers and over the groups: reported, not judged, since a user's run need not be at
equilibrium; the regimes say which are, and the checks count them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd import theory
from thermosgd.analysis.sources import READERS, Analysis, _mtime
from thermosgd.analysis.tables import error_summary
from thermosgd.monitor.predictions import REGIMES
from thermosgd.results import monitordir
from thermosgd.results.monitordir import levels

__all__ = ["ANGLES", "MIXED", "STATIONARY_LOGS", "layer_names", "levels", "monitor_checks",
           "read_monitor", "regime_counts", "rms_angles", "stationary_groups", "with_layers"]

STATIONARY_LOGS = 30  # logs averaged per group for its stationary row (as the paper, appendix F)
ANGLES = ("angular_update", "angular_update_theory", "angular_update_theory_corrected")
MIXED = "mixed"  # the regime of a layer formed from groups whose regimes differ (schema 0.2)


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


def _from_groups(groups: pd.DataFrame) -> pd.DataFrame:
    """Layer rows formed from the groups of layers that have none (schema 0.2): the layer's
    norm is sqrt(sum_g r_g^2), its predicted radius sqrt(sum_g r*_g^2) (a union of groups at
    their equilibria is at its own), its angles the norm-weighted rms of its groups'
    (:func:`rms_angles`); T and Z the median over its groups; the regime the groups' one when
    they agree, else ``MIXED``."""
    keys = ["layer", "step"]
    g = groups.assign(**{f"{c}/2": groups[c].astype(float) ** 2 for c in (
        "norm", "radius_theory", "radius_theory_corrected") if c in groups})
    sums = g.groupby(keys, sort=False)[[c for c in g if c.endswith("/2")] + ["d"]].sum(
        min_count=1)
    out = pd.DataFrame({c[:-2]: np.sqrt(sums[c]) for c in sums if c.endswith("/2")})
    out["d"] = sums["d"]
    medians = [c for c in ("temperature", "compressibility", "learning_rate", "weight_decay")
               if c in g]
    out = out.join(rms_angles(g, keys)).join(g.groupby(keys, sort=False)[medians].median())
    regimes = g["regime"].fillna("").astype(str).groupby([g[k] for k in keys], sort=False)
    out["regime"] = regimes.agg(lambda r: r.iloc[0] if r.nunique() == 1 else MIXED)
    out = out.reset_index()
    out["distance"] = np.log(out["norm"] / out["radius_theory_corrected"])
    return out.assign(group=out["layer"], level="layer", scale_invariant=True)


def with_layers(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with a ``level`` column and a row per layer and log step for every layer
    split into groups that has none (runs of schema 0.2; the monitor writes them since)."""
    metrics = metrics.assign(level=levels(metrics))
    groups = metrics[metrics["level"] == "group"]
    have = set(metrics.loc[metrics["level"] == "layer", "group"])
    missing = groups[~groups["layer"].isin(have)]
    if missing.empty:
        return metrics
    return pd.concat([metrics, _from_groups(missing)], ignore_index=True)


def layer_names(frame: pd.DataFrame) -> list[str]:
    """The layers in the model's order (the order of their first group or row)."""
    rows = frame[levels(frame).isin(["group", "layer"])]
    return list(dict.fromkeys(rows["layer"].astype(str)))


def _group_units(frame: pd.DataFrame) -> pd.Series:
    """The scale-invariant groups (the units the monitor sums): rows of level "group", and
    scale-invariant layers that are one group themselves (no group row names them)."""
    level = levels(frame)
    split = set(frame.loc[level == "group", "layer"])
    whole = (level == "layer") & frame["scale_invariant"].astype(bool) & ~frame["group"].isin(split)
    return (level == "group") | whole


def stationary_groups(metrics: pd.DataFrame, logs: int = STATIONARY_LOGS) -> pd.DataFrame:
    """One row per row name (group, layer, "other", "all"): numeric means over its last
    ``logs`` logs, its last regime.

    The norm balance holds in expectation, 2 lambda E|w|^2 = eta' E|grad L_B(w_bar)|^2 / E|w|^2
    (eq. 116-118), and r*^4 is linear in the noise, so the stationary norm is sqrt(E r^2) and
    its predictions are (E r*^4)^(1/4) (SGD and momentum; AdamW's r*^2 = eta d_eff / (2 lambda)
    is linear in the noise: (E r*^2)^(1/2)); Z is the gas law on these means. The angles per
    step, measured and predicted, are rms over the logs (:func:`rms_angles`), as the
    predictions are. Vectorized over the rows: a ResNet has thousands of channel groups."""
    metrics = metrics.assign(level=levels(metrics))
    tails = metrics.sort_values("step", kind="stable").groupby("group", sort=False).tail(logs)
    by = tails.groupby("group", sort=False)
    means = by.mean(numeric_only=True).drop(columns=["step"], errors="ignore")
    means["norm"] = np.sqrt((tails["norm"].astype(float) ** 2).groupby(
        tails["group"], sort=False).mean())
    # r*^4 is linear in the noise under SGD and momentum, r*^2 (d_eff) under AdamW, whose
    # rows carry a preconditioner: the noise is averaged, then the power taken
    adamw = (np.isfinite(tails["preconditioner"].astype(float)).groupby(tails["group"],
                                                                        sort=False).any()
             if "preconditioner" in tails else pd.Series(False, index=means.index))
    power = np.where(adamw.reindex(means.index).to_numpy(bool), 2.0, 4.0)
    for column in ("radius_theory", "radius_theory_corrected"):
        if column in tails:
            raised = tails[column].astype(float).to_numpy()[:, None] ** np.array([2.0, 4.0])
            mean = pd.DataFrame(raised, index=tails.index).groupby(
                tails["group"], sort=False).mean().reindex(means.index).to_numpy()
            means[column] = np.where(power == 2, mean[:, 0] ** 0.5, mean[:, 1] ** 0.25)
    # one log's Z = (r / r*)^power inherits its noise's spread (Jensen): the stationary Z is
    # the gas law on the stationary means, and the distance that of the means
    if {"pressure", "temperature", "d"} <= set(means.columns):
        means["compressibility"] = theory.compressibility(
            means["pressure"], means["norm"] ** 2 / 2, means["temperature"], means["d"])
    if "radius_theory_corrected" in means:
        means["distance"] = np.log(means["norm"] / means["radius_theory_corrected"])
    angles = rms_angles(tails, ["group"])
    for column in angles:
        means[column] = angles[column].reindex(means.index)
    last = by.tail(1).set_index("group")
    head = pd.DataFrame({
        "layer": last["layer"], "level": last["level"],
        "scale_invariant": last["scale_invariant"].astype(bool),
        "regime": last["regime"], "last_step": last["step"].astype(int),
        "logs_averaged": by.size()}).reindex(means.index)
    return head.join(means.drop(columns=[c for c in head if c in means])).reset_index()


def regime_counts(frame: pd.DataFrame) -> Counter:
    """How many rows are in each regime ("" for none: no prediction)."""
    return Counter(r if isinstance(r, str) else "" for r in frame["regime"])


def _errors(rows: pd.DataFrame) -> dict:
    return {"norm vs r*": error_summary(rows["norm"], rows["radius_theory"])
            | {"corrected": error_summary(rows["norm"], rows["radius_theory_corrected"])},
            "rms angle per step vs equilibrium": error_summary(
                rows["angular_update"], rows["angular_update_theory"])}


def _predicted(rows: pd.DataFrame) -> pd.DataFrame:
    r = rows["radius_theory"].to_numpy(float)
    return rows[np.isfinite(r) & (r > 0)]


def monitor_checks(table: pd.DataFrame) -> dict:
    """Norm and rms angle per step against their predictions over the scale-invariant groups
    (not the union) and over the whole layers (the approximate ones apart), and the union's
    own; the layers and the groups counted by their last regime (the one the table shows),
    every regime of :data:`REGIMES`."""
    level = levels(table)
    units = table[_group_units(table)]
    layers = table[level == "layer"]
    exact = _predicted(layers[layers["scale_invariant"].astype(bool)])
    si = _predicted(units)
    # without a prediction the measurements and the regimes ("" for all) are still reported
    out = _errors(si) if len(si) else {}
    out |= {f"layers: {k}": v for k, v in _errors(exact).items()} if len(exact) else {}
    approximate = _predicted(layers[~layers["scale_invariant"].astype(bool)])
    if len(approximate):
        out |= {f"approximate layers: {k}": v for k, v in _errors(approximate).items()}
    union = table[table["group"] == "all"]
    if len(union) and np.isfinite(float(union["radius_theory"].iloc[0])):
        u = union.iloc[0]
        out["union"] = {"norm_rel_error": float(abs(u["norm"] / u["radius_theory_corrected"] - 1)),
                        "rms_angle_rel_error": float(abs(u["angular_update"]
                                                         / u["angular_update_theory"] - 1))}
    for what, rows in (("layers", layers), ("groups", units)):
        counts = regime_counts(rows)
        if what == "layers" and rows.empty:
            continue
        for regime in REGIMES:
            out[f"{what} {regime}"] = int(counts.get(regime, 0))
        if counts.get(MIXED):
            out[f"{what} mixed (their groups' regimes differ)"] = int(counts[MIXED])
        if counts.get(""):
            out[f"{what} without a prediction"] = int(counts[""])
    return out


def _counts_text(counts: Counter, noun: str) -> str:
    """'12 of 21 layers at equilibrium, 5 converging, 4 without a prediction'."""
    total = sum(counts.values())
    order = [r for r in (*REGIMES, MIXED, "") if counts.get(r)]
    order += sorted(r for r in counts if r not in order)
    words = {"equilibrium": "at equilibrium", "": "without a prediction",
             MIXED: "mixed (their groups' regimes differ)"}
    parts = [f"{counts[r]} {words.get(r, r)}" for r in order]
    if not parts:
        return f"no {noun}"
    head = f"{counts.get('equilibrium', 0)} of {total} {noun} at equilibrium"
    rest = [p for r, p in zip(order, parts) if r != "equilibrium"]
    return ", ".join([head] + rest)


def _summary_counts(summary: dict, level: str) -> Counter | None:
    """The regimes of one level among summary.json's last rows, as the monitor wrote them."""
    by_level = summary.get("regimes_by_level")
    if isinstance(by_level, dict):
        return Counter(by_level.get(level, {}))
    last = summary.get("last")
    if not isinstance(last, list) or not last:
        return None
    frame = pd.DataFrame(last)
    if not {"group", "layer", "regime"} <= set(frame.columns):
        return None
    if "level" not in frame and level == "layer":
        return None  # schema 0.2 wrote no row for a layer split into groups: nothing to compare
    return regime_counts(frame[levels(frame) == level])


def _unpredicted(config: dict, layers: pd.DataFrame) -> str:
    """Why no layer has a prediction ("" when some has)."""
    predicted = layers[["radius_theory", "radius_theory_corrected"]].to_numpy(float)
    if np.isfinite(predicted).any():
        return ""
    notes = sorted({o.get("note") for o in config.get("optimizers", []) if o.get("note")})
    if notes:
        return "no layer has a prediction: " + "; ".join(notes)
    if layers.empty:
        return "no weight matrix and no scale-invariant group was found"
    return ("no layer has a prediction yet (the first logs have no gradient-noise window, or "
            "no gradient reached the weights)")


def _lines(metrics, summary, counts, layers, units, why) -> tuple[str, list[str]]:
    """The headline (what was measured, how many layers in which regime) and its details."""
    status = summary.get("status") or "running or killed (no summary.json: the monitor had " \
                                      "not closed)"
    steps, logs = summary.get("steps", int(metrics["step"].max())), summary.get(
        "logs", metrics["step"].nunique())
    approximate = int((~layers["scale_invariant"].astype(bool)).sum())
    what = _counts_text(counts["layer"], "layers")
    headline = (f"Monitored run {status} after {steps} steps ({logs} logs); at the last log "
                f"{what}. " + (f"Nothing could be judged: {why}." if why else
                               "Nothing is judged against a tolerance: a run of your own need "
                               "not be at equilibrium; the regimes say where the predictions "
                               "apply."))
    lines = [f"status: {status}; {steps} steps, {logs} logs, the last at step "
             f"{int(metrics['step'].max())}",
             f"{len(layers)} layers ({len(layers) - approximate} scale-invariant, "
             f"{approximate} predicted approximately: weight matrices that are not "
             f"scale-invariant), {units} scale-invariant groups in them"]
    if counts["group"]:
        lines.append("channel groups at the last log: " + _counts_text(counts["group"], "groups"))
    same = []
    for level, noun in (("layer", "layers"), ("group", "groups")):
        told = _summary_counts(summary, level)
        if told is None or not counts[level] and not told:
            continue
        if Counter({k: v for k, v in told.items() if v}) == counts[level]:
            same.append(noun)
        else:
            lines.append(f"summary.json counts the {noun} otherwise: "
                         f"{_counts_text(told, noun)} (written at its close)")
    if same:
        lines.append(f"summary.json (written when the monitor closed) counts the same "
                     f"{' and '.join(same)}")
    return headline, lines


def read_monitor(path, *, bootstrap: int = 1000, seed: int = 0) -> list[Analysis]:
    """A monitor's run directory as one Analysis. Raises ValueError when it has no logs."""
    path = Path(path)
    metrics = monitordir.read_metrics(path)
    if metrics.empty:
        raise ValueError(f"{path}: the monitored run has no logs yet (it flushes every "
                         "flush_every logs and when it closes)")
    metrics = with_layers(metrics)
    config, summary = monitordir.read_config(path), monitordir.read_summary(path)
    table = stationary_groups(metrics)
    # one label per distinct optimizer (parameter groups differ in lr and decay, not in it)
    optimizers = list(dict.fromkeys(o.get("label") or f"not predicted: {o.get('note')}"
                                    for o in config.get("optimizers", [])))
    last = metrics[metrics["step"] == metrics["step"].max()]
    layers, units = last[last["level"] == "layer"], last[_group_units(last)]
    counts = {"layer": regime_counts(layers), "group": regime_counts(
        last[last["level"] == "group"])}
    model = config.get("settings", {}).get("model", "monitored model")
    varied = metrics.groupby("group")[["learning_rate", "weight_decay"]].nunique() > 1
    headline, lines = _lines(metrics, summary, counts, layers, len(units),
                             _unpredicted(config, layers))
    d_si = int(units["d"].sum()) if len(units) else 0
    setup = {"model": f"{model} ({len(layers)} layers, {len(units)} scale-invariant groups "
                      f"of {d_si} weights in all, monitored)",
             "protocol": ("scheduled LR or weight decay, " if varied.to_numpy().any()
                          else "fixed LR, ") + "; ".join(optimizers),
             "d": None,
             "iterations": int(metrics["step"].max()),
             "status": summary.get("status", "running"),
             "headline": headline, "short": _counts_text(counts["layer"], "layers"),
             "lines": lines}
    # every name stays in analysis.json; the page shows the first few of each
    by_layer = table[table["level"] == "layer"]
    runs = {f"layers {regime}": by_layer.loc[by_layer["regime"] == regime, "group"].tolist()
            for regime in ("converging", "collapsing", "idle")}
    runs["groups whose gradient is not orthogonal to them"] = summary.get(
        "unconfirmed_groups", [])
    return [Analysis("monitor", "monitor", table, monitor_checks(table), setup, runs, metrics,
                     path / "figures", _mtime(list((path / "metrics").glob("*.parquet"))))]


READERS[monitordir.KIND] = read_monitor
