"""The report of a monitored run reads per layer: a synthetic run with hundreds of channel
groups, an interrupted run, a run written before rows had a level (schema 0.2); and the scalar
sinks (TensorBoard, W&B) log whole layers by default."""

import json
import re
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thermosgd.monitor.api import Monitor
from thermosgd.monitor.sinks import RunDirSink, TensorBoardSink, check_scalars
from thermosgd.report import build
from thermosgd.results import monitordir
from thermosgd.results.schema import MANIFEST, MONITOR_COLUMNS

# (regime of the layer and of its channels at the end, layers) of the synthetic run
LAST_REGIMES = [("equilibrium", 14), ("converging", 5), ("relaxing", 3), ("idle", 2)]
CHANNELS = 24  # per conv layer: 23 x 24 = 552 groups
NAME_CAP = 10  # the page names at most this many of a list


def _rows(step, k, name, layer, level, si, d, norm, r_star, angle, theta_star, regime):
    return {"step": step, "group": name, "layer": layer, "level": level, "scale_invariant": si,
            "d": d, "norm": norm, "radius_theory": r_star, "radius_theory_corrected": r_star,
            "angular_update": angle, "angular_update_theory": theta_star,
            "angular_update_theory_corrected": theta_star, "learning_rate": 0.1,
            "weight_decay": 5e-4, "temperature": 1e-3 * (1 + k % 3), "pressure": 5e-4,
            "compressibility": (norm / r_star) ** 4 if np.isfinite(r_star) else np.nan,
            "distance": np.log(norm / r_star), "regime": regime}


def synthetic_frame(logs=40, every=10):
    """Rows of a monitored CNN of 23 per-channel conv layers, a head matrix that is not
    scale-invariant, other and all, as schema 0.3 lays them out. Layer j relaxes towards its
    r* from 1 + 0.1 j above; the converging layers drift away late (their r/r* grows)."""
    regimes = [r for r, n in LAST_REGIMES for _ in range(n)]
    out = []
    for i, step in enumerate(range(every, every * (logs + 1), every)):
        union = []
        for j, regime in enumerate(regimes[:-1] if regimes else []):
            layer = f"block{j // 4}.conv{j % 4}.weight"
            excess = 0.1 * (j + 1) * np.exp(-i / 8) + (0.02 * i if regime == "converging" else 0)
            now = regime if i == logs - 1 else ("relaxing" if i < 10 else "equilibrium")
            rows = []
            for c in range(CHANNELS):
                r_star = 1.0 + 0.01 * c
                rows.append(_rows(step, j, f"{layer}[{c}]", layer, "group", True, 27,
                                  r_star * (1 + excess), r_star, 0.02 * (1 + excess),
                                  0.02, now))
            out += rows
            r2 = sum(r["norm"] ** 2 for r in rows)
            p2 = sum(r["radius_theory"] ** 2 for r in rows)
            out.append(_rows(step, j, layer, layer, "layer", True, 27 * CHANNELS, np.sqrt(r2),
                             np.sqrt(p2), 0.02 * (1 + excess), 0.02, now))
            union.append((r2, p2))
        fc_regime = regimes[-1] if i == logs - 1 else "equilibrium"
        out.append(_rows(step, 0, "fc.weight", "fc.weight", "layer", False, 640, 2.0, 2.0,
                         0.01, 0.01, fc_regime))
        out.append(_rows(step, 0, "other", "other", "other", False, 100, 3.0, np.nan, 0.01,
                         np.nan, ""))
        r2, p2 = (sum(u[k] for u in union) for k in (0, 1))
        out.append(_rows(step, 0, "all", "all", "all", True, 27 * CHANNELS * len(union),
                         np.sqrt(r2), np.sqrt(p2), 0.02, 0.02, "relaxing"))
    frame = pd.DataFrame(out)
    for column in MONITOR_COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame[list(MONITOR_COLUMNS)]


