"""One report format for every result thermosgd analyses (isotropic model, network sweeps).

A :class:`Page` is a title, an introduction, a key/value setup table and :class:`Section`\\ s
(one per protocol or sweep), each with setup lines, a table of :class:`Check`\\ s and figures. It
renders as one self-contained HTML file (the PNGs inlined as base64, nothing fetched) and as a
Markdown summary that links the same PNGs. Both carry the same facts in the same order: a
summary count, the sections, the checks that miss or sit near their tolerance, the tolerances.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from thermosgd.results import io as _io

__all__ = ["Check", "Page", "Section", "render_html", "render_markdown", "write_page"]


@dataclass(frozen=True)
class Check:
    """One row of a checks table."""

    name: str  # what is checked
    value: float | None
    tolerance: str  # the rule in words; "reported" when the value is not judged
    status: str  # "pass", "fail", "info" (not judged) or "n/a" (judged but missing)
    paper: float | None = None  # the paper's value for the same setup, if any
    interval: str = ""  # 95 % confidence interval, as text
    shown: str | None = None  # the value as printed, when it says more than the number
    borderline: bool = False  # a pass near the edge of its tolerance, or not resolved
    note: str = ""  # why it is borderline, said where the page lists the misses


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)  # setup and remarks, one bullet each
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG, relative to the page
    no_figure: str = ""  # said when there is no figure


@dataclass
class Page:
    title: str
    intro: list[str] = field(default_factory=list)  # paragraphs
    setup: list[tuple[str, str]] = field(default_factory=list)  # key, value (a folded table)
    sections: list[Section] = field(default_factory=list)
    tolerances: list[str] = field(default_factory=list)
    empty: str = "Nothing was found to report."  # said when there is no section

    def judged(self) -> list[tuple[Section, Check]]:
        return [(s, c) for s in self.sections for c in s.checks if c.status != "info"]


def value_text(check: Check) -> str:
    if check.shown is not None:
        return check.shown
    if check.value is None:
        return "n/a"
    if isinstance(check.value, int):
        return str(check.value)
    return f"{check.value:.4g}"


def _paper(check: Check) -> str:
    return "" if check.paper is None else f"{check.paper:.4g}"


def _status(check: Check) -> str:
    return check.status + (" (borderline)" if check.borderline else "")


def summary_line(page: Page) -> str:
    judged = [c for _, c in page.judged()]
    count = {k: sum(c.status == k for c in judged) for k in ("pass", "fail", "n/a")}
    return (f"{count['pass']} of {len(judged)} judged checks pass ({count['fail']} fail, "
            f"{count['n/a']} missing or not finite, {sum(c.borderline for c in judged)} "
            "borderline).")


def misses(page: Page) -> list[str]:
    """One sentence per judged check that fails, is missing or is borderline."""
    out = []
    for section, c in page.judged():
        if c.status == "pass" and not c.borderline:
            continue
        kind = {"fail": "fails", "n/a": "is missing or not finite"}.get(c.status, "is borderline")
        rule = f" against a tolerance {c.tolerance}" if c.tolerance else ""
        note = f" ({c.note})" if c.note else ""
        out.append(f"{section.title}, {c.name} {kind}: {value_text(c)}{rule}{note}.")
    return out or ["No judged check fails, is missing or is borderline."]


_HEAD = ("check", "value", "95 % interval", "tolerance", "status", "paper")


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(page: Page) -> str:
    out = [f"# {page.title}", ""]
    for paragraph in page.intro:
        out += [paragraph, ""]
    if page.setup:
        out += ["<details><summary>Setup</summary>", "", "| key | value |", "|---|---|"]
        out += [f"| {_md(k)} | {_md(v)} |" for k, v in page.setup] + ["", "</details>", ""]
    out += ["## Summary", "", summary_line(page), ""]
    if not page.sections:
        out += [page.empty, ""]
    for section in page.sections:
        out += [f"## {section.title}", ""] + [f"- {line}" for line in section.lines]
        out += [""] if section.lines else []
        if section.checks:
            out += ["| " + " | ".join(_HEAD) + " |", "|---" * len(_HEAD) + "|"]
            for c in section.checks:
                status = "**FAIL**" if c.status == "fail" else (
                    "**n/a**" if c.status == "n/a" else _status(c))
                out.append(f"| {_md(c.name)} | {_md(value_text(c))} | {c.interval} | "
                           f"{_md(c.tolerance)} | {status} | {_paper(c)} |")
            out.append("")
        for caption, path in section.figures.items():
            out += [f"![{section.title}: {caption}]({Path(path).as_posix()})", ""]
        if not section.figures and section.no_figure:
            out += [f"_{section.no_figure}_", ""]
    out += ["## Where it misses", ""] + [f"- {line}" for line in misses(page)] + [""]
    if page.tolerances:
        out += ["## Tolerances", ""] + [f"- {line}" for line in page.tolerances] + [""]
    return "\n".join(out)


_STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
          ".pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}.info{color:#666}"
          ".n\\/a{color:#9a6700;font-weight:bold}img{max-width:100%}")
# Counts the images that decoded into <body data-figures-loaded>, so a headless browser can check.
_SCRIPT = ("window.addEventListener('load',()=>{document.body.dataset.figuresLoaded="
           "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});")


def render_html(page: Page, root: Path) -> str:
    """The page as one HTML file; figure paths are read relative to ``root`` and inlined."""
    e = html.escape
    body = [f"<h1>{e(page.title)}</h1>"] + [f"<p>{e(p)}</p>" for p in page.intro]
    if page.setup:
        body.append("<details><summary>Setup</summary><table>")
        body += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in page.setup]
        body.append("</table></details>")
    body += ["<h2>Summary</h2>", f"<p>{e(summary_line(page))}</p>"]
    if not page.sections:
        body.append(f"<p>{e(page.empty)}</p>")
    for section in page.sections:
        body.append(f"<h2>{e(section.title)}</h2>")
        if section.lines:
            body += ["<ul>"] + [f"<li>{e(line)}</li>" for line in section.lines] + ["</ul>"]
        if section.checks:
            body.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in _HEAD) + "</tr>")
            body += [f"<tr><td>{e(c.name)}</td><td>{e(value_text(c))}</td><td>{e(c.interval)}"
                     f"</td><td>{e(c.tolerance)}</td><td class='{c.status}'>{e(_status(c))}</td>"
                     f"<td>{_paper(c)}</td></tr>" for c in section.checks]
            body.append("</table>")
        for caption, path in section.figures.items():
            data = base64.b64encode((Path(root) / path).read_bytes()).decode("ascii")
            body.append(f"<h3>{e(caption)}</h3><img class='figure' alt='{e(caption)}' "
                        f"src='data:image/png;base64,{data}'>")
        if not section.figures and section.no_figure:
            body.append(f"<p><em>{e(section.no_figure)}</em></p>")
    body += ["<h2>Where it misses</h2>", "<ul>"]
    body += [f"<li>{e(line)}</li>" for line in misses(page)] + ["</ul>"]
    if page.tolerances:
        body += ["<h2>Tolerances</h2>", "<ul>"]
        body += [f"<li>{e(line)}</li>" for line in page.tolerances] + ["</ul>"]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(page.title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
            f"<body>{''.join(body)}</body></html>\n")


def write_page(out_dir, page: Page) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir`` (atomically); return both."""
    out_dir = Path(out_dir)
    page_html, summary = out_dir / "report.html", out_dir / "report.md"
    text = render_html(page, out_dir)  # reads the figures before anything is written
    _io.atomic_write(page_html, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    _io.atomic_write(summary, lambda tmp: tmp.write_text(render_markdown(page), encoding="utf-8"))
    return page_html, summary
