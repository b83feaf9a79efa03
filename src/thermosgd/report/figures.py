"""Which figures a result gets, and drawing them to files.

Every figure is ``fig_<name>(analysis, *, fig=None) -> Figure`` on an
:class:`~thermosgd.analysis.sources.Analysis`. A figure is drawn when the columns it plots are
in the stationary table (``needs``), never by the kind of result: the isotropic panels need the
closed-form VMF columns, the network panels the measured noise scale σ², Figure 12 a corrected
prediction, Figure 13 the per-log metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thermosgd.report.figures_isotropic import fig_isotropic
from thermosgd.report.figures_monitor import fig_monitor
from thermosgd.report.figures_network import (
    fig_learning_curves,
    fig_radius_theories,
    fig_stationary,
)
from thermosgd.report.plotting import save_figure

__all__ = ["FIGURES", "FigureSpec", "draw", "figures_for"]


def _has(*columns):
    def test(analysis) -> bool:
        table = analysis.table
        return any(c in table and np.isfinite(table[c].to_numpy(float)).any() for c in columns)
    return test


def _grid(test):
    """A figure over a hyperparameter grid: the table has runs (a seed column) to place."""
    return lambda analysis: "seed" in analysis.table and test(analysis)


@dataclass(frozen=True)
class FigureSpec:
    name: str  # file name without suffix, in the analysis' figure folder
    caption: str
    draw: Callable
    needs: Callable  # analysis -> bool: are the plotted columns there?


FIGURES = (
    FigureSpec("figure", "panels a–e: U, S, V1, V2 (paper Figures 1, 3, 4)", fig_isotropic,
               _has("entropy_theory")),
    FigureSpec("stationary", "stationary values and the entropy fit (paper Figures 2, 5-10)",
               fig_stationary, _grid(_has("sigma2"))),
    FigureSpec("radius_theories", "V1: SDE against corrected prediction (paper Figure 12)",
               fig_radius_theories,
               _grid(_has("radius_theory_corrected", "lambda_eff_theory_corrected"))),
    FigureSpec("learning_curves", "learning curves (paper Figure 13)", fig_learning_curves,
               lambda a: a.metrics is not None and "iteration" in a.metrics
               and len(a.metrics) > 0),
    FigureSpec("monitor", "each layer's norm and rms angle per step over their predicted "
               "equilibrium and its regime, over the steps; the union against its prediction",
               fig_monitor,
               # a monitored run logs per group; isotropic and network tables carry the
               # predicted angle too, but no groups
               lambda a: a.metrics is not None and "group" in a.metrics
               and "scale_invariant" in a.metrics and _has("angular_update_theory")(a)),
)


def figures_for(analysis) -> list[FigureSpec]:
    """The figures an analysis' columns allow (none for a protocol that was not checked)."""
    if analysis.skipped or analysis.table.empty:
        return []
    return [spec for spec in FIGURES if spec.needs(analysis)]


def draw(analysis, *, formats=(".png",), reuse: bool = False) -> dict[str, Path]:
    """Draw the analysis' figures into its figure folder; caption -> PNG path. ``reuse``: keep a
    PNG newer than the analysis' inputs (say, drawn by ``reproduce``)."""
    out = {}
    for spec in figures_for(analysis):
        png = Path(analysis.figure_dir) / f"{spec.name}.png"
        if reuse and png.is_file() and png.stat().st_mtime >= analysis.source_mtime:
            out[spec.caption] = png
            continue
        fig = spec.draw(analysis)
        for suffix in formats:
            save_figure(fig, png.with_suffix(suffix))
        out[spec.caption] = png
    return out
