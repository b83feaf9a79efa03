"""Scale-invariant groups of a user's model, found from the graph its forward pass runs.

A weight W is scale-invariant when the loss does not change under W -> alpha W (alpha > 0), which
holds when W's output goes straight into a normalization that divides by its own scale (P1 of
the paper). Which slice of W is a group follows from what the normalization divides by:

=================================  =============================================================
normalization of the output        scale-invariant group
=================================  =============================================================
BatchNorm, InstanceNorm            each output channel (row of W): the channel's mean and
                                   variance are taken over the batch (and space) alone; a bias
                                   of the layer cancels in the mean subtraction
GroupNorm(G groups)                each group of C / G channels, with their bias rows
LayerNorm over all output features the whole layer, with its bias
=================================  =============================================================

Found structurally: forward hooks record which Conv/Linear output tensor is, as the same Python
object and unmodified (its in-place version counter unchanged), the input of a normalization
layer, so any op in between (a ReLU, a residual add, in place or not, a bias added by hand)
breaks the match. The output must also feed nothing else: a pre-activation ResNet's stem conv
goes into the first block's BatchNorm and, unnormalized, into its identity shortcut, so its
channels are not scale-invariant on their own. Where the forward pass records a graph (a
training step, or the ``example`` pass, run with gradients on), each such output's autograd
node must have one consumer in the graph that leads to the model's outputs; without a graph
this part of the test is skipped, and the monitor's running check (the gradient stays
orthogonal to each group, P2: grad L(w) . w = 0) is what catches a shared output. Models whose
normalization is a functional call rather than a module are not seen: name their groups
(``groups=``) by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GRANULARITIES", "Group", "Recorder", "groups_from_override", "make_groups"]

GRANULARITIES = ("channel", "layer")
_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.ConvTranspose3d)
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Group:
    """One scale-invariant group: rows of one layer's weight (and bias), jointly rescalable."""

    name: str  # "conv1.weight[3]" (one channel), "conv1.weight" (the layer), "fc.weight[g0]"
    layer: str  # the weight's parameter name
    params: tuple[str, ...]  # parameter names whose rows belong to the group
    rows: tuple[int, ...]  # output rows (channels) of those parameters
    norm: str  # the normalization that makes it scale-invariant, e.g. "BatchNorm2d"