def write_run(out, frame, *, status="finished", schema=None):
    """A monitored run directory as the monitor writes it (its sink writes the summary)."""
    monitordir.claim(out, {"every": 10, "model": "SyntheticCNN"})
    monitordir.write_config(out, {"settings": {"model": "SyntheticCNN"}, "optimizers": [
        {"param_group": 0, "label": "SGD, momentum 0.9", "note": ""}]})
    sink = RunDirSink(out)
    half = frame["step"].median()
    sink.write(frame[frame["step"] <= half])
    sink.write(frame[frame["step"] > half])
    last = frame[frame["step"] == frame["step"].max()]
    summary = {"status": status, "steps": int(frame["step"].max()),
               "logs": int(frame["step"].nunique()), "groups": int((last["level"] == "group")
                                                                    .sum())
               if "level" in last else 0, "unconfirmed_groups": [],
               "regimes": dict(Counter(last["regime"])),
               "last": last.replace({np.nan: None}).to_dict("records")}
    if schema is None:
        sink.close(summary)
    else:  # an older monitor: its summary and manifest as it wrote them
        monitordir.write_summary(out, summary)
        manifest = json.loads((out / MANIFEST).read_text())
        (out / MANIFEST).write_text(json.dumps(manifest | {"schema": schema}))
    return out


def _report(out):
    build.report(out, bootstrap=0)
    return (out / "report.md").read_text(), (out / "report.html").read_text()


def _listed_names(text):
    """The channel and layer names the page lists in its bullet lines."""
    return [line for line in text.splitlines() if line.startswith("- ")]


def test_a_many_channel_run_reports_layers(tmp_path):
    out = write_run(tmp_path / "run", synthetic_frame(), status="interrupted")
    md, page = _report(out)
    summary = json.loads((out / "summary.json").read_text())
    # the headline says what was measured and counts layers, never "0 of 0 judged checks"
    head = md.split("## Summary", 1)[1].split("\n\n", 2)[1]
    assert "0 of 0" not in md and "0 of 0" not in page
    assert "interrupted" in head and "400 steps" in head and "40 logs" in head
    assert "14 of 24 layers at equilibrium" in head
    assert "5 converging" in head and "3 relaxing" in head
    # ... the counts summary.json holds for the same level
    layer_counts = summary["regimes_by_level"]["layer"]
    assert layer_counts == {"equilibrium": 14, "converging": 5, "relaxing": 3, "idle": 2}
    assert "counts the same layers and groups" in md
    assert "channel groups at the last log: 336 of 552 groups at equilibrium" in md
    # a per-layer table: 24 layers, other and all; no channel of the 552
    table = [line for line in md.splitlines() if line.startswith("| block")
             or line.startswith("| fc") or line.startswith("| other")
             or line.startswith("| all")]
    assert len(table) == 26
    assert not re.search(r"\| block\d\.conv\d\.weight\[", md)
    fc = next(line for line in table if line.startswith("| fc"))
    assert "approximate" in fc
    conv = next(line for line in table if line.startswith("| block0.conv0.weight"))
    assert f"| {CHANNELS} |" in conv and "scale-invariant" in conv
    # lists of names are capped: the 5 converging layers in full, never hundreds of channels
    for line in _listed_names(md):
        assert line.count("weight") <= NAME_CAP + 1, line
    assert (out / "figures" / "monitor.png").is_file()
    assert "14 of 24 layers at equilibrium" in page.split("<h2", 1)[0]  # the HTML's glance
    # the CLI's lines say it too
    said = build.summary_lines(build.analyse(out, bootstrap=0))
    assert "interrupted" in said[0] and "14 of 24 layers" in said[0] and "0 of 0" not in said[0]


