"""Scale-invariant groups of models whose answer is known: found by the structural rules, by
the scaling test, or refused by it; the test leaves no trace; config.json says how."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thermosgd.monitor import groups as _groups
from thermosgd.monitor import scaling as _scaling
from thermosgd.monitor.api import Monitor

# Scaling a scale-invariant group by 3 moves these float32 losses by float32 rounding (~1e-7)
# and the norms' eps (eps / sigma^2 ~ 1e-5 here): measured at most 7e-6 of the loss, so 1e-4
# leaves a margin; a weight that is in no group moves the loss by > 1e-2 (checked alongside).
INVARIANT = 1e-4


class LayerNorm2d(nn.LayerNorm):
    """timm's: LayerNorm over the channels of an NCHW tensor (permute, F.layer_norm, back)."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class FunctionalLayerNorm2d(nn.Module):
    """The same normalization in a plain module: no hook sees a LayerNorm."""

    def __init__(self, channels):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(
            torch.zeros(channels))

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, 1e-6)
        return x.permute(0, 3, 1, 2)


class PermutedLayerNorm(nn.Module):
    """Channels-last ConvNeXt: permute, nn.LayerNorm over the channels, permute back."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, norm, layer_scale):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = norm(dim)
        self.pwconv1, self.pwconv2 = nn.Conv2d(dim, 4 * dim, 1), nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.gamma.view(1, -1, 1, 1) * y


class ConvNeXt(nn.Module):
    """Patchify stem -> norm, ConvNeXt blocks (conv_mlp), pooled LayerNorm, head."""

    def __init__(self, norm=LayerNorm2d, dim=8, depth=2, layer_scale=1.0):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, dim, 4, stride=4), norm(dim)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim, norm, layer_scale)
                                      for _ in range(depth)])
        self.head_norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x):
        x = self.blocks(self.stem_norm(self.stem(x)))
        return self.head(self.head_norm(x.mean((2, 3))))


class RMSNet(nn.Module):
    """Linear -> RMSNorm (a module, or F.rms_norm) -> GELU -> head."""

    def __init__(self, bias=False, functional=False):
        super().__init__()
        self.fc, self.norm, self.head = nn.Linear(6, 8, bias=bias), nn.RMSNorm(8), nn.Linear(8, 3)
        self.functional = functional

    def forward(self, x):
        h = F.rms_norm(self.fc(x), (8,)) if self.functional else self.norm(self.fc(x))
        return self.head(F.gelu(h))


class QKNormAttention(nn.Module):
    """An attention block whose queries and keys are normalized per head (QK-norm), on top of
    an embedding; separate q, k, v projections or timm's fused qkv (with LayerNorm, bias)."""

    def __init__(self, dim=16, heads=4, fused=False):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.embed = nn.Linear(5, dim)
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim)
            norm = nn.LayerNorm
        else:
            self.q, self.k = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
            self.v = nn.Linear(dim, dim)
            norm = nn.RMSNorm
        self.q_norm, self.k_norm = norm(dim // heads), norm(dim // heads)
        self.proj, self.head = nn.Linear(dim, dim), nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        b, t, d = h.shape
        if self.fused:
            qkv = self.qkv(h).reshape(b, t, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (f(h).view(b, t, self.heads, -1).transpose(1, 2)
                       for f in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return self.head(h.mean(1))


class StdConv2d(nn.Conv2d):
    """Weight standardization: each output channel's weights to zero mean, unit variance."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / torch.sqrt(
            w.var((1, 2, 3), keepdim=True, unbiased=False) + 1e-10)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class WSNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = StdConv2d(3, 6, 3, padding=1), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).mean((2, 3)))


class PreNormTransformer(nn.Module):
    """x + attn(LN(x)), x + mlp(LN(x)), final LN, head: nothing is scale-invariant."""

    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(5, dim)
        self.ln1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(
            dim, dim)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.Linear(
            4 * dim, dim)
        self.ln_f, self.head = nn.LayerNorm(dim), nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).reshape(b, t, 3, self.heads, -1).permute(
            2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        h = h + self.proj(a)
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return self.head(self.ln_f(h).mean(1))


class ShortcutNet(nn.Module):
    """A conv whose output feeds its BatchNorm and, unnormalized, a shortcut."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.drop, self.head = nn.Dropout(0.2), nn.Linear(4, 3)

    def forward(self, x):
        out = self.conv(x)
        return self.head(self.drop((self.bn(out) + out).mean((2, 3))))


class TwoOutputs(nn.Module):
    """fc is scale-invariant for the logits (functional LayerNorm) but not for the second
    output, its raw sum; with ``both`` False the model returns the logits alone."""

    def __init__(self, both=True):
        super().__init__()
        self.fc, self.head, self.both = nn.Linear(5, 8), nn.Linear(8, 3), both

    def forward(self, x):
        z = self.fc(x)
        logits = self.head(F.layer_norm(z, (8,)))
        return (logits, {"raw": z.sum(-1)}) if self.both else logits


def _images(n=8, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _tokens(n=6, t=5, seed=0):
    return torch.randn(n, t, 5, generator=torch.Generator().manual_seed(seed))


def _discover(model, x, graph=True):
    """The user's first training-mode forward pass, recorded; then discovery."""
    torch.manual_seed(0)
    model.train()
    recorder = _groups.Recorder(model)
    with torch.set_grad_enabled(graph):
        model(x)
    return _scaling.discover(model, recorder)


def _loss(model, x):
    """A float64 loss of the train-mode outputs, the same dropout mask every call."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1)
        out = model(x)
    return float((out.double() ** 2).mean())


def _scaled_loss(model, x, params, rows, factor=3.0):
    named = dict(model.named_parameters())
    saved = {n: named[n].detach().clone() for n in params}
    with torch.no_grad():
        for n in params:
            named[n][list(rows)] *= factor
        loss = _loss(model, x)
        for n in params:
            named[n].copy_(saved[n])
    return loss


def _assert_groups_invariant(model, x, groups):
    """Scaling each group by 3 leaves the loss; scaling a layer that holds none moves it."""
    base = _loss(model, x)
    for g in groups:
        assert _scaled_loss(model, x, g.params, g.rows) == pytest.approx(base, rel=INVARIANT)
    grouped = {g.layer for g in groups}
    for name, p in model.named_parameters():
        if p.dim() >= 2 and name not in grouped:
            moved = _scaled_loss(model, x, (name,), range(p.shape[0]))
            assert abs(moved - base) > 1e-2 * abs(base), name


@pytest.mark.parametrize("norm,found", [(LayerNorm2d, "structure+scaling"),
                                        (PermutedLayerNorm, "structure+scaling"),
                                        (FunctionalLayerNorm2d, "scaling")])
def test_convnext_stem_and_depthwise_convs_are_groups_with_their_bias(norm, found):
    torch.manual_seed(0)
    model, x = ConvNeXt(norm), _images()
    groups, report = _discover(model, x)
    assert [g.name for g in groups] == ["stem.weight", "blocks.0.dwconv.weight",
                                        "blocks.1.dwconv.weight"]
    assert all(g.params == (g.layer, g.layer.replace("weight", "bias")) for g in groups)
    assert {g.found for g in groups} == {found} and report.tested and not report.dropped
    _assert_groups_invariant(model, x, groups)


def test_a_layer_scale_of_1e_6_does_not_make_the_pointwise_convs_groups():
    """The output barely depends on the blocks' MLPs: the screen's ratio test refuses them,
    the rule still names the depthwise convs (a LayerNorm2d after each)."""
    torch.manual_seed(0)
    model, x = ConvNeXt(LayerNorm2d, layer_scale=1e-6), _images()
    groups, _ = _discover(model, x)
    assert [g.name for g in groups] == ["stem.weight", "blocks.0.dwconv.weight",
                                        "blocks.1.dwconv.weight"]


def test_a_downsampling_conv_invariant_only_at_initialization_is_not_a_group():
    """A zero-bias conv whose output feeds blocks behind a layer scale of 1e-6, then a
    LayerNorm: scale-invariant at initialization (to 1e-6), not once the layer scale grows.
    The test's second point, biases and gains moved, refuses it."""
    torch.manual_seed(0)
    model, x = ConvNeXt(LayerNorm2d, depth=1, layer_scale=1e-6), _images()
    model.stem_norm = nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 8, 2, stride=2))
    nn.init.zeros_(model.stem_norm[1].bias)
    groups, report = _discover(model, x)
    assert [g.name for g in groups] == ["stem.weight", "blocks.0.dwconv.weight"]
    assert report.passes > 3  # the screen proposed it, the second point refused it


@pytest.mark.parametrize("bias,functional,params,found", [
    (None, False, ("fc.weight",), "structure+scaling"),
    ("random", False, ("fc.weight", "fc.bias"), "structure+scaling"),
    ("random", True, ("fc.weight", "fc.bias"), "scaling"),
    ("zero", True, ("fc.weight", "fc.bias"), "scaling")])
def test_rmsnorm_after_a_linear(bias, functional, params, found):
    """RMSNorm subtracts no mean: the weight is a group alone only without a bias; with a
    bias at zero it is invariant alone at that point only, and the bias joins the group."""
    torch.manual_seed(0)
    model, x = RMSNet(bias is not None, functional), torch.randn(8, 6)
    if bias == "zero":
        nn.init.zeros_(model.fc.bias)
    groups, _ = _discover(model, x)
    assert [(g.name, g.params, g.found) for g in groups] == [("fc.weight", params, found)]
    _assert_groups_invariant(model, x, groups)


def test_qk_norm_makes_each_head_of_the_query_and_key_weights_a_group():
    torch.manual_seed(0)
    model, x = QKNormAttention(), _tokens()
    groups, _ = _discover(model, x)
    assert [g.name for g in groups] == [f"{w}.weight[g{h}]" for w in "qk" for h in range(4)]
    assert [g.rows for g in groups[:4]] == [tuple(range(4 * h, 4 * h + 4)) for h in range(4)]
    assert {g.norm for g in groups} == {"RMSNorm"} and {g.found for g in groups} == {
        "structure+scaling"}
    _assert_groups_invariant(model, x, groups)


def test_a_fused_qkv_layer_has_query_and_key_heads_but_no_value_heads():
    torch.manual_seed(0)
    model, x = QKNormAttention(fused=True), _tokens()
    groups, _ = _discover(model, x)
    assert [g.name for g in groups] == [f"qkv.weight[g{h}]" for h in range(8)]  # 4 q, 4 k
    assert max(r for g in groups for r in g.rows) == 31  # rows 32-47 are v's
    assert all(g.params == ("qkv.weight", "qkv.bias") for g in groups)
    base = _loss(model, x)
    assert abs(_scaled_loss(model, x, ("qkv.weight", "qkv.bias"), range(32, 36)) - base) \
        > 1e-2 * abs(base)  # a value head is not a group
    _assert_groups_invariant(model, x, [g for g in groups])


def test_a_weight_standardized_conv_is_scale_invariant_per_output_channel():
    torch.manual_seed(0)
    model, x = WSNet(), _images()
    groups, report = _discover(model, x)
    assert [g.name for g in groups] == [f"conv.weight[{c}]" for c in range(6)]
    assert {g.params for g in groups} == {("conv.weight",)}  # its bias is added after
    assert {g.found for g in groups} == {"scaling"} and report.found == ("conv.weight",)
    _assert_groups_invariant(model, x, groups)


def test_a_pre_norm_transformer_has_no_group_and_the_warning_says_what_was_checked():
    torch.manual_seed(0)
    model, x = PreNormTransformer(), _tokens()
    groups, report = _discover(model, x)
    assert groups == [] and report.tested and len(report.screened) == 6
    _assert_groups_invariant(model, x, [])  # every weight moves the loss
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    with pytest.warns(UserWarning, match="no Conv/Linear output feeds .* scaling each of the 6 "
                                         "other weights on the first batch"):
        Monitor(model, opt, example=x).close()


def test_a_structural_candidate_that_is_not_invariant_is_dropped():
    """Without a graph the shared output goes unseen by the rule: the scaling test refuses it."""
    torch.manual_seed(0)
    model, x = ShortcutNet(), _images()
    with pytest.warns(UserWarning, match="conv.weight feeds a BatchNorm2d but scaling it"):
        groups, report = _discover(model, x, graph=False)
    assert groups == [] and report.dropped == ("conv.weight",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with a graph the rule sees it: nothing to drop
        groups, report = _discover(model, x)
    assert groups == [] and report.structural == 0


def test_a_batchnorm_whose_eps_dominates_is_refused_and_the_warning_says_so():
    model = nn.Sequential(nn.Linear(5, 3, bias=False), nn.BatchNorm1d(3, eps=100.0),
                          nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    with pytest.warns(UserWarning) as seen:
        Monitor(model, opt, example=torch.randn(8, 5)).close()
    messages = " ".join(str(w.message) for w in seen)
    assert "0.weight feeds a BatchNorm1d but scaling it" in messages
    assert "the 1 layer feeding a normalization module changed the output" in messages


@pytest.mark.parametrize("both", [True, False])
def test_every_output_tensor_counts(both):
    torch.manual_seed(0)
    model, x = TwoOutputs(both), torch.randn(8, 5)
    groups, _ = _discover(model, x)
    assert [g.name for g in groups] == ([] if both else ["fc.weight"])


def _state(model):
    return ({n: t.detach().clone() for n, t in [*model.named_parameters(),
                                                *model.named_buffers()]},
            [m.training for m in model.modules()], torch.get_rng_state())


def _assert_same_state(before, after):
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][n], after[0][n]) for n in before[0])  # bitwise
    assert before[1] == after[1] and torch.equal(before[2], after[2])


def test_discovery_changes_no_weight_buffer_mode_or_rng_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, momentum=None),
                          nn.Flatten(), nn.Linear(4 * 12 * 12, 3))
    x = _images()
    model.train()
    model[5].eval()  # a frozen BatchNorm (running statistics): the test reruns it frozen
    recorder = _groups.Recorder(model)
    model(x)
    before = _state(model)
    with pytest.warns(UserWarning, match="4.weight feeds a BatchNorm2d but scaling it"):
        groups, report = _scaling.discover(model, recorder)  # eval mode: running statistics
    _assert_same_state(before, _state(model))
    assert report.tested and report.passes >= 3 and recorder.batch is None
    assert [g.name for g in groups] == [f"0.weight[{c}]" for c in range(4)]  # 4.weight: frozen
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    model.eval()  # the example runs in train mode all the same: BatchNorm's groups are found
    before = _state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frozen BatchNorm's channel is not a group
        mon = Monitor(model, opt, example=x)
    _assert_same_state(before, _state(model))
    assert mon.groups[:4] == [f"0.weight[{c}]" for c in range(4)]
    mon.close()


def test_the_first_step_finds_the_groups_and_config_json_says_how(tmp_path):
    torch.manual_seed(0)
    model, x = ConvNeXt(FunctionalLayerNorm2d), _images(16)
    model.stem_norm = LayerNorm2d(8)  # the stem by the rule, the blocks by the test
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    with Monitor(model, opt, out=tmp_path / "run", every=1) as mon:
        F.cross_entropy(model(x), torch.arange(16) % 5).backward()
        opt.step()
        assert mon.discovery.samples == _scaling.SAMPLES  # a slice of the batch of 16
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    found = {g["group"]: g.get("found") for g in config["groups"] if "found" in g}
    assert found == {"stem.weight": "structure+scaling", "blocks.0.dwconv.weight": "scaling",
                     "blocks.1.dwconv.weight": "scaling"}


def test_groups_named_by_hand_are_not_tested(tmp_path):
    model = ShortcutNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    with Monitor(model, opt, groups=["conv.weight"], out=tmp_path / "run") as mon:
        assert mon.groups == ["conv.weight"] and mon.discovery is None
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [g["found"] for g in config["groups"] if g["group"] == "conv.weight"] == ["user"]
