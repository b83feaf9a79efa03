"""analyze, plot and report on a sweep, an isotropic-model output and a folder of several
results: one path from the stationary tables to one page."""

import json
import re
import shutil

import pandas as pd
import pytest
from conftest import CHROMIUM, loaded_figures

from thermosgd.cli import main

TINY = ["--iterations", "6000", "--queue-size", "40", "--queue-every", "25",
        "--entropy-every", "2000", "--entropy-average", "2", "--stationary-logs", "40",
        "--no-progress"]


@pytest.fixture(scope="module")
def iso(tmp_path_factory):
    """An isotropic output: fixed LR on a 3 x 2 grid (as `thermosgd simulate` writes it)."""
    out = tmp_path_factory.mktemp("iso") / "iso"
    assert main(["simulate", "--protocol", "fixed-lr", "--lr", "0.01", "0.03", "0.1",
                 "--wd", "0.01", "0.1", "--out", str(out), *TINY]) == 0
    return out


def test_analyze_recomputes_the_isotropic_checks_from_the_stationary_tables(iso, tmp_path,
                                                                          capsys):
    work = shutil.copytree(iso, tmp_path / "iso")
    before = json.loads((work / "checks.json").read_text())
    capsys.readouterr()
    assert main(["analyze", str(work)]) == 0
    out = capsys.readouterr().out
    assert "fixed-lr: " in out and "judged checks pass" in out
    after = json.loads((work / "analysis.json").read_text())["results"]["fixed-lr"]["checks"]
    assert after == before["protocols"]["fixed-lr"]  # the same numbers as the simulation's
    table = pd.read_csv(work / "analysis_table.csv")
    assert len(table) == 6 and set(table["protocol"]) == {"fixed-lr"}


