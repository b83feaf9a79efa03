"""The monitor examples (examples/monitor_*.py) at a tiny size: each trains, writes a monitored
run, finds the scale-invariant groups its architecture has, and ``thermosgd report`` reads it.

They run in this process, so a warning the monitor raises (a group whose gradient is not
orthogonal to it, a group it could not confirm) fails the test (filterwarnings = error).
"""

import importlib.util
import re
from pathlib import Path

import pytest

from thermosgd.report import build
from thermosgd.results import monitordir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STEPS = ["--steps", "30", "--every", "10"]  # 3 logs: enough for a row per group and a report


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, out, extra=()):
    """Run the example; return (its module, the monitor, {layer: its groups' records})."""
    module = _example(name)
    monitor = module.main(["--out", str(out), *STEPS, *extra])
    assert (out / "config.json").is_file() and list((out / "metrics").glob("*.parquet"))
    assert monitordir.read_summary(out)["status"] == "finished"
    groups = {}
    for record in monitordir.read_config(out)["groups"]:
        if record["scale_invariant"] and "rows" in record:  # a group, not a union of groups
            groups.setdefault(record["layer"], []).append(record)
    return module, monitor, groups


def _report(out):
    build.report(out, bootstrap=0)
    page = (out / "report.md").read_text()
    assert (out / "report.html").is_file()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", page)
    assert figures and all((out / f).is_file() for f in figures)
    return page


def test_resnet_every_conv_is_per_channel_batchnorm_groups(tmp_path):
    from torch import nn

    out = tmp_path / "resnet"
    module, monitor, groups = _run("monitor_resnet", out)
    convs = {f"{name}.weight": m.out_channels for name, m in module.ResNet().named_modules()
             if isinstance(m, nn.Conv2d)}
    assert "layer2.0.downsample.0.weight" in convs  # the shortcut's 1x1 conv is one of them
    assert set(groups) == set(convs)
    for layer, records in groups.items():
        assert sorted(r["rows"] for r in records) == [[c] for c in range(convs[layer])]
        assert {r["norm"] for r in records} == {"BatchNorm2d"}
    assert len(monitor.groups) == sum(convs.values())
    state = monitor.state()
    fc = state[state["group"] == "fc.weight"].iloc[0]
    assert fc["level"] == "layer" and not fc["scale_invariant"]  # predicted approximately
    assert "fc.weight" in _report(out)


def test_convnext_stem_and_depthwise_convs_found_through_layernorm2d(tmp_path):
    out = tmp_path / "convnext"
    module, monitor, groups = _run("monitor_convnext", out)
    model = module.ConvNeXt()
    dwconvs = {f"{name}.weight" for name, _ in model.named_modules() if name.endswith("dwconv")}
    # the stem's patchify conv and each block's depthwise conv feed a LayerNorm2d (permute +
    # F.layer_norm), each as one group with its bias; the downsampling convs and the MLP feed
    # the residual stream and are not scale-invariant, however small the layer scale at init
    assert set(groups) == {"stem.0.weight"} | dwconvs
    for layer, (record,) in groups.items():
        assert record["params"] == [layer, layer.replace(".weight", ".bias")]
        assert record["rows"] == list(range(model.get_parameter(layer).shape[0]))
    state = monitor.state()
    layers = state[state["level"] == "layer"].set_index("group")
    assert not layers.loc["downsample.0.1.weight", "scale_invariant"]
    assert not layers.loc["stages.0.0.pwconv1.weight", "scale_invariant"]
    assert "dwconv" in _report(out)


def test_transformer_qk_norm_makes_each_head_of_q_and_k_a_group(tmp_path):
    out = tmp_path / "transformer"
    module, monitor, groups = _run("monitor_transformer", out)
    heads, head_dim, depth = 4, 16, 2  # GPT's defaults: width 64
    expected = {f"layers.{i}.self_attn.{p}.weight" for i in range(depth) for p in ("q_proj",
                                                                                  "k_proj")}
    assert set(groups) == expected
    for records in groups.values():
        assert sorted(r["rows"] for r in records) == [
            list(range(h * head_dim, (h + 1) * head_dim)) for h in range(heads)]
    state = monitor.state()
    layers = state[state["level"] == "layer"].set_index("group")
    for name in ("layers.0.self_attn.v_proj.weight", "layers.1.mlp.down_proj.weight",
                 "embed_tokens.weight"):  # tied to lm_head
        assert not layers.loc[name, "scale_invariant"]
    other = state[state["group"] == "other"].iloc[0]  # the norm gains, in the no-decay group
    assert other["weight_decay"] == 0 and other["radius_theory"] != other["radius_theory"]
    assert "q_proj" in _report(out)


@pytest.mark.parametrize("name", ["monitor_resnet", "monitor_convnext", "monitor_transformer"])
def test_example_documents_its_command(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert f"python examples/{name}.py --out runs/" in text
    assert "thermosgd report runs/" in text
