"""The report of a network sweep: one self-contained HTML file and a Markdown summary.

:func:`write_report` analyses the sweep (``thermosgd.analysis_nn``), draws its figures
(``thermosgd.plots_nn``) and writes ``DIR/report.html`` (figures embedded as base64 PNG, no
external file or network access) and ``DIR/report.md``. Every check is a row: its value, its
tolerance and pass or fail; for fixed LR and fixed ELR the Table-4 row stands beside the paper's
value for the same setup, where the paper has one.

Tolerances (``RULES``):
- V1: the appendix-G corrected prediction's median relative error < 10 % (the SDE prediction is
  reported but not judged: it misses the discretization term, which is large where eta * lambda
  or eta_eff is large, appendix G);
- V3 (Table 4): R^2 >= 0.9; the leading normalized coefficient ((a1-a2)/R for fixed LR, a2/R
  for fixed ELR) within 10 % of +1 or -1; the other two below 0.05 in absolute value; the
  Maxwell relation's mean relative error < 10 % (the paper's worst setup: 12.3 %, its others
  below 6.5 % at the maximum).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

from thermosgd import _io, analysis_nn
from thermosgd.plots_nn import fig_learning_curves, fig_radius_theories, fig_stationary

__all__ = ["RULES", "Check", "checks", "render_html", "render_markdown", "write_report"]


@dataclass(frozen=True)
class Check:
    name: str  # what is checked
    value: float | None
    tolerance: str  # the rule, in words
    status: str  # "pass", "fail" or "info"
    paper: float | None = None  # the paper's value for the same setup (Table 4), if any


def _within(value, target, rel):
    return value is not None and abs(value - target) <= rel * abs(target)


RULES = {  # name: (tolerance text, test on the value)
    "V1 corrected, median abs. rel. error": ("< 10 %", lambda v: v is not None and v < 0.10),
    "R^2": (">= 0.9", lambda v: v is not None and v >= 0.9),
    "(a1-a2)/R": ("1 +- 10 %", lambda v: _within(v, 1.0, 0.10)),
    "a2/R": ("-1 +- 10 %", lambda v: _within(v, -1.0, 0.10)),
    "(2a3-a5)/R": ("abs < 0.05", lambda v: v is not None and abs(v) < 0.05),
    "(2a4-a5)/R": ("abs < 0.05", lambda v: v is not None and abs(v) < 0.05),
    "2a4/R": ("abs < 0.05", lambda v: v is not None and abs(v) < 0.05),
    "a5/R": ("abs < 0.05", lambda v: v is not None and abs(v) < 0.05),
    "Maxwell mean rel. error": ("< 10 %", lambda v: v is not None and v < 0.10),
}


def _judged(name, value, paper=None) -> Check:
    text, test = RULES[name]
    return Check(name, value, text, "pass" if test(value) else "fail", paper)


def checks(result: dict) -> list[Check]:
    """Every check of an analysed sweep, in report order."""
    v1 = result["V1"]
    rows = [_judged("V1 corrected, median abs. rel. error", v1["corrected"]["median_rel_error"]),
            Check("V1 SDE, median abs. rel. error", v1["sde"]["median_rel_error"], "reported",
                  "info"),
            Check("V1 corrected, max abs. rel. error", v1["corrected"]["max_rel_error"], "reported",
                  "info")]
    v3 = result.get("V3")
    if v3:
        paper = v3.get("paper") or {}
        rows.append(_judged("R^2", v3["r2"], paper.get("r2")))
        for name in [k for k in v3 if k.endswith("/R")]:
            rows.append(_judged(name, v3[name], paper.get(name)))
        rows.append(_judged("Maxwell mean rel. error", v3["mean_rel_error"],
                            paper.get("mean_rel_error")))
        rows.append(Check("Maxwell max rel. error", v3["max_rel_error"], "reported", "info",
                          paper.get("max_rel_error")))
        for key in ("interior_mean_rel_error", "interior_max_rel_error"):
            if key in v3:
                rows.append(Check(f"Maxwell {key.replace('_', ' ')}", v3[key], "reported",
                                  "info"))
    rows.append(Check("still converging (appendix H), left out", len(result["converging_runs"]),
                      "reported", "info"))
    return rows


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


_CI_KEYS = {"R^2": "r2", "Maxwell max rel. error": "max_rel_error"}


def _interval(result, name) -> str:
    ci = result.get("V3", {}).get("ci95", {}).get(_CI_KEYS.get(name, name))
    return "" if not ci else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _setup_lines(result) -> list[str]:
    s = result["setup"]
    lines = [(f"{s['model']} k={s['width']} on {s['dataset']}, {s['protocol']}, d = {s['d']}, "
              f"{s['iterations']} iterations, {s['configurations']} configurations"),
             f"finished and stationary: {len(result['table']) - len(result['converging_runs'])}"]
    for key, label in (("missing_runs", "missing (not finished)"),
                       ("diverged_runs", "diverged"),
                       ("converging_runs", "still converging, left out of the fits")):
        if result[key]:
            lines.append(f"{label}: {', '.join(result[key])}")
    return lines


def render_markdown(result: dict, figures: dict[str, str]) -> str:
    """The summary: setup, the checks table, links to the figures (paths relative to DIR)."""
    rows = checks(result)
    out = [f"# {result['setup']['sweep']}", ""] + [f"- {line}" for line in _setup_lines(result)]
    out += ["", "| check | value | 95 % interval | tolerance | status | paper |",
            "|---|---|---|---|---|---|"]
    out += [f"| {c.name} | {_fmt(c.value)} | {_interval(result, c.name)} | {c.tolerance} | "
            f"{c.status} | {_fmt(c.paper)} |" for c in rows]
    out += [""] + [f"![{name}]({path})" for name, path in figures.items()]
    return "\n".join(out) + "\n"


def render_html(result: dict, images: dict[str, bytes]) -> str:
    """One self-contained page: the PNGs are inlined. On load a script counts the images that
    decoded (``data-figures-loaded`` on <body>), so a headless browser can check them."""
    rows = checks(result)
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             ".pass{color:#1a7f37}.fail{color:#cf222e}.info{color:#666}img{max-width:100%}")
    body = [f"<h1>{html.escape(result['setup']['sweep'])}</h1>", "<ul>"]
    body += [f"<li>{html.escape(line)}</li>" for line in _setup_lines(result)] + ["</ul>"]
    body += [("<table><tr><th>check</th><th>value</th><th>95 % interval</th><th>tolerance</th>"
              "<th>status</th><th>paper</th></tr>")]
    body += [f"<tr><td>{html.escape(c.name)}</td><td>{_fmt(c.value)}</td>"
             f"<td>{_interval(result, c.name)}</td><td>{html.escape(c.tolerance)}</td>"
             f"<td class='{c.status}'>{c.status}</td><td>{_fmt(c.paper)}</td></tr>"
             for c in rows] + ["</table>"]
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f"<h2>{html.escape(name)}</h2><img class='figure' alt='{name}' "
                    f"src='data:image/png;base64,{data}'>")
    script = ("window.addEventListener('load',()=>{document.body.dataset.figuresLoaded="
              "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(result['setup']['sweep'])}</title><style>{style}</style>"
            f"<script>{script}</script></head><body>{''.join(body)}</body></html>\n")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(path, *, bootstrap: int = 1000) -> tuple[Path, Path]:
    """Analyse the sweep at ``path`` and write ``report.html`` and ``report.md`` into it (and
    the PNGs the Markdown links to, under ``figures/``)."""
    path = Path(path)
    result = analysis_nn.analyze_sweep(path, bootstrap=bootstrap)
    figures = {"stationary values": fig_stationary(result),
               "radius: SDE against corrected": fig_radius_theories(result),
               "learning curves": fig_learning_curves(result["metrics"], result["setup"])}
    images = {name: _png(fig) for name, fig in figures.items()}
    links = {}
    for name, png in images.items():
        rel = f"figures/report_{name.split(':')[0].replace(' ', '_')}.png"
        _io.atomic_write(path / rel, lambda tmp, png=png: tmp.write_bytes(png))
        links[name] = rel
    page, summary = path / "report.html", path / "report.md"
    _io.atomic_write(page, lambda tmp: tmp.write_text(render_html(result, images)))
    _io.atomic_write(summary, lambda tmp: tmp.write_text(render_markdown(result, links)))
    analysis_nn.write_analysis(path, result)
    return page, summary