def test_plot_and_report_on_an_isotropic_output(iso, tmp_path):
    work = shutil.copytree(iso, tmp_path / "iso")
    (work / "fixed-lr" / "figure.png").unlink()
    assert main(["plot", str(work)]) == 0
    assert (work / "fixed-lr" / "figure.png").stat().st_size > 10_000
    assert (work / "fixed-lr" / "figure.pdf").read_bytes().startswith(b"%PDF")
    drawn = (work / "fixed-lr" / "figure.png").stat().st_mtime_ns
    assert main(["report", str(work)]) == 0
    assert (work / "fixed-lr" / "figure.png").stat().st_mtime_ns == drawn  # reused, not redrawn
    page = (work / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 1
    summary = (work / "report.md").read_text()
    assert "## fixed LR (η, λ)" in summary and "| check | ours | 95 % interval |" in summary
    assert "](fixed-lr/figure.png)" in summary and "V3 Maxwell relations" in summary
    assert "## Where it misses" in summary and "## Tolerances" in summary
    assert "Borderline: a pass that its uncertainty does not settle" in summary


def test_report_on_a_sweep_is_one_self_contained_page(tiny_sweep, tmp_path, capsys):
    out = shutil.copytree(tiny_sweep, tmp_path / "sw")
    assert main(["report", str(out), "--bootstrap", "20"]) == 0
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing outside the file
    # the summary comes first, the headline figure before the checks, info rows folded away
    assert page.index("judged checks pass") < page.index("<figure") < page.index("<th>ours")
    assert "<details><summary>" in page and "reported numbers (not judged)" in page
    summary = (out / "report.md").read_text()
    assert "Table 4 (a1-a2)/R |" in summary and "| check | ours |" in summary
    for link in re.findall(r"\]\((figures/[^)]+)\)", summary):
        assert (out / link).is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_every_figure_renders_in_headless_chromium(tiny_sweep, tmp_path, capsys):
    """The report shows all three figures; a page with one image corrupted shows two, so the
    browser check can fail."""
    out = shutil.copytree(tiny_sweep, tmp_path / "sw")
    assert main(["report", str(out), "--bootstrap", "0"]) == 0
    page = out / "report.html"
    assert loaded_figures(page) == 3
    broken = tmp_path / "broken.html"
    text = page.read_text()
    start = text.index("base64,") + len("base64,")
    broken.write_text(text[:start] + "AAAA" + text[start + 40:])
    assert loaded_figures(broken) == 2


def _folder(tmp_path, iso, tiny_sweep):
    """A sweep, an isotropic output, and a sweep with no finished run, side by side."""
    folder = tmp_path / "all"
    shutil.copytree(tiny_sweep, folder / "lr-sweep")
    shutil.copytree(iso, folder / "iso")
    shutil.copytree(tiny_sweep, folder / "empty-sweep")
    shutil.rmtree(folder / "empty-sweep" / "runs")
    (folder / "notes").mkdir()  # not a result: ignored
    return folder


def test_a_folder_of_results_gets_one_report(iso, tiny_sweep, tmp_path, capsys):
    folder = _folder(tmp_path, iso, tiny_sweep)
    capsys.readouterr()
    assert main(["analyze", str(folder), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "empty-sweep: not analysed" in out and "no finished run" in out
    assert "custom: " in out and "fixed-lr: " in out
    index = json.loads((folder / "analysis.json").read_text())["index"]
    assert index["lr-sweep"]["kind"] == "sweep" and index["iso"]["kind"] == "isotropic"
    assert "no finished run" in index["empty-sweep"]["error"]
    table = pd.read_csv(folder / "analysis_table.csv")
    assert table.columns[0] == "result"
    assert table["result"].value_counts().to_dict() == {"lr-sweep/custom": 9, "iso/fixed-lr": 6}
    assert (folder / "lr-sweep" / "analysis.json").is_file()

    (folder / "iso" / "fixed-lr" / "figure.png").unlink()  # the report draws what is missing
    assert main(["report", str(folder), "--bootstrap", "0"]) == 0
    summary = (folder / "report.md").read_text()
    for title in ("## lr-sweep: custom (fixed-lr)", "## iso: fixed LR (η, λ)", "## empty-sweep"):
        assert title in summary
    misses = summary.split("## Where it misses")[1]
    assert "empty-sweep, analysis fails: " in misses and "no finished run" in misses
    for link in ("lr-sweep/figures/stationary.png", "iso/fixed-lr/figure.png"):
        assert f"]({link})" in summary and (folder / link).is_file()
    page = folder / "report.html"
    assert page.read_text().count("src='data:image/png;base64,") == 4
    if CHROMIUM:  # (CI installs it; the test above says so when it is missing)
        assert loaded_figures(page) == 4


def test_a_folder_whose_only_result_fails_is_refused(tiny_sweep, tmp_path, capsys):
    folder = tmp_path / "one"
    shutil.copytree(tiny_sweep, folder / "empty-sweep")
    shutil.rmtree(folder / "empty-sweep" / "runs")
    for command in ("analyze", "plot", "report"):
        with pytest.raises(SystemExit) as exc:
            main([command, str(folder)])
        assert exc.value.code == 2 and "no finished run" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["empty-sweep"]  # nothing written


def test_a_folder_without_results_is_refused(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not a sweep directory, an isotropic output" in err
    assert len(err.strip().splitlines()) == 1


def test_an_isotropic_output_without_a_finished_protocol_is_refused(iso, tmp_path, capsys):
    """A reproduce run killed before its first protocol finished: exit 2, nothing written."""
    work = shutil.copytree(iso, tmp_path / "iso")
    (work / "fixed-lr" / "stationary.csv").unlink()
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    for command in ("analyze", "plot", "report"):
        with pytest.raises(SystemExit) as exc:
            main([command, str(work)])
        assert exc.value.code == 2 and "holds no finished protocol" in capsys.readouterr().err
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before


@pytest.mark.parametrize("bad", ["-1"])
def test_a_negative_bootstrap_is_refused(iso, tmp_path, capsys, bad):
    work = shutil.copytree(iso, tmp_path / "iso")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(work), "--bootstrap", bad])
    assert exc.value.code == 2 and "--bootstrap must be >= 0" in capsys.readouterr().err
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before


def test_out_writes_everything_elsewhere_and_leaves_the_results_alone(iso, tmp_path, capsys):
    """Shared read-only results analysed elsewhere: DIR is not written to at all."""
    work = shutil.copytree(iso, tmp_path / "iso")
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    elsewhere = tmp_path / "mine"
    for command in ("analyze", "plot", "report"):
        assert main([command, str(work), "--out", str(elsewhere), "--bootstrap", "0"]
                    if command != "plot" else [command, str(work), "--out", str(elsewhere)]) == 0
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
    assert {"analysis.json", "analysis_table.csv", "report.html", "report.md"} <= {
        p.name for p in elsewhere.iterdir()}
    assert (elsewhere / "fixed-lr" / "figure.png").is_file()
    assert "](fixed-lr/figure.png)" in (elsewhere / "report.md").read_text()
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(work), "--out", str(tmp_path / "afile")])
    assert exc.value.code == 2 and "is a file" in capsys.readouterr().err
