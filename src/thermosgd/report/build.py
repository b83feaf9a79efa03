"""``thermosgd analyze | plot | report DIR`` on any result directory thermosgd writes.

DIR is a network sweep (``thermosgd sweep run --out``), an isotropic-model output
(``thermosgd reproduce isotropic --out``), or a folder whose subfolders are such results. Each
result is read into stationary tables (:mod:`thermosgd.analysis.sources`), and from there every
result goes the same way: the checks its protocol and columns allow, one tolerance system
(:mod:`thermosgd.analysis.rules`), the figures its columns allow (:mod:`thermosgd.report.figures`)
and one page (:mod:`thermosgd.report.page`).

In a folder of several results, one that cannot be analysed (an unfinished sweep, too few
configurations) is reported with its reason and does not stop the others; a single result that
cannot be analysed is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.analysis.checks import TABLE4_CHARTS
from thermosgd.analysis.monitor import layer_names
from thermosgd.analysis.rules import judge, tolerance_lines
from thermosgd.analysis.sources import Analysis, analyse_path, write_analysis
from thermosgd.monitor.predictions import ANGLE_BAND, NORM_BAND
from thermosgd.report import figures as _figures
from thermosgd.report import page as _page
from thermosgd.results import io as _io
from thermosgd.results.locate import damage, locate

__all__ = ["Analysed", "analyse", "plot", "report", "summary_lines", "write_analyses"]

_PROTOCOL_NAMES = {"fixed-lr": "fixed LR (η, λ)", "fixed-elr": "fixed ELR (η_eff, λ)",
                   "fixed-sphere": "fixed sphere (η_eff, r)"}
INTRO = (
    "Stationary SGD on a scale-invariant loss, read as an ideal gas: temperature T from the "
    "learning rate, pressure p = λ (λ_eff on a fixed sphere), volume V = r*²/2. Each grid point "
    "is the mean over its seeds, and only when every seed finished and is stationary. Checks "
    "follow the columns measured: V1, the ideal gas law pV = RT with R = (d − 1)/2 (the radius "
    "r*, or λ_eff on the sphere, against the SDE and, for networks, the appendix-G corrected "
    "prediction); U and the sphere entropy against the exact von Mises-Fisher state where the "
    "noise is isotropic (section 5), with V2 (the stationary state minimizes G or F), the "
    "entropy slopes (V3) and constant entropy along adiabats (V4); and V3 as the paper's "
    "Table 4: the quadratic entropy fit of eq. 34/108, its Maxwell relation and 95 % bootstrap "
    "intervals, with the paper's value beside ours where the paper has the same setup.")
MONITOR_INTRO = (
    "A training run of your own, watched by thermosgd.Monitor, read per layer: a weight "
    "whose output a normalization divides by its own scale is scale-invariant (per channel, "
    "per group or per head as its norm divides; its row here sums them); another weight "
    "matrix is predicted approximately, by its optimizer's rotational equilibrium, and its "
    "radial push κ says how far that can hold (κ = 0 for a scale-invariant weight under SGD; "
    "the norm balance with it reads r⁴(1+κ) = r*⁴, AdamW r²(1+κ) = r*²); "
    "'all' is the union of the scale-invariant groups. For each, the weight norm r, the rms "
    "angle turned per step, the effective learning rate, Tr Σ from the loop's own gradients, "
    "temperature T, pressure p and Z = pV/(RT), beside the stationary radius r* and rms angle "
    "θ* that the optimizer in use predicts, and its regime: equilibrium only when "
    f"|log(r/r*)| < {NORM_BAND:g} and |log(θ/θ*)| < {ANGLE_BAND:g} over its last relaxation "
    "time; scheduled when it lags a change of learning rate or weight decay; relaxing, "
    "converging, collapsing or idle otherwise. The predictions apply only where a layer has "
    "reached its stationary state. The table's numbers are means over each row's last "
    "logs, its regime that of the last log. Every channel group stays in the run's "
    "metrics/*.parquet and analysis_table.csv.")


@dataclass
class Analysed:
    kind: str  # the manifest's kind: how the result was read, nothing more
    path: Path
    analyses: list[Analysis] = field(default_factory=list)  # one per protocol
    error: str | None = None  # why it could not be analysed
    out: Path | None = None  # where its files go, when not beside the result

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def dest(self) -> Path:
        return self.out if self.out is not None else self.path


def _elsewhere(analysed: list["Analysed"], path: Path, out: Path) -> None:
    """Send every file of the results at ``path`` to the same place under ``out`` (results
    that cannot be written, e.g. shared read-only ones, are analysed elsewhere)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    for a in analysed:
        a.out = out / a.path.relative_to(path)
        for analysis in a.analyses:
            if analysis.figure_dir is not None:
                analysis.figure_dir = a.out / Path(analysis.figure_dir).relative_to(a.path)
                analysis.source_mtime = float("inf")  # figures elsewhere are drawn anew


