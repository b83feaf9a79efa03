"""Scale-invariant models: the paper's parameter counts, L(alpha w) = L(w), the frozen head."""

import pytest
import torch
import torch.nn.functional as F

from thermosgd.nn import build_model, parameter_norm, scale_invariant_parameters
from thermosgd.nn.models import HEAD_NORM


@pytest.mark.parametrize("name,width,count", [
    ("convnet", 8, 24408), ("convnet", 16, 97200),
    ("resnet18", 4, 43692), ("resnet18", 32, 2790240),
])
def test_trainable_counts_match_the_paper(name, width, count):
    model = build_model(name, width=width)
    assert sum(p.numel() for p in scale_invariant_parameters(model)) == count


@pytest.mark.parametrize("name,width,size,classes", [
    ("convnet", 8, 32, 10), ("convnet", 4, 8, 100), ("resnet18", 4, 32, 10),
    ("resnet18", 2, 8, 100),
])
def test_loss_is_scale_invariant(name, width, size, classes):
    """L(alpha w) = L(w) in training mode (batch statistics), float64, with BatchNorm's eps set
    to 1e-14 so that only the architecture is tested: at ||w|| = 1 the pre-BN variances are
    ~1e-3 (24408 weights of ~6e-3 each), so the default eps = 1e-5 alone moves the loss by ~10 %
    at alpha = 0.1. With eps ~ 1e-14 the remaining error is float64 rounding (tolerance 1e-8)."""
    torch.manual_seed(0)
    model = build_model(name, width=width, num_classes=classes).double()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-14
    x = torch.randn(16, 3, size, size, dtype=torch.float64)
    y = torch.randint(0, classes, (16,))
    base = torch.nn.functional.cross_entropy(model(x), y)
    weights = [p.detach().clone() for p in scale_invariant_parameters(model)]
    for alpha in (0.1, 0.5, 2.0, 10.0):
        with torch.no_grad():
            for p, w in zip(scale_invariant_parameters(model), weights):
                p.copy_(alpha * w)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        assert loss.item() == pytest.approx(base.item(), rel=1e-8), alpha


def test_initial_norm_seed_and_frozen_head():
    a = build_model("convnet", width=4, norm=2.5, init_seed=3)
    b = build_model("convnet", width=4, norm=2.5, init_seed=3)
    assert parameter_norm(a).item() == pytest.approx(2.5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.head.weight.norm().item() == pytest.approx(HEAD_NORM)
    assert not any(p.requires_grad for p in a.head.parameters())
    other = build_model("convnet", width=4, init_seed=4)
    assert torch.equal(other.head.weight, a.head.weight)  # head seed shared across init seeds


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="vgg", width=4), "unknown model 'vgg'"),
    (dict(name="convnet", width=0), "width k must be an integer >= 1"),
    (dict(name="resnet18", width=4, norm=0.0), "norm must be positive"),
])
def test_bad_model_arguments(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        build_model(name, **kwargs)


@pytest.mark.parametrize("name,width,count", [("convnet", 8, 4), ("resnet18", 4, 20)])
def test_batchnorm_layers(name, width, count):
    """ConvNet: one BatchNorm per conv. ResNet-18: two per block (8), one in each of the three
    projection shortcuts, and the final one: 20, as in the paper's code."""
    model = build_model(name, width=width)
    found = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(found) == count and not any(m.affine for m in found)


def _reference_resnet_logits(weights, head, x, eps):
    """An independent pre-activation ResNet-18 in functional form: ``weights`` are the trainable
    convolutions in the order stem, then per block conv1, conv2 (and the shortcut's 1x1 conv).
    Every BatchNorm is without affine parameters, in training mode (batch statistics)."""
    def bn(t):
        return F.batch_norm(t, None, None, training=True, eps=eps)

    it = iter(weights)
    out = F.conv2d(x, next(it), padding=1)
    c_in = out.shape[1]
    for stage, stride in enumerate((1, 2, 2, 2)):
        c_out = c_in if stage == 0 else 2 * c_in
        for block in range(2):
            s = stride if block == 0 else 1
            pre = F.relu(bn(out))
            branch = F.conv2d(pre, next(it), stride=s, padding=1)
            branch = F.conv2d(F.relu(bn(branch)), next(it), padding=1)
            if s != 1 or c_in != c_out:  # projection: BN, then the 1x1 strided conv
                out = branch + F.conv2d(bn(pre), next(it), stride=s)
            else:
                out = branch + out
            c_in = c_out
    pooled = F.relu(bn(out)).mean(dim=(2, 3))
    return pooled @ head.T


def test_resnet18_logits_match_an_independent_construction():
    """Fixed seed, fixed inputs (float64): the library's ResNet-18 computes the function of the
    construction above with the same weights. Only summation order differs: 1e-10 relative."""
    model = build_model("resnet18", width=2, init_seed=5).double().train()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    weights = [p.detach() for p in scale_invariant_parameters(model)]
    assert [tuple(w.shape[2:]) for w in weights].count((1, 1)) == 3
    expected = _reference_resnet_logits(weights, model.head.weight.detach(), x, eps=1e-5)
    found = model(x).detach()
    torch.testing.assert_close(found, expected, rtol=1e-10, atol=1e-12)
    # and the shortcut's BatchNorm matters: without it the function differs
    no_bn = _without_shortcut_bn(x)
    assert (no_bn - found).norm() / found.norm() > 0.01


def _without_shortcut_bn(x):
    """thermosgd 0.2's shortcut: the 1x1 conv of relu(bn1(x)) with no BatchNorm between."""
    import thermosgd.nn.models as models

    model = build_model("resnet18", width=2, init_seed=5).double().train()
    for module in model.modules():
        if isinstance(module, models._PreActBlock) and module.shortcut_bn is not None:
            module.shortcut_bn = torch.nn.Identity()
    return model(x).detach()
