"""Fully scale-invariant ConvNet and pre-activation ResNet-18 (section 6.2, appendix F).

Every trainable weight is a convolution followed, directly or through the residual stream, by a
BatchNorm without affine parameters, so the loss satisfies L(alpha w) = L(w) for all alpha > 0
when all trainable weights are scaled together (up to BatchNorm's eps). The last linear layer is
frozen: initialized from a fixed seed shared by every run of a sweep and rescaled to Frobenius
norm 10 (appendix F).

ResNet-18's residual stream is homogeneous of degree one in the weights: the stem convolution,
each block's second convolution and the 1x1 shortcut convolutions all scale with alpha, and
every branch starts from a BatchNorm, so the final BatchNorm removes the common factor.

The projection shortcut is the paper's: a BatchNorm without affine parameters, then the 1x1
strided convolution, applied to relu(bn1(x)), so ResNet-18 has 20 BatchNorm layers (2 per block,
3 shortcuts, the final one). thermosgd 0.2 and earlier had no BatchNorm there (17 layers, the
same 43692 weights at k = 4, a different function: logits about 24 % apart with identical
weights); runs record which they used (``schema.ARCHITECTURES``: "resnet18-v2" is the paper's).

Trainable parameter counts (SPEC): ConvNet k=8 -> 24408, k=16 -> 97200; ResNet-18 k=4 -> 43692,
k=32 -> 2790240.
"""

from __future__ import annotations

import torch
from torch import nn

from thermosgd.nn.config import BN_EPS, MODEL_NAMES

__all__ = [
    "BN_EPS",
    "HEAD_NORM",
    "MODELS",
    "ConvNet",
    "PreActResNet18",
    "build_model",
    "parameter_norm",
    "scale_invariant_parameters",
    "set_parameter_norm",
]

HEAD_NORM = 10.0  # Frobenius norm of the frozen last layer's weight (appendix F)




def _bn(channels: int, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, affine=False)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _frozen_head(features: int, num_classes: int, bias: bool, seed: int) -> nn.Linear:
    """The fixed last layer: seeded init, weight rescaled to norm HEAD_NORM, never trained."""
    head = nn.Linear(features, num_classes, bias=bias)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bound = features**-0.5
        head.weight.uniform_(-bound, bound, generator=generator)
        head.weight.mul_(HEAD_NORM / head.weight.norm())
        if bias:
            head.bias.uniform_(-bound, bound, generator=generator)
    head.requires_grad_(False)
    return head


class ConvNet(nn.Module):
    """conv3x3 3->k, BN, ReLU; three times conv3x3 c->2c, BN, ReLU, max-pool 2; global max-pool;
    frozen linear 8k -> classes with bias (SPEC, after Kodryan et al. 2022)."""

    def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 3,
                 head_seed: int = 0, bn_eps: float = BN_EPS):
        super().__init__()
        _check(width, num_classes, in_channels)
        k = width
        layers = [_conv3x3(in_channels, k), _bn(k, bn_eps), nn.ReLU()]
        for c in (k, 2 * k, 4 * k):
            layers += [_conv3x3(c, 2 * c), _bn(2 * c, bn_eps), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = _frozen_head(8 * k, num_classes, bias=True, seed=head_seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _PreActBlock(nn.Module):
    """relu(bn1(x)) -> conv -> bn2 -> relu -> conv, plus x, or where the shape changes
    BN -> 1x1 strided conv of relu(bn1(x)) (the paper's projection shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int, bn_eps: float):
        super().__init__()
        self.bn1 = _bn(c_in, bn_eps)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = _bn(c_out, bn_eps)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut_bn, self.shortcut = None, None
        if stride != 1 or c_in != c_out:
            # registered after conv2, as the shortcut conv was before it had a BatchNorm: the
            # convolutions draw their initial weights from one seed in the same order
            self.shortcut_bn = _bn(c_in, bn_eps)
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(self.shortcut_bn(pre))
        return self.conv2(torch.relu(self.bn2(self.conv1(pre)))) + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 of width k: stem conv3x3 3->k; stages of 2 blocks with k, 2k, 4k,
    8k channels and strides 1, 2, 2, 2; final BN, ReLU, average pool (4x4 at 32 px), frozen
    linear 8k -> classes without bias (SPEC)."""

    def __init__(self, width: int = 4, num_classes: int = 10, in_channels: int = 3,
                 head_seed: int = 0, bn_eps: float = BN_EPS):
        super().__init__()
        _check(width, num_classes, in_channels)
        k = width
        self.stem = _conv3x3(in_channels, k)
        blocks, c_in = [], k
        for c_out, stride in ((k, 1), (2 * k, 2), (4 * k, 2), (8 * k, 2)):
            blocks += [_PreActBlock(c_in, c_out, stride, bn_eps),
                       _PreActBlock(c_out, c_out, 1, bn_eps)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = _bn(8 * k, bn_eps)
        self.pool = nn.AdaptiveAvgPool2d(1)  # = the 4x4 average pool at 32 px, any size >= 8 px
        self.head = _frozen_head(8 * k, num_classes, bias=False, seed=head_seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(self.pool(x).flatten(1))


MODELS = {"convnet": ConvNet, "resnet18": PreActResNet18}
assert tuple(MODELS) == MODEL_NAMES


def _check(width, num_classes, in_channels):
    if int(width) != width or width < 1:
        raise ValueError(f"width k must be an integer >= 1, got {width}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")


def scale_invariant_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable (scale-invariant) weights: every parameter that requires a gradient."""
    return [p for p in model.parameters() if p.requires_grad]


def parameter_norm(model: nn.Module) -> torch.Tensor:
    """Joint Euclidean norm ||w|| of the scale-invariant weights (a 0-d tensor, no host sync)."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p) for p in scale_invariant_parameters(model)]))


@torch.no_grad()
def set_parameter_norm(model: nn.Module, norm: float) -> None:
    """Rescale the scale-invariant weights jointly to ||w|| = norm (the loss does not change)."""
    if not norm > 0:
        raise ValueError(f"norm must be positive, got {norm}")
    factor = norm / parameter_norm(model)
    for p in scale_invariant_parameters(model):
        p.mul_(factor)


def build_model(name: str, *, width: int, num_classes: int = 10, in_channels: int = 3,
                init_seed: int = 0, head_seed: int = 0, norm: float = 1.0,
                bn_eps: float = BN_EPS) -> nn.Module:
    """A model with weights from ``init_seed`` (shared by every run of a sweep) at ||w_0|| = norm.

    ``norm`` is 1 for fixed LR / ELR and the sphere's radius r for the fixed-sphere protocol.
    ``bn_eps`` is BatchNorm's eps. The loss is scale-invariant only while the pre-normalization
    variances (which scale as ||w||^2) dwarf eps. With the default 1e-5, ConvNet k=8 at 32 px
    (measured, float64) loses 0.1 % of its eps-free loss at ||w|| = 1, 1 % at 0.3 and 11 % at
    0.1; ResNet-18 k=4 0.01 %, 0.2 % and 5 %. Lower it (e.g. 1e-12) for runs whose radius falls
    well below 1.
    """
    if not bn_eps > 0:
        raise ValueError(f"bn_eps must be positive, got {bn_eps}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(init_seed)
        model = MODELS[name](width, num_classes, in_channels, head_seed, bn_eps)
    finally:
        torch.random.set_rng_state(state)
    set_parameter_norm(model, norm)
    return model