def test_the_heatmaps_read_layers_in_model_order():
    from thermosgd.report.figures_monitor import SMOOTH, layer_grid

    frame = synthetic_frame(logs=12)
    # the monitor writes a layer's sum after every group and matrix: order by level, as it does
    rank = frame["level"].map({"group": 0, "other": 2, "all": 4}).fillna(1)
    rank[(frame["level"] == "layer") & frame["scale_invariant"]] = 3
    frame = frame.assign(rank=rank).sort_values(["step", "rank"], kind="stable")
    grid = layer_grid(frame.drop(columns="rank"))
    assert grid["layers"][0] == "block0.conv0.weight" and grid["layers"][-1] == "fc.weight"
    assert len(grid["layers"]) == 24 and not grid["exact"][-1] and grid["exact"][:-1].all()
    # each channel of layer j sits at r / r* = 1 + excess(j, log): the layer's ratio is the same,
    # and the last column is the centred mean of log2 over the last SMOOTH // 2 + 1 logs
    j, logs = 14, np.arange(12 - (SMOOTH // 2 + 1), 12)  # a converging layer
    excess = 0.1 * (j + 1) * np.exp(-logs / 8) + 0.02 * logs
    assert grid["norm"][j, -1] == pytest.approx(np.log2(1 + excess).mean(), rel=1e-12)
    assert grid["regime"][j, -1] == "converging" and grid["regime"][0, -1] == "equilibrium"


def test_name_lists_are_capped(tmp_path):
    frame = synthetic_frame(logs=12)
    last = frame["step"] == frame["step"].max()
    frame.loc[last & (frame["level"] != "other"), "regime"] = "converging"
    out = write_run(tmp_path / "run", frame)
    md, _ = _report(out)
    line = next(line for line in md.splitlines() if line.startswith("- layers converging"))
    assert line.count("weight") == NAME_CAP and line.endswith("and 14 more")


def test_an_old_run_without_levels_still_reports(tmp_path):
    frame = synthetic_frame(logs=20)
    old = frame[frame["level"] != "layer"].drop(columns="level")  # no layer rows, no level
    old = pd.concat([old, frame[frame["group"] == "fc.weight"].drop(columns="level")])
    out = write_run(tmp_path / "run", old, schema="0.2")
    md, _ = _report(out)
    # its layers are formed from their channels: 23 convs and the head matrix
    assert "of 24 layers at equilibrium" in md and "0 of 0" not in md
    table = [line for line in md.splitlines() if line.startswith("| block")]
    assert len(table) == 23
    assert "summary.json (written when the monitor closed) counts the same groups" in md


def test_a_run_without_prediction_says_why_nothing_is_judged(tmp_path):
    frame = synthetic_frame(logs=8)
    for column in ("radius_theory", "radius_theory_corrected", "angular_update_theory",
                   "angular_update_theory_corrected", "distance", "compressibility"):
        frame[column] = np.nan
    frame["regime"] = ""
    out = write_run(tmp_path / "run", frame)
    md, _ = _report(out)
    assert "0 of 0" not in md
    assert "0 of 24 layers at equilibrium, 24 without a prediction" in md


def test_scalars_is_checked():
    assert check_scalars("layers") == "layers" and check_scalars(["all"]) == ("all",)
    for bad in ("layer", "channels", [], [3], None):
        with pytest.raises(ValueError, match="scalars must be"):
            check_scalars(bad)
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="scalars must be"):
        Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3),
                scalars="channels")


def _tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    per_step = Counter(e.step for tag in tags for e in events.Scalars(tag))
    return tags, per_step


def test_tensorboard_sink_logs_layers_from_a_flush(tmp_path):
    pytest.importorskip("tensorboard")
    frame = synthetic_frame(logs=3)
    for scalars, rows in (("layers", frame[frame["level"] != "group"]), ("groups", frame),
                          (["all", "fc.weight"], frame[frame["group"].isin(["all", "fc.weight"])])):
        sink = TensorBoardSink(tmp_path / str(scalars), scalars=scalars)
        sink.write(frame)
        sink.close({})
        tags, per_step = _tags(tmp_path / str(scalars))
        # a tag per row and finite column (other has no prediction)
        expected = {f"thermosgd/{c}/{g}" for c in sink.columns for g, v in
                    zip(rows["group"], rows[c]) if np.isfinite(v)}
        assert set(tags) == expected
        assert set(per_step) == {10, 20, 30}
    assert len(expected) < 20


class Recorder:
    """A writer with add_scalar only (tensorboardX's API): the sink calls it per tag."""

    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, global_step):
        self.calls.append((global_step, tag, value))

    def flush(self):
        pass


