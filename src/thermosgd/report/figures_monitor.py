"""Figures of a monitored run: each group's norm and angle per step against the equilibrium
predictions over training, the groups' temperatures and compressibility, and where each group
ends up against its prediction.

Per-channel groups (hundreds in a ResNet) are drawn per layer over time: the layer's norm is
sqrt(sum_g r_g^2) (its predicted radius sqrt(sum_g r*_g^2)), its angle the norm-weighted rms
sqrt(sum_g r_g^2 theta_g^2 / sum_g r_g^2) (:func:`thermosgd.analysis.monitor.rms_angles`), the
angle a rotation of the layer as a whole would have if its groups moved independently; over
the steps the angles are smoothed as rms too; the end-state panels show every group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from thermosgd.analysis.monitor import rms_angles

__all__ = ["fig_monitor", "per_layer"]

_CMAP = colormaps["tab10"]


def per_layer(metrics: pd.DataFrame) -> pd.DataFrame:
    """The scale-invariant groups of each layer merged per log step (module docstring)."""
    si = metrics[metrics["scale_invariant"].astype(bool) & (metrics["group"] != "all")]
    si = si.assign(r2=si["norm"] ** 2, p2=si["radius_theory_corrected"] ** 2,
                   ps2=si["radius_theory"] ** 2)
    sums = si.groupby(["layer", "step"], sort=False)[["r2", "p2", "ps2"]].sum(min_count=1)
    temps = si.groupby(["layer", "step"], sort=False)[["temperature", "compressibility"]].median()
    out = pd.DataFrame({"norm": np.sqrt(sums["r2"]),
                        "radius_theory_corrected": np.sqrt(sums["p2"]),
                        "radius_theory": np.sqrt(sums["ps2"])})
    angles = rms_angles(si, ["layer", "step"])[["angular_update", "angular_update_theory"]]
    return out.join(angles).join(temps).reset_index()


SMOOTH = 5  # logs in the centred rolling mean drawn over the steps (one log's noise window
# holds a few steps: its Tr Sigma, hence r*, scatters from log to log)


def _over_steps(ax, layers, column, theory, ylabel, rms=False):
    """``rms``: an angle, smoothed as the norm-weighted rms over the logs (as rms_angles)."""
    for k, (layer, rows) in enumerate(layers.groupby("layer", sort=False)):
        color = _CMAP(k % 10)
        r2 = rows["norm"] ** 2 if rms else 1.0
        frame = rows[[c for c in (column, theory) if c]] ** (2 if rms else 1)
        smooth = frame.mul(r2, axis=0).rolling(SMOOTH, center=True, min_periods=1).mean()
        if rms:
            smooth = np.sqrt(smooth.div(r2.rolling(SMOOTH, center=True, min_periods=1).mean(),
                                        axis=0))
        ax.plot(rows["step"], smooth[column], "-", color=color, lw=1.2, label=layer)
        if theory is not None:
            ax.plot(rows["step"], smooth[theory], "--", color=color, lw=1)
    ax.set(xlabel="step", ylabel=ylabel, yscale="log")


def _end_state(ax, table, measured, predicted, label):
    si = table[table["scale_invariant"].astype(bool) & (table["group"] != "all")]
    layers = {layer: k for k, layer in enumerate(dict.fromkeys(si["layer"]))}
    x, y = si[predicted].to_numpy(float), si[measured].to_numpy(float)
    ax.scatter(x, y, s=10, c=[_CMAP(layers[name] % 10) for name in si["layer"]])
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.any():
        lo, hi = min(x[ok].min(), y[ok].min()), max(x[ok].max(), y[ok].max())
        ax.plot([lo, hi], [lo, hi], "k:", lw=1)
        ax.set(xscale="log", yscale="log")
    ax.set(xlabel=f"predicted {label}", ylabel=f"measured {label}")


def fig_monitor(analysis, *, fig: Figure | None = None) -> Figure:
    """Six panels: norm and rms angle per step against their predictions (dashed) per layer,
    the groups' temperatures and compressibility Z per layer (median over its groups), and
    every group's stationary norm and rms angle against the prediction (dotted: equality)."""
    metrics, table = analysis.metrics, analysis.table
    layers = per_layer(metrics)
    fig = fig or Figure(figsize=(16, 9), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    _over_steps(axes[0], layers, "norm", "radius_theory_corrected",
                "norm |w| (dashed: r*, appendix G)")
    _over_steps(axes[1], layers, "angular_update", "angular_update_theory",
                "rms angle per step, rad (dashed: equilibrium)", rms=True)
    _over_steps(axes[2], layers, "temperature", None, "temperature T (median over groups)")
    _over_steps(axes[3], layers, "compressibility", None, "Z = pV / (RT) (median over groups)")
    axes[3].axhline(1.0, color="k", lw=0.8, ls=":")
    _end_state(axes[4], table, "norm", "radius_theory_corrected", "norm r* (appendix G)")
    _end_state(axes[5], table, "angular_update", "angular_update_theory", "rms angle per step")
    if len(layers):
        axes[0].legend(fontsize=7, loc="best")
    name = Path(analysis.figure_dir).parent.name if analysis.figure_dir else analysis.name
    fig.suptitle(f"{name}: each scale-invariant group against its equilibrium "
                 f"(over the steps: rolling mean, angles rms, of {SMOOTH} logs; last panels: "
                 "the stationary state of every group)")
    return fig
