"""``thermosgd analyze | plot | report DIR`` on any result directory thermosgd writes.

DIR is a network sweep (``thermosgd sweep run --out``), an isotropic-model output
(``thermosgd reproduce isotropic --out``), or a folder whose subfolders are such results (say a
sweep per protocol). Every result is analysed with its own module (``analysis_nn`` or
``analysis`` through ``reproduce.analyze_isotropic``), and the report of all of them is one
page in the shared format (``thermosgd.report.page``).

In a folder of several results, one that cannot be analysed (an unfinished sweep, too few
configurations) is reported with its reason and does not stop the others; a single result that
cannot be analysed is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from thermosgd.report import page as _page
from thermosgd.results import io as _io

__all__ = ["Analysed", "analyse", "locate", "plot", "report", "summary_lines", "write_analyses"]

KINDS = ("sweep", "isotropic")


@dataclass
class Analysed:
    kind: str  # "sweep" or "isotropic"
    path: Path
    result: dict | None = None  # analysis_nn.analyze_sweep's dict, or {"checks", "tables"}
    error: str | None = None  # why it could not be analysed

    @property
    def name(self) -> str:
        return self.path.name


def _kind(path: Path) -> str | None:
    try:
        return json.loads((path / _io.MANIFEST).read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def locate(path) -> list[tuple[str, Path]]:
    """The results at ``path``: itself, or its subfolders that are results. Raises ValueError."""
    path = Path(path)
    kind = _kind(path)
    if kind in KINDS:
        return [(kind, path)]
    found = []
    if path.is_dir():
        found = [(k, p) for p in sorted(path.iterdir()) if p.is_dir() and (k := _kind(p)) in KINDS]
    if not found:
        raise ValueError(f"{path} is not a sweep directory, an isotropic output or a folder "
                         "holding them (no thermosgd.json of kind 'sweep' or 'isotropic'); give "
                         "the --out of `thermosgd sweep run` or `thermosgd reproduce isotropic`")
    return found


def _analyse_one(kind: str, path: Path, bootstrap: int) -> dict:
    if kind == "sweep":
        from thermosgd.analysis.network import analyze_sweep

        return analyze_sweep(path, bootstrap=bootstrap)
    from thermosgd.reproduce import analyze_isotropic

    checks, tables = analyze_isotropic(path)
    return {"checks": checks, "tables": tables}


def analyse(path, *, bootstrap: int = 1000) -> list[Analysed]:
    """Analyse every result at ``path`` (nothing is written). Raises ValueError when ``path``
    holds no result, when its only result cannot be analysed, or when none of several can."""
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {bootstrap}")
    located = locate(path)
    out = []
    for kind, where in located:
        try:
            out.append(Analysed(kind, where, _analyse_one(kind, where, bootstrap)))
        except ValueError as err:
            if len(located) == 1:
                raise
            out.append(Analysed(kind, where, error=str(err)))
    if all(a.error for a in out):
        raise ValueError(f"{path}: no result could be analysed:\n" +
                         "\n".join(f"  {a.name}: {a.error}" for a in out))
    return out


def _isotropic_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([t.assign(protocol=p) for p, t in tables.items()], ignore_index=True)


def write_analyses(path, analysed: list[Analysed]) -> list[Path]:
    """Each result's analysis files in its own folder; for a folder of several results also
    ``path/analysis.json`` (an index) and ``path/analysis_table.csv`` (every stationary table,
    a ``result`` column first)."""
    from thermosgd.analysis.network import write_analysis

    written, tables, index = [], [], {}
    for a in analysed:
        if a.error:
            index[a.name] = {"kind": a.kind, "error": a.error}
            continue
        if a.kind == "sweep":
            written += write_analysis(a.path, a.result)
            table = a.result["table"]
            index[a.name] = {"kind": a.kind, "files": ["analysis.json", "analysis_table.csv",
                                                       "analysis_radius.csv"]}
        else:
            _io.write_json(a.path / "checks.json", a.result["checks"])
            table = _isotropic_table(a.result["tables"])
            _io.write_csv(a.path / "analysis_table.csv", table)
            written += [a.path / "checks.json", a.path / "analysis_table.csv"]
            index[a.name] = {"kind": a.kind, "files": ["checks.json", "analysis_table.csv"]}
        tables.append(table.assign(result=a.name))
    path = Path(path)
    if [a.path for a in analysed] != [path]:
        combined = pd.concat(tables, ignore_index=True)
        combined = combined[["result"] + [c for c in combined.columns if c != "result"]]
        _io.write_csv(path / "analysis_table.csv", combined)
        _io.write_json(path / "analysis.json", {"results": index} | _io.provenance())
        written += [path / "analysis.json", path / "analysis_table.csv"]
    return written


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def summary_lines(analysed: list[Analysed]) -> list[str]:
    """What the analysis found, a few lines per result (the CLI prints them)."""
    lines = []
    for a in analysed:
        if a.error:
            lines.append(f"{a.name}: not analysed: {a.error}")
        elif a.kind == "sweep":
            lines += _sweep_lines(a.result)
        else:
            lines += _isotropic_lines(a)
    return lines


def _sweep_lines(result: dict) -> list[str]:
    lines = [f"{result['setup']['sweep']}: {len(result['table'])} configurations analysed"]
    if result["missing_runs"]:
        lines.append(f"  missing (not finished): {', '.join(result['missing_runs'])}")
    if result["converging_runs"]:
        lines.append(f"  still converging, left out of the fits (appendix H): "
                     f"{', '.join(result['converging_runs'])}")
    v1 = result["V1"]
    lines.append(f"  V1 {v1['quantity']}: median |rel. error| SDE "
                 f"{_pct(v1['sde']['median_rel_error'])}, corrected "
                 f"{_pct(v1['corrected']['median_rel_error'])}")
    if "V3" in result:
        v3 = result["V3"]
        coefs = ", ".join(f"{k} {v:.3f}" for k, v in v3.items()
                          if k.endswith("/R") and isinstance(v, float))
        lines.append(f"  V3 Table 4: R^2 {v3['r2']:.4f}, {coefs}, Maxwell max "
                     f"{_pct(v3['max_rel_error'])}, mean {_pct(v3['mean_rel_error'])}")
    return lines


def _isotropic_lines(a: Analysed) -> list[str]:
    from thermosgd.report.isotropic import checks_table

    rows = checks_table(a.result["checks"])
    lines = [f"{a.name} (isotropic model): {len(a.result['tables'])} protocols analysed"]
    for protocol in a.result["checks"]["protocols"]:
        judged = [r for r in rows if r.protocol == protocol and r.status != "info"]
        passed = sum(r.status == "pass" for r in judged)
        failed = [f"{r.check} {r.metric}" for r in judged if r.status != "pass"]
        lines.append(f"  {protocol}: {passed} of {len(judged)} judged checks pass"
                     + (f"; not passing: {', '.join(failed)}" if failed else ""))
    return lines


def _isotropic_figures(a: Analysed, formats=(".png",), *, reuse=False) -> dict[str, Path]:
    """Panels a-e per protocol into ``<protocol>/figure.<format>``; protocol -> PNG path.
    ``reuse``: keep a PNG newer than its stationary.csv (``reproduce`` drew it already)."""
    from thermosgd.report.figures_isotropic import draw_isotropic, save_figure

    out = {}
    for protocol, table in a.result["tables"].items():
        if "skipped" in a.result["checks"]["protocols"].get(protocol, {}):
            continue
        png, source = a.path / protocol / "figure.png", a.path / protocol / "stationary.csv"
        if reuse and png.is_file() and png.stat().st_mtime >= source.stat().st_mtime:
            out[protocol] = png
            continue
        fig = draw_isotropic(table)
        for suffix in formats:
            save_figure(fig, a.path / protocol / f"figure{suffix}")
        out[protocol] = a.path / protocol / "figure.png"
    return out


def plot(path, *, analysed: list[Analysed] | None = None) -> list[Path]:
    """Every figure of every result at ``path``, PNG and PDF; returns the written paths.
    ``analysed``: :func:`analyse`'s answer for ``path``, if already made."""
    from thermosgd.report.figures_network import plot_sweep

    written = []
    for a in analysed if analysed is not None else analyse(path, bootstrap=0):
        if a.error:
            continue
        if a.kind == "sweep":
            written += plot_sweep(a.path, result=a.result)
        else:
            for png in _isotropic_figures(a, formats=(".png", ".pdf")).values():
                written += [png, png.with_suffix(".pdf")]
    return written


