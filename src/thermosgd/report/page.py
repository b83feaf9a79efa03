"""One report format for every result thermosgd analyses.

A :class:`Page` is a title, an introduction, :class:`Section`\\ s (one per protocol of a result)
with their :class:`~thermosgd.analysis.rules.Check` rows and figures, and the tolerances. It
renders as one self-contained HTML file (the PNGs inlined as base64, nothing fetched) and as a
Markdown twin that links the same PNGs. Both read top-down in the order a researcher wants:
what was run and how many checks pass, then per section the headline figure large, the judged
checks beside the paper's values, the other figures; the informational rows fold away
(``<details>``); then where it misses and the tolerances.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from thermosgd.analysis.rules import Check
from thermosgd.results import io as _io

__all__ = ["Check", "Page", "Section", "render_html", "render_markdown", "write_page"]


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)  # what was run, one bullet each
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG, relative to the page
    no_figure: str = ""  # said when there is no figure
    # a side-by-side table (Table 4 on each entropy chart beside the paper): head, rows, note
    comparison: tuple[tuple[str, ...], list[tuple[str, ...]], str] | None = None
    table: list[list[str]] = field(default_factory=list)  # a free table, header row first
    # what a result without judged checks found, in a sentence (a monitored run: its status
    # and how many layers are at equilibrium), and in a few words for the overview's table
    headline: str = ""
    short: str = ""

    def judged(self) -> list[Check]:
        return [c for c in self.checks if c.status != "info"]

    def reported(self) -> list[Check]:
        return [c for c in self.checks if c.status == "info"]

    def verdict(self) -> str:
        judged = self.judged()
        if not judged and self.short:
            return self.short
        if not judged and self.table:
            return "comparison (below)"
        passed = sum(c.status == "pass" for c in judged)
        return f"{passed} of {len(judged)} pass"


@dataclass
class Page:
    title: str
    intro: list[str] = field(default_factory=list)  # paragraphs
    setup: list[tuple[str, str]] = field(default_factory=list)  # key, value (a folded table)
    sections: list[Section] = field(default_factory=list)
    tolerances: list[str] = field(default_factory=list)  # the rules; the last one shown open
    empty: str = "Nothing was found to report."  # said when there is no section

    def judged(self) -> list[tuple[Section, Check]]:
        return [(s, c) for s in self.sections for c in s.judged()]


def value_text(check: Check) -> str:
    if check.shown is not None:
        return check.shown
    if check.value is None:
        return "n/a"
    if isinstance(check.value, int):
        return str(check.value)
    return f"{check.value:.4g}"


def _paper(check: Check) -> str:
    if check.paper_shown is not None:  # as the paper prints it
        return check.paper_shown
    return "" if check.paper is None else f"{check.paper:.4g}"


def _status(check: Check) -> str:
    return check.status + (" (borderline)" if check.borderline else "")


def summary_line(page: Page) -> str:
    """How many judged checks pass; where nothing is judged, what the results found (their
    headlines) or why nothing could be judged."""
    judged = [c for _, c in page.judged()]
    if not judged:
        told = [s.headline if len(page.sections) == 1 else f"{s.title}: {s.headline}"
                for s in page.sections if s.headline]
        if told:
            return " ".join(told)
        if not page.sections:
            return f"Nothing could be judged: {page.empty}"
        return ("Nothing could be judged: these results carry reported numbers only, no check "
                "with a tolerance.")
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
    if not out and not page.judged():
        return ["Nothing was judged against a tolerance (the summary says why)."]
    return out or ["No judged check fails, is missing or is borderline."]


_JUDGED_HEAD = ("check", "ours", "95 % interval", "paper", "tolerance", "status")
_INFO_HEAD = ("number", "value", "95 % interval", "paper")


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_status(c: Check) -> str:
    return {"fail": "**FAIL**", "n/a": "**n/a**"}.get(c.status, _status(c))


def render_markdown(page: Page) -> str:
    out = [f"# {page.title}", ""]
    out += ["## Summary", "", f"**{summary_line(page)}**", ""]
    if page.sections:
        out += ["| result | verdict | what was run |", "|---|---|---|"]
        out += [f"| {_md(s.title)} | {s.verdict()} | {_md('; '.join(s.lines[:1]))} |"
                for s in page.sections] + [""]
    for paragraph in page.intro:
        out += [paragraph, ""]
    if not page.sections:
        out += [page.empty, ""]
    for section in page.sections:
        out += [f"## {section.title}", ""] + [f"- {line}" for line in section.lines]
        out += [""] if section.lines else []
        figures = list(section.figures.items())
        for caption, path in figures[:1]:
            out += [f"![{section.title}: {caption}]({Path(path).as_posix()})", ""]
        if section.table:  # after the headline figure: a table of 60 layers would bury it
            head, *rows = section.table
            out += ["| " + " | ".join(_md(h) for h in head) + " |", "|---" * len(head) + "|"]
            out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""]
        if section.judged():
            out += ["| " + " | ".join(_JUDGED_HEAD) + " |", "|---" * len(_JUDGED_HEAD) + "|"]
            out += [f"| {_md(c.name)} | {_md(value_text(c))} | {c.interval} | {_paper(c)} | "
                    f"{_md(c.tolerance)} | {_md_status(c)} |" for c in section.judged()]
            out.append("")
        if section.comparison:
            head, rows, note = section.comparison
            out += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            out += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows] + [""]
            out += [f"_{_md(note)}_", ""] if note else []
        for caption, path in figures[1:]:
            out += [f"![{section.title}: {caption}]({Path(path).as_posix()})", ""]
        if not figures and section.no_figure:
            out += [f"_{section.no_figure}_", ""]
        if section.reported():
            folded = f"{len(section.reported())} reported numbers (not judged)"
            out += [f"<details><summary>{folded}</summary>", "",
                    "| " + " | ".join(_INFO_HEAD) + " |", "|---" * len(_INFO_HEAD) + "|"]
            out += [f"| {_md(c.name)} | {_md(value_text(c))} | {c.interval} | {_paper(c)} |"
                    for c in section.reported()]
            out += ["", "</details>", ""]
    out += ["## Where it misses", ""] + [f"- {line}" for line in misses(page)] + [""]
    if page.tolerances:
        *rules, last = page.tolerances
        out += ["## Tolerances", "", last, "", "<details><summary>Every rule</summary>", ""]
        out += [f"- {line}" for line in rules] + ["", "</details>", ""]
    if page.setup:
        out += ["<details><summary>Setup</summary>", "", "| key | value |", "|---|---|"]
        out += [f"| {_md(k)} | {_md(v)} |" for k, v in page.setup] + ["", "</details>", ""]
    return "\n".join(out)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1400px;margin:1.5em auto;padding:0 1em;"
    "color:#222;line-height:1.4}h1{margin-bottom:.2em}"
    "h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:.2em}"
    ".glance{background:#f6f8fa;border:1px solid #d0d7de;border-radius:8px;padding:1em 1.5em}"
    ".count{font-size:1.6em;font-weight:600;margin:.2em 0 .5em}"
    ".count.told{font-size:1.15em;font-weight:500}"
    "table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #d0d7de;"
    "padding:4px 10px;text-align:left;vertical-align:top}th{background:#eef1f4}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}.info{color:#666}"
    ".n\\/a{color:#9a6700;font-weight:bold}.borderline{color:#9a6700}"
    "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}"
    "figure.headline img{width:100%}"
    "figcaption{color:#555;font-size:.95em}details{margin:.8em 0}"
    "summary{cursor:pointer;color:#0969da}.lede{color:#444}")
# Counts the images that decoded into <body data-figures-loaded>, so a headless browser can check.
_SCRIPT = ("window.addEventListener('load',()=>{document.body.dataset.figuresLoaded="
           "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});")


def _row(cells, classes=()) -> str:
    classes = list(classes) + [""] * (len(cells) - len(classes))
    return "<tr>" + "".join(f"<td class='{k}'>{v}</td>" if k else f"<td>{v}</td>"
                            for v, k in zip(cells, classes)) + "</tr>"


def _table(head, rows) -> str:
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")


def _figure(root: Path, caption: str, path, headline=False) -> str:
    e = html.escape
    data = base64.b64encode((Path(root) / path).read_bytes()).decode("ascii")
    kind = " class='headline'" if headline else ""
    return (f"<figure{kind}><img class='figure' alt='{e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{e(caption)}</figcaption></figure>")


def render_html(page: Page, root: Path) -> str:
    """The page as one HTML file; figure paths are read relative to ``root`` and inlined."""
    e = html.escape
    told = "" if page.judged() else " told"  # a sentence, not a count: smaller type
    body = [f"<h1>{e(page.title)}</h1>", "<div class='glance'>",
            f"<div class='count{told}'>{e(summary_line(page))}</div>"]
    if page.sections:
        body.append(_table(("result", "verdict", "what was run"), [
            _row((f"<a href='#s{k}'>{e(s.title)}</a>", e(s.verdict()), e("; ".join(s.lines[:1]))))
            for k, s in enumerate(page.sections)]))
    body.append("</div>")
    body += [f"<p class='lede'>{e(p)}</p>" for p in page.intro]
    if not page.sections:
        body.append(f"<p>{e(page.empty)}</p>")
    for k, section in enumerate(page.sections):
        body.append(f"<h2 id='s{k}'>{e(section.title)}</h2>")
        if section.lines:
            body += ["<ul>"] + [f"<li>{e(line)}</li>" for line in section.lines] + ["</ul>"]
        figures = list(section.figures.items())
        body += [_figure(root, c, p, headline=True) for c, p in figures[:1]]
        if section.table:
            head, *rows = section.table
            body.append(_table([e(h) for h in head], [_row([e(c) for c in row]) for row in rows]))
        if section.judged():
            body.append(_table(_JUDGED_HEAD, [
                _row((e(c.name), e(value_text(c)), e(c.interval), _paper(c), e(c.tolerance),
                      e(_status(c))),
                     ("", "num", "", "num", "", c.status + (" borderline" if c.borderline
                                                             else "")))
                for c in section.judged()]))
        if section.comparison:
            head, rows, note = section.comparison
            body.append(_table(head, [_row([e(v) for v in row], ("",) + ("num",) * len(row))
                                      for row in rows]))
            body += [f"<p><em>{e(note)}</em></p>"] if note else []
        body += [_figure(root, c, p) for c, p in figures[1:]]
        if not figures and section.no_figure:
            body.append(f"<p><em>{e(section.no_figure)}</em></p>")
        if section.reported():
            body.append(f"<details><summary>{len(section.reported())} reported numbers (not "
                        "judged)</summary>")
            body.append(_table(_INFO_HEAD, [
                _row((e(c.name), e(value_text(c)), e(c.interval), _paper(c)), ("", "num"))
                for c in section.reported()]))
            body.append("</details>")
    body += ["<h2>Where it misses</h2>", "<ul>"]
    body += [f"<li>{e(line)}</li>" for line in misses(page)] + ["</ul>"]
    if page.tolerances:
        *rules, last = page.tolerances
        body += ["<h2>Tolerances</h2>", f"<p>{e(last)}</p>",
                 "<details><summary>Every rule</summary><ul>"]
        body += [f"<li>{e(line)}</li>" for line in rules] + ["</ul></details>"]
    if page.setup:
        body.append("<details><summary>Setup</summary>")
        body.append(_table(("key", "value"), [_row((e(k), e(v))) for k, v in page.setup]))
        body.append("</details>")
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