def analyse(path, *, bootstrap: int = 1000, out=None) -> list[Analysed]:
    """Analyse every result at ``path`` (nothing is written). Raises ValueError when ``path``
    holds no result, when its only result cannot be analysed, or when none of several can.
    ``out``: the files written from this analysis go there, laid out as under ``path``."""
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {bootstrap}")
    analysed = _analyse(path, bootstrap)
    if out is not None:
        _elsewhere(analysed, Path(path), Path(out))
    return analysed


def _analyse(path, bootstrap: int) -> list[Analysed]:
    located = locate(path)
    out = []
    for kind, where in located:
        if kind == "damaged":  # its manifest cannot be read: named, the others go on
            out.append(Analysed(kind, where, error=damage(where)))
            continue
        try:
            out.append(Analysed(kind, where, analyse_path(kind, where, bootstrap=bootstrap)))
        except ValueError as err:
            if len(located) == 1:
                raise
            out.append(Analysed(kind, where, error=str(err)))
    if all(a.error for a in out):
        raise ValueError(f"{path}: no result could be analysed:\n" +
                         "\n".join(f"  {a.name}: {a.error}" for a in out))
    return out


def write_analyses(path, analysed: list[Analysed], *, out=None) -> list[Path]:
    """Each result's ``analysis.json`` and ``analysis_table.csv`` in its own folder; for a folder
    of several results also ``path/analysis.json`` (an index) and ``path/analysis_table.csv``
    (every stationary table, a ``result`` column first). ``out``: in place of ``path`` (the
    results analysed with :func:`analyse`'s ``out``)."""
    path = Path(path)
    root = Path(out) if out is not None else path
    written, index, every = [], {}, []
    for a in analysed:
        if a.error:
            index[a.name] = {"kind": a.kind, "error": a.error}
            continue
        written += write_analysis(a.dest, a.analyses)
        index[a.name] = {"kind": a.kind, "files": ["analysis.json", "analysis_table.csv"]}
        every += [Analysis(f"{a.name}/{x.name}" if a.path != path else x.name, x.protocol,
                           x.table, x.checks, x.setup) for x in a.analyses]
    if [a.path for a in analysed] != [path]:
        written += write_analysis(root, every, index=index)
    return written


def _title(a: Analysed, analysis: Analysis, root: Path) -> str:
    title = _PROTOCOL_NAMES.get(analysis.name, analysis.name)
    if analysis.name != analysis.protocol:
        title += f" ({analysis.protocol})"
    return title if a.path == root else f"{a.name}: {title}"


def _setup_line(setup: dict) -> str:
    model = setup.get("model", "")
    if setup.get("width") is not None:
        model += f" k={setup['width']} on {setup.get('dataset')}"
    facts = [f"{model}, {setup.get('protocol')}"]
    for key, label in (("optimizer", "{}"), ("d", "d = {}"), ("sigma", "σ = {:g}"),
                       ("iterations", "{} iterations"),
                       ("configurations", "{} runs"), ("seeds", "{} seed(s)")):
        if setup.get(key) is not None:
            facts.append(label.format(setup[key]))
    return ", ".join(facts)