def test_a_name_that_no_row_has_is_told():
    writer = Recorder()
    with pytest.warns(UserWarning, match="do not exist: conv9.weight;"):
        TensorBoardSink(writer, scalars=["all", "conv9.weight"]).write(synthetic_frame(logs=2))
    assert {tag for _, tag, _ in writer.calls} >= {"thermosgd/norm/all"}
    assert all(tag.endswith("/all") for _, tag, _ in writer.calls)


def test_a_writer_without_torchs_file_writer_gets_a_call_per_tag(tmp_path):
    frame = synthetic_frame(logs=2)
    writer = Recorder()
    TensorBoardSink(writer).write(frame)
    rows = frame[frame["level"] != "group"]
    expected = {(s, f"thermosgd/norm/{g}", v) for s, g, v in
                zip(rows["step"], rows["group"], rows["norm"])}
    assert expected <= set(writer.calls)
    assert not any(tag.endswith("]") for _, tag, _ in writer.calls)


class ManyChannels(nn.Module):
    """Three conv -> BatchNorm layers of 96 channels: 288 channel groups, 3 layers."""

    def __init__(self, width=96):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if k == 0 else width, width, 3, padding=1,
                                              bias=False) for k in range(3)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(3)])
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return self.head(x.mean((2, 3)))


def _train(model, opt, steps):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 4, 4, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("scalars", ["layers", "groups"])
def test_tensorboard_gets_layers_by_default_and_groups_when_asked(tmp_path, scalars):
    pytest.importorskip("tensorboard")
    torch.manual_seed(0)
    model = ManyChannels()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    with Monitor(model, opt, every=2, flush_every=2, tensorboard=tmp_path / "tb",
                 scalars=scalars, out=tmp_path / "run"):
        _train(model, opt, 6)
    tags, per_step = _tags(tmp_path / "tb")
    metrics = monitordir.read_metrics(tmp_path / "run")
    groups = metrics.loc[metrics["level"] == "group", "group"].unique()
    assert len(groups) == 288 and set(per_step) == {2, 4, 6}
    channel_tags = [t for t in tags if t.endswith("]")]
    if scalars == "layers":
        # 3 conv layers, the head matrix, other, all: 6 rows of at most 8 columns
        assert max(per_step.values()) <= 6 * 8 and not channel_tags
        assert "thermosgd/norm/convs.0.weight" in tags
    else:
        assert {t.rsplit("/", 1)[1] for t in channel_tags} == set(groups)
        assert min(per_step.values()) > 288 * 4


def test_a_monitored_run_counts_agree_with_its_summary(tmp_path):
    torch.manual_seed(0)
    model = ManyChannels(width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a few steps: groups may read unconfirmed
        with Monitor(model, opt, every=1, flush_every=5, out=tmp_path / "run"):
            _train(model, opt, 12)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    md, _ = _report(tmp_path / "run")
    assert summary["status"] == "finished" and "finished after 12 steps (12 logs)" in md
    layers = summary["regimes_by_level"]["layer"]
    assert sum(layers.values()) == 4  # 3 convs and the head matrix
    assert "counts the same layers and groups" in md
    assert sum(summary["regimes_by_level"]["group"].values()) == 48


def test_two_monitored_runs_compare_side_by_side(tmp_path):
    """A folder of two monitored runs (an SGD run and an AdamW run, say): the side-by-side
    table compares their reported numbers, a column per run named by its directory."""
    frame = synthetic_frame(logs=12)
    write_run(tmp_path / "sgd", frame)
    write_run(tmp_path / "adamw", frame.assign(norm=frame["norm"] * 1.5))
    text, _ = _report(tmp_path)
    side = text.split("## Side by side")[1]
    table = [line for line in side.splitlines() if line.startswith("|")]
    assert table[0].split("|")[2:4] == [" adamw ", " sgd "] or \
        table[0].split("|")[2:4] == [" sgd ", " adamw "]
    assert len(table) > 5 and any("layers equilibrium" in line for line in table)
    errors = [line for line in table if line.startswith("| layers: norm vs r*: median")]
    assert errors and errors[0].split("|")[2] != errors[0].split("|")[3]  # the runs differ
