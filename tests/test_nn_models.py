"""Scale-invariant models: the paper's parameter counts, L(alpha w) = L(w), the frozen head."""

import pytest
import torch

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