_NETWORKS = {"resnet18-v2": "the paper's ResNet-18 (BatchNorm in the projection shortcut)",
             "resnet18-v1": "thermosgd 0.2's ResNet-18 (no BatchNorm in the projection "
                            "shortcut), not the paper's",
             "convnet-v1": "the paper's ConvNet"}


def _network_line(setup: dict) -> list[str]:
    """Which network, entropy chart(s) and measurement conventions a network result used."""
    if "architecture" not in setup:
        return []
    network = setup["architecture"]
    words = f"network {network}: {_NETWORKS.get(network, network)}"
    return [f"{words}; entropy chart(s): {setup.get('charts', 'aligned')}; "
            f"{setup.get('measurement', 'thermosgd')} measurement conventions"]


_TABLE4_ORDER = ("r2", "a2/R", "2a4/R", "a5/R", "(a1-a2)/R", "(2a3-a5)/R", "(2a4-a5)/R",
                 "max_rel_error", "mean_rel_error")


def _table4_comparison(analysis: Analysis):
    """Table 4 fitted on each entropy chart beside the paper's entries as printed."""
    v3 = analysis.checks.get("V3", {})
    fits = {k: v3.get(k) for k in TABLE4_CHARTS}
    fitted = [f for f in fits.values() if isinstance(f, dict) and "skipped" not in f]
    printed = fitted[0].get("paper_printed") if fitted else None
    if not fitted or (printed is None and "table4_raw" not in v3):
        return None  # one fit and nothing published to set beside it: the checks say it all
    printed = printed or {}

    def cell(fit, metric):
        value = fit.get(metric) if isinstance(fit, dict) else None
        if not isinstance(value, (int, float)):
            return "—"
        return f"{100 * value:.1f}%" if metric.endswith("rel_error") else f"{value:.4g}"

    rows = [(metric.replace("r2", "R²").replace("max_rel_error", "max. relative error")
             .replace("mean_rel_error", "mean relative error"),
             cell(fits["table4"], metric), cell(fits["table4_raw"], metric),
             printed.get(metric, "—"))
            for metric in _TABLE4_ORDER if any(metric in f for f in fitted)]
    head = ("Table 4", "ours: aligned chart", "ours: paper's raw chart", "paper, as printed")
    return head, rows, analysis.setup.get("paper_note", "")


NAMES_SHOWN = 10  # names listed per line; analysis.json keeps them all