class Recorder:
    """Forward hooks that watch the model's first forward passes for Conv/Linear -> norm edges.

    Outputs are held by reference until the root module's forward ends, so Python ids are not
    reused within a pass. ``edges`` maps a layer's module name to (norm module, its class name);
    ``shared`` names the layers whose output, fed to a norm, also fed something else.
    """

    def __init__(self, model: nn.Module):
        self.edges: dict[str, tuple[nn.Module, str]] = {}
        self.shared: set[str] = set()
        self._found: dict[str, tuple[nn.Module, str]] = {}
        self._pass_edges: list[tuple[str, torch.Tensor]] = []
        self._outputs: dict[int, tuple[str, torch.Tensor, int]] = {}
        self._handles = []
        self._depth = 0
        names = {m: n for n, m in model.named_modules()}
        for module, name in names.items():
            # a pass is the outermost module call: the model's own forward, or a submodule
            # called directly (a LightningModule's training_step calls its network)
            self._handles.append(module.register_forward_pre_hook(self._enter))
            if isinstance(module, _LINEAR):
                self._handles.append(module.register_forward_hook(self._output(name)))
            elif isinstance(module, (*_PER_CHANNEL, nn.GroupNorm, nn.LayerNorm)):
                self._handles.append(module.register_forward_pre_hook(self._input(module)))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, module, args):
        self._depth += 1

    def _leave(self, module, args, output):
        self._depth -= 1
        if self._depth == 0:
            self._end_of_pass(output)

    def _end_of_pass(self, output):
        """Keep the pass's edges whose layer output has no other consumer in the graph."""
        counts = _consumers(output) if any(t.grad_fn is not None
                                           for _, t in self._pass_edges) else None
        for name, tensor in self._pass_edges:
            if counts is not None and counts.get(tensor.grad_fn, 0) > 1:
                self.shared.add(name)
        self.edges = {name: edge for name, edge in self._found.items()
                      if name not in self.shared}
        self._pass_edges.clear()
        self._outputs.clear()

    def _output(self, name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                self._outputs[id(output)] = (name, output, output._version)
        return hook

    def _input(self, norm):
        def hook(module, args):
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in self._outputs:
                name, tensor, version = self._outputs[id(args[0])]
                if tensor is args[0] and tensor._version == version:  # not changed in place
                    self._found.setdefault(name, (norm, type(norm).__name__))
                    self._pass_edges.append((name, tensor))
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in a forward pass's output: a tensor, or nested tuples, lists and dicts
    (a Hugging Face ModelOutput is a dict)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _consumers(output) -> dict:
    """{autograd node: how many edges of the graph behind ``output`` point at it}."""
    counts: dict = {}
    stack = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    seen = set(stack)
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            counts[child] = counts.get(child, 0) + 1
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return counts


def _groups_of_layer(name: str, module: nn.Module, norm: nn.Module, kind: str) -> list[Group]:
    weight = f"{name}.weight" if name else "weight"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return []  # its output channels are W's columns, not rows: name such groups by hand
    has_bias = getattr(module, "bias", None) is not None
    channels = module.weight.shape[0]
    if isinstance(norm, _PER_CHANNEL):
        # the channel mean removes a bias: the weight's rows alone are scale-invariant
        return [Group(f"{weight}[{c}]", weight, (weight,), (c,), kind) for c in range(channels)]
    params = (weight, f"{name}.bias" if name else "bias") if has_bias else (weight,)
    if isinstance(norm, nn.GroupNorm):
        if norm.num_channels != channels:
            return []
        size = channels // norm.num_groups
        return [Group(f"{weight}[g{j}]", weight, params, tuple(range(j * size, (j + 1) * size)),
                      kind) for j in range(norm.num_groups)]
    # LayerNorm: scale-invariant only when it normalizes over every output feature of a Linear
    if isinstance(module, nn.Linear) and tuple(norm.normalized_shape) == (channels,):
        return [Group(weight, weight, params, tuple(range(channels)), kind)]
    return []


def make_groups(model: nn.Module, edges: dict, granularity: str | None = None) -> list[Group]:
    """The groups of the recorded edges; ``granularity`` "layer" merges a layer's channels into
    one group (a union of scale-invariant groups is scale-invariant), None keeps the norm's."""
    modules = dict(model.named_modules())
    out = []
    for name, (norm, kind) in edges.items():
        groups = _groups_of_layer(name, modules[name], norm, kind)
        if granularity == "layer" and len(groups) > 1:
            rows = tuple(r for g in groups for r in g.rows)
            groups = [Group(groups[0].layer, groups[0].layer, groups[0].params, rows, kind)]
        out += groups
    return out


def groups_from_override(model: nn.Module, spec) -> list[Group]:
    """Groups named by the user: a list of weight names (each one per-layer group), or a dict
    name -> "layer" | "channel". Raises ValueError naming what to change."""
    params = dict(model.named_parameters())
    items = spec.items() if isinstance(spec, dict) else ((name, "layer") for name in spec)
    out = []
    for name, granularity in items:
        if name not in params:
            close = [p for p in params if p.endswith(str(name).rsplit(".", 1)[-1])][:5]
            raise ValueError(f"groups names {name!r}, which is not a parameter of the model "
                             f"(some that are: {', '.join(close) or ', '.join(list(params)[:5])})")
        if granularity not in GRANULARITIES:
            raise ValueError(f"groups[{name!r}] must be one of {', '.join(GRANULARITIES)}, "
                             f"got {granularity!r}")
        p = params[name]
        if p.dim() == 0:
            raise ValueError(f"{name} is a scalar: it cannot form a scale-invariant group")
        rows = tuple(range(p.shape[0]))
        if granularity == "channel":
            out += [Group(f"{name}[{c}]", name, (name,), (c,), "user") for c in rows]
        else:
            out.append(Group(name, name, (name,), rows, "user"))
    return out