def report(path, *, bootstrap: int = 1000,
           analysed: list[Analysed] | None = None) -> tuple[Path, Path]:
    """Analyse every result at ``path`` and write one ``report.html`` (self-contained) and
    ``report.md`` there, with a section per sweep and per isotropic protocol; the analysis files
    and the figures the Markdown links to are written too. ``analysed``: :func:`analyse`'s
    answer for ``path``, if already made."""
    from thermosgd.report.isotropic import isotropic_page
    from thermosgd.report.network import INTRO, TOLERANCE_LINES, sweep_figures, sweep_section

    path = Path(path)
    if analysed is None:
        analysed = analyse(path, bootstrap=bootstrap)
    if len(analysed) == 1 and analysed[0].kind == "isotropic":  # the page as reproduce writes it
        (a,) = analysed
        pngs = {p: f.relative_to(path) for p, f in _isotropic_figures(a, reuse=True).items()}
        written = _page.write_page(path, isotropic_page(a.result["checks"], pngs))
        write_analyses(path, analysed)
        return written
    sections, intro, tolerances = [], [], []
    for a in analysed:
        prefix = a.path.relative_to(path)
        if a.error:
            sections.append(_page.Section(title=a.name, checks=[_page.Check(
                "analysis", None, "", "fail", shown=a.error)]))
            continue
        if a.kind == "sweep":
            figures = {k: prefix / v for k, v in sweep_figures(a.path, a.result).items()}
            section = sweep_section(a.result, figures)
            if a.path != path and section.title != a.name:
                section.title = f"{a.name}: {section.title}"
            sections.append(section)
            intro, tolerances = _once(intro, INTRO), _once(tolerances, *TOLERANCE_LINES)
        else:
            pngs = {p: f.relative_to(path)
                    for p, f in _isotropic_figures(a, reuse=True).items()}
            page = isotropic_page(a.result["checks"], pngs)
            for section in page.sections:  # a folder's isotropic output: its name first
                section.title = f"{a.name}: {section.title}"
            sections += page.sections
            intro = _once(intro, *page.intro[:1])
            tolerances = _once(tolerances, *page.tolerances)
    title = (f"thermosgd report: {analysed[0].name}" if len(analysed) == 1
             else f"thermosgd report: {path.name} ({len(analysed)} results)")
    written = _page.write_page(path, _page.Page(title=title, intro=intro, sections=sections,
                                                tolerances=tolerances))
    write_analyses(path, analysed)
    return written


def _once(items: list[str], *new: str) -> list[str]:
    return items + [n for n in new if n not in items]
