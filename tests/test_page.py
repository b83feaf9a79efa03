"""The page: the summary first, the headline figure large, judged checks beside the paper's
values, informational rows folded away, misses and tolerances; HTML and Markdown alike."""

from pathlib import Path

from thermosgd.analysis.rules import Check
from thermosgd.report.page import Page, Section, render_markdown, write_page

PNG = b"\x89PNG\r\n\x1a\n"


def _page(tmp_path) -> Page:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(PNG)
    judged = [Check("V1 ideal gas law", 0.01, "< 5 %", "pass", shown="1.00 %"),
              Check("U", 0.3, "< 5 %", "fail", shown="30.00 %"),
              Check("Table 4 a2/R", -1.02, "-1 ± 10 %", "pass", paper=-1.029,
                    interval="[-1.5, -0.6]", borderline=True, note="its interval leaves it")]
    info = [Check(f"reported {k}", float(k), "reported", "info") for k in range(5)]
    return Page(title="t", intro=["what this is"], setup=[("d", "3")], sections=[
        Section("fixed LR", ["isotropic noise, d = 3"], judged + info,
                {"panels": Path("a.png"), "more": Path("b.png")}),
        Section("fixed sphere", [], [Check("not checked", None, "", "n/a", shown="too small")],
                no_figure="No figure for this protocol.")], tolerances=["U: < 5 %"])


def test_markdown_reads_top_down(tmp_path):
    text = render_markdown(_page(tmp_path))
    summary = text.index("2 of 4 judged checks pass (1 fail, 1 missing or not finite, "
                         "1 borderline)")
    assert summary < text.index("## fixed LR") < text.index("](a.png)") < text.index(
        "| check | ours |") < text.index("](b.png)") < text.index("reported numbers")
    assert "| fixed LR | 2 of 3 pass | isotropic noise, d = 3 |" in text
    assert "| Table 4 a2/R | -1.02 | [-1.5, -0.6] | -1.029 | -1 ± 10 % | pass (borderline) |" in text
    assert "<details><summary>5 reported numbers (not judged)</summary>" in text
    misses = text.split("## Where it misses")[1]
    assert "fixed LR, U fails: 30.00 %" in misses and "its interval leaves it" in misses
    assert "fixed sphere, not checked is missing or not finite: too small" in misses
    assert "No figure for this protocol" in text and "## Tolerances" in text


def test_html_is_self_contained_and_writes_atomically(tmp_path):
    page_html, _ = write_page(tmp_path, _page(tmp_path))
    text = page_html.read_text(encoding="utf-8")
    assert text.count("src='data:image/png;base64,") == 2
    assert text.index("class='count'") < text.index("<figure class='headline'")
    assert "<td class='fail'>fail</td>" in text and "pass borderline" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "report.html",
                                                          "report.md"]  # no temp file


def test_an_empty_page_says_so(tmp_path):
    assert "Nothing was found" in render_markdown(Page(title="t"))
