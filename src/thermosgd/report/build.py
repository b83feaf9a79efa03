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

from thermosgd.analysis.rules import judge, tolerance_lines
from thermosgd.analysis.sources import Analysis, analyse_path, write_analysis
from thermosgd.report import figures as _figures
from thermosgd.report import page as _page
from thermosgd.results import io as _io
from thermosgd.results.locate import locate

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


@dataclass
class Analysed:
    kind: str  # the manifest's kind: how the result was read, nothing more
    path: Path
    analyses: list[Analysis] = field(default_factory=list)  # one per protocol
    error: str | None = None  # why it could not be analysed

    @property
    def name(self) -> str:
        return self.path.name


def analyse(path, *, bootstrap: int = 1000) -> list[Analysed]:
    """Analyse every result at ``path`` (nothing is written). Raises ValueError when ``path``
    holds no result, when its only result cannot be analysed, or when none of several can."""
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {bootstrap}")
    located = locate(path)
    out = []
    for kind, where in located:
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


def write_analyses(path, analysed: list[Analysed]) -> list[Path]:
    """Each result's ``analysis.json`` and ``analysis_table.csv`` in its own folder; for a folder
    of several results also ``path/analysis.json`` (an index) and ``path/analysis_table.csv``
    (every stationary table, a ``result`` column first)."""
    path = Path(path)
    written, index, every = [], {}, []
    for a in analysed:
        if a.error:
            index[a.name] = {"kind": a.kind, "error": a.error}
            continue
        written += write_analysis(a.path, a.analyses)
        index[a.name] = {"kind": a.kind, "files": ["analysis.json", "analysis_table.csv"]}
        every += [Analysis(f"{a.name}/{x.name}" if a.path != path else x.name, x.protocol,
                           x.table, x.checks, x.setup) for x in a.analyses]
    if [a.path for a in analysed] != [path]:
        written += write_analysis(path, every, index=index)
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
    if setup.get("optimizer") not in (None, "sgd"):  # older results and plain SGD say nothing
        facts.append(f"optimizer {setup['optimizer']}")
    for key, label in (("d", "d = {}"), ("sigma", "σ = {:g}"), ("iterations", "{} iterations"),
                       ("configurations", "{} runs"), ("seeds", "{} seed(s)")):
        if setup.get(key) is not None:
            facts.append(label.format(setup[key]))
    return ", ".join(facts)


def _run_lines(runs: dict) -> list[str]:
    labels = {"missing": "missing (not finished)", "diverged": "diverged, left out",
              "converging": "still converging (appendix H), left out of the checks"}
    return [f"{labels.get(k, k)}: {', '.join(v)}" for k, v in runs.items() if v]


def summary_lines(analysed: list[Analysed]) -> list[str]:
    """What the analysis found, a few lines per protocol (the CLI prints them)."""
    lines = []
    for a in analysed:
        if a.error:
            lines.append(f"{a.name}: not analysed: {a.error}")
            continue
        for analysis in a.analyses:
            judged = [c for c in judge(analysis.checks) if c.status != "info"]
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


def _section(a: Analysed, analysis: Analysis, root: Path) -> _page.Section:
    figures = {caption: png.relative_to(root)
               for caption, png in _figures.draw(analysis, reuse=True).items()}
    lines = [] if analysis.table.empty else [_setup_line(analysis.setup)]
    table4 = analysis.checks.get("V3", {}).get("table4", {})
    if "paper" in table4 and not table4["paper"]:
        lines.append("the paper's Table 4 has no row for this setup; its predictions are the "
                     "targets in the tolerance column")
    return _page.Section(title=_title(a, analysis, root),
                         lines=lines + _run_lines(analysis.runs), checks=judge(analysis.checks),
                         figures=figures, no_figure="No figure for this protocol.")


def report(path, *, bootstrap: int = 1000,
           analysed: list[Analysed] | None = None) -> tuple[Path, Path]:
    """Analyse every result at ``path`` and write one ``report.html`` (self-contained) and
    ``report.md`` there, a section per protocol of each result; the analysis files and the
    figures the Markdown links to are written too. ``analysed``: :func:`analyse`'s answer for
    ``path``, if already made."""
    path = Path(path)
    if analysed is None:
        analysed = analyse(path, bootstrap=bootstrap)
    sections = []
    for a in analysed:
        if a.error:
            sections.append(_page.Section(title=a.name, checks=[_page.Check(
                "analysis", None, "", "fail", shown=a.error)]))
            continue
        sections += [_section(a, analysis, path) for analysis in a.analyses]
    title = (f"thermosgd report: {analysed[0].name}" if len(analysed) == 1
             else f"thermosgd report: {path.name} ({len(analysed)} results)")
    setup = [(f"{s.title}", line) for s in sections for line in s.lines[:1]]
    provenance = _io.provenance()
    revision = f"{provenance['package_version']}, git revision {provenance['git_revision']}"
    setup.append(("thermosgd", revision))
    written = _page.write_page(path, _page.Page(title=title, intro=[INTRO], setup=setup,
                                                sections=sections,
                                                tolerances=tolerance_lines()))
    write_analyses(path, analysed)
    return written