def _names(names: list) -> str:
    """The first ``NAMES_SHOWN`` names, then how many more (a ResNet has 4800 channels)."""
    shown = ", ".join(str(n) for n in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _run_lines(runs: dict) -> list[str]:
    labels = {"missing": "missing (not finished)", "diverged": "diverged, left out",
              "converging": "still converging (appendix H), left out of the checks",
              "damaged": "damaged, left out"}
    return [f"{labels.get(k, k)}: {_names(v)}" for k, v in runs.items() if v]


def _ratio(a, b) -> str:
    a, b = float(a), float(b)
    return f"{a / b:.3f}" if np.isfinite(a) and np.isfinite(b) and b > 0 else "—"


def _kappa(row) -> str:
    """The gradient's radial push against weight decay (its mean over the averaged logs):
    what the rotational equilibrium of a matrix that is not scale-invariant neglects."""
    value = float(row.get("radial_force", np.nan))
    return f"{value:+.2f}" if np.isfinite(value) else "—"


def _layer_table(table: pd.DataFrame) -> list[list[str]]:
    """One row per layer of a table whose rows have a ``level`` (a monitored run), in the
    model's order, then "other" and "all": its stationary state (means over its last logs,
    ``analysis.monitor.STATIONARY_LOGS``) against its prediction, and its regime at the last
    log."""
    if "level" not in table or table.empty:
        return []
    level = table["level"]
    groups = table.loc[level == "group", "layer"].value_counts()
    rows = [["layer", "d", "groups", "norm r", "r / r*", "rms angle per step", "angle / θ*",
             "radial push κ", "regime (last log)", "prediction"]]
    order = {name: k for k, name in enumerate(layer_names(table))}
    layers = table[level == "layer"]
    layers = layers.iloc[np.argsort([order.get(g, len(order)) for g in layers["group"]],
                                    kind="stable")]
    for _, row in pd.concat([layers, table[level.isin(["other", "all"])]]).iterrows():
        exact = bool(row["scale_invariant"])
        kind = {"other": "none (biases, gains)", "all": "union of the scale-invariant groups"
                }.get(row["level"], "scale-invariant" if exact else "approximate (not "
                      "scale-invariant)")
        count = groups.get(row["group"], 1 if exact and row["level"] == "layer" else 0)
        rows.append([str(row["group"]), f"{int(row['d'])}", str(count) if count else "—",
                     f"{float(row['norm']):.4g}",
                     _ratio(row["norm"], row["radius_theory_corrected"]),
                     f"{float(row['angular_update']):.3g}",
                     _ratio(row["angular_update"], row["angular_update_theory"]),
                     _kappa(row), str(row["regime"] or "—"), kind])
    return rows


def summary_lines(analysed: list[Analysed]) -> list[str]:
    """What the analysis found, a few lines per protocol (the CLI prints them)."""
    lines = []
    for a in analysed:
        if a.error:
            lines.append(f"{a.name}: not analysed: {a.error}")
            continue
        for analysis in a.analyses:
            judged = [c for c in judge(analysis.checks) if c.status != "info"]
            if not judged and analysis.setup.get("headline"):
                lines.append(f"{analysis.name}: {analysis.setup['headline']}")
                lines += [f"  {line}" for line in _run_lines(analysis.runs)]
                continue
            passed = sum(c.status == "pass" for c in judged)
            failed = [c.name for c in judged if c.status != "pass"]
            what = f"{len(analysis.table)} configurations" + (
                f", {analysis.protocol}" if analysis.protocol != analysis.name else "")
            lines.append(f"{analysis.name}: {passed} of {len(judged)} judged checks pass "
                         f"({what})" + (f"; not passing: {'; '.join(failed)}" if failed else ""))
            lines += [f"  {line}" for line in _run_lines(analysis.runs)]
    return lines


def plot(path, *, analysed: list[Analysed] | None = None) -> list[Path]:
    """Every figure of every result at ``path``, PNG and PDF; returns the written paths.
    ``analysed``: :func:`analyse`'s answer for ``path``, if already made."""
    written = []
    for a in analysed if analysed is not None else analyse(path, bootstrap=0):
        for analysis in a.analyses:
            for png in _figures.draw(analysis, formats=(".png", ".pdf")).values():
                written += [png, png.with_suffix(".pdf")]
    return written


def _section(a: Analysed, analysis: Analysis, root: Path, dest: Path) -> _page.Section:
    figures = {caption: png.relative_to(dest)
               for caption, png in _figures.draw(analysis, reuse=True).items()}
    lines = [] if analysis.table.empty else [_setup_line(analysis.setup)]
    table4 = analysis.checks.get("V3", {}).get("table4", {})
    if "paper" in table4 and not table4["paper"]:
        lines.append("the paper's Table 4 has no row for this setup; its predictions are the "
                     "targets in the tolerance column")
    lines += _network_line(analysis.setup) + list(analysis.setup.get("lines", []))
    return _page.Section(title=_title(a, analysis, root),
                         lines=lines + _run_lines(analysis.runs), checks=judge(analysis.checks),
                         figures=figures, no_figure="No figure for this protocol.",
                         comparison=_table4_comparison(analysis),
                         table=_layer_table(analysis.table),
                         headline=analysis.setup.get("headline", ""),
                         short=analysis.setup.get("short", ""))


_COMPARED = ("V1.interior_median_rel_error", "V1.compressibility_interior_median",
             "angles.preconditioner.interior_median_rel_error")  # reported, compared too


def _side_by_side(analysed: list[Analysed], root: Path) -> list[_page.Section]:
    """One table per protocol that several results share (an SGD and a momentum result, say):
    every judged check, and the few reported numbers of ``_COMPARED``, a column per result."""
    by_protocol = {}
    for a in analysed:
        for analysis in a.analyses if not a.error else []:
            if not analysis.skipped:
                by_protocol.setdefault(analysis.protocol, []).append((a, analysis))
    sections = []
    for protocol, found in by_protocol.items():
        if len(found) < 2:
            continue
        found.sort(key=lambda pair: pair[1].setup.get("optimizer", "sgd") != "sgd")  # SGD first
        columns = [{c.key: c for c in judge(analysis.checks)} for _, analysis in found]
        keys = []
        for rows in columns:  # a monitored run judges nothing: its reported numbers compare
            keys += [k for k, c in rows.items() if k not in keys
                     and (c.status != "info" or k in _COMPARED or protocol == "monitor")]
        head = ["check"] + [a.name + (f" ({analysis.setup['optimizer']})"
                                      if "optimizer" in analysis.setup else "")
                            for a, analysis in found]
        table = [head]
        for key in keys:
            name = next(rows[key].name for rows in columns if key in rows)
            table.append([name] + [
                "—" if key not in rows else f"{_page.value_text(rows[key])} ({rows[key].status})"
                if rows[key].status != "info" else _page.value_text(rows[key])
                for rows in columns])
        sections.append(_page.Section(
            title=f"Side by side: {_PROTOCOL_NAMES.get(protocol, protocol)}",
            lines=[f"{len(found)} results of {protocol}: each check's value (and verdict) per "
                   "result" + ("" if protocol == "monitor" else
                               ", the optimizer in the column's title")], table=table))
    return sections


def report(path, *, bootstrap: int = 1000, analysed: list[Analysed] | None = None,
           out=None) -> tuple[Path, Path]:
    """Analyse every result at ``path`` and write one ``report.html`` (self-contained) and
    ``report.md`` there, a section per protocol of each result; the analysis files and the
    figures the Markdown links to are written too. ``analysed``: :func:`analyse`'s answer for
    ``path``, if already made (with the same ``out``). ``out``: write everything there
    instead, laid out as under ``path``."""
    path = Path(path)
    dest = Path(out) if out is not None else path
    if analysed is None:
        analysed = analyse(path, bootstrap=bootstrap, out=out)
    sections = []
    for a in analysed:
        if a.error:
            sections.append(_page.Section(title=a.name, checks=[_page.Check(
                "analysis", None, "", "fail", shown=a.error)]))
            continue
        sections += [_section(a, analysis, path, dest) for analysis in a.analyses]
    sections = _side_by_side(analysed, path) + sections
    title = (f"thermosgd report: {analysed[0].name}" if len(analysed) == 1
             else f"thermosgd report: {path.name} ({len(analysed)} results)")
    setup = [(f"{s.title}", line) for s in sections for line in s.lines[:1]]
    provenance = _io.provenance()
    revision = f"{provenance['package_version']}, git revision {provenance['git_revision']}"
    setup.append(("thermosgd", revision))
    kinds = {a.kind for a in analysed}
    intro = ([INTRO] if kinds - {"monitor"} else []) + ([MONITOR_INTRO] if "monitor" in kinds
                                                        else [])
    # a monitored run is reported, not judged: the rules of the paper's checks would be noise
    tolerances = tolerance_lines() if kinds - {"monitor"} else []
    written = _page.write_page(dest, _page.Page(title=title, intro=intro, setup=setup,
                                                sections=sections, tolerances=tolerances))
    write_analyses(path, analysed, out=out)
    return written
