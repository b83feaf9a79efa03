"""Scale-invariant groups of a user's model, named from the graph its forward pass runs.

A weight W is scale-invariant when the loss does not change under W -> alpha W (alpha > 0), which
holds when W's output goes straight into a normalization that divides by its own scale (P1 of
the paper). Which slice of W is a group follows from what the normalization divides by:

=====================================  =========================================================
normalization of the output            scale-invariant group
=====================================  =========================================================
BatchNorm, InstanceNorm                each output channel (row of W): the channel's mean and
                                       variance are taken over the batch (and space) alone; a
                                       bias of the layer cancels in the mean subtraction
GroupNorm(G groups)                    each group of C / G channels, with their bias rows
LayerNorm, RMSNorm over slices that    the whole layer with its bias: every slice is divided by
hold every channel                     its own scale, so W and b scaled together cancel (RMSNorm
                                       subtracts no mean: its bias can never be left out)
... over slices of d channels          each block of d rows with its bias: QK-norm, a head's
(a head: ``q.view(B, T, H, d)``)       rows of W_q normalized over the head dimension
... over slices inside one channel     each channel; LayerNorm's mean cancels the bias,
(LayerNorm over W of an NCHW output)   RMSNorm's does not (its bias rows join)
=====================================  =========================================================

Found structurally: forward hooks record which Conv/Linear output tensor is, unmodified (its
in-place version counter unchanged), the input of a normalization module, as the same Python
object or as a view of it (a permute to channels-last, a split into heads); the strides of that
view say which output channels each normalized slice holds. Any op in between that computes (a
ReLU, a residual add, in place or not, a bias added by hand) breaks the match. The output must
also feed nothing else: a pre-activation ResNet's stem conv goes into the first block's
BatchNorm and, unnormalized, into its identity shortcut, so its channels are not scale-invariant
on their own. Where the forward pass records a graph, each such output's autograd node must have
no consumer in the graph that leads to the model's outputs other than its norm's own ops (which
are several for RMSNorm: a square, a mean, a product). A subclass of LayerNorm fed an NCHW
conv output and normalizing C features is read as timm's LayerNorm2d (it permutes inside).

These are candidates: :mod:`thermosgd.monitor.scaling` scales them on the first batch and keeps
those that leave the output unchanged, and finds the groups of normalizations no hook sees (a
functional ``F.layer_norm``, weight standardization). The Recorder keeps that batch: the
inputs of the first training-mode forward pass, with the modes its modules were in.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FOUND", "GRANULARITIES", "Batch", "Group", "Recorder", "example_pass",
           "groups_from_override", "layer_groups", "make_groups", "merge_layers"]

GRANULARITIES = ("channel", "layer")
FOUND = ("structure", "structure+scaling", "scaling", "user")  # how a group was found
_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # output channels are W's rows
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_LAYER_NORMS = (nn.LayerNorm, nn.RMSNorm)
_MAX_SLICE = 1 << 22  # elements of the normalized slices read to map them to channels
_MAX_INDICES = 64  # indices of each leading dim whose slice is read


@dataclass(frozen=True)
class Group:
    """One scale-invariant group: rows of one layer's weight (and bias), jointly rescalable."""

    name: str  # "conv1.weight[3]" (one channel), "conv1.weight" (the layer), "q.weight[g0]"
    layer: str  # the weight's parameter name
    params: tuple[str, ...]  # parameter names whose rows belong to the group
    rows: tuple[int, ...]  # output rows (channels) of those parameters
    norm: str  # the normalization that makes it scale-invariant, e.g. "BatchNorm2d"
    found: str = "structure"  # one of FOUND: the rule, the rule confirmed by the scaling test,
    #                           the scaling test alone, or named by the user


@dataclass(frozen=True)
class Batch:
    """The inputs of one forward pass, to run it again with weights scaled."""

    module: nn.Module  # the module called: the model, or a submodule called directly
    args: tuple
    kwargs: dict
    modes: tuple  # ((module, training flag), ...) of every module during the pass
    ran: frozenset  # names of the modules the pass called


@dataclass(frozen=True)
class _Edge:
    """A layer's output normalized: which of its rows each normalized slice holds."""

    norm: str  # class name of the normalization
    blocks: frozenset  # {(row, ...), ...}: each a group of rows normalized together
    bias: bool  # whether the layer's bias rows join the group


class Recorder:
    """Forward hooks that watch the model's first forward passes for Conv/Linear -> norm edges.

    Outputs are held by reference until the outermost module's forward ends, so Python ids are
    not reused within a pass. ``edges`` maps a layer's module name to an _Edge; ``shared`` names
    the layers whose output, fed to a norm, also fed something else; ``batch`` is the first
    training-mode pass (the first pass if none trains).
    """

    def __init__(self, model: nn.Module):
        self.edges: dict[str, _Edge] = {}
        self.shared: set[str] = set()
        self.batch: Batch | None = None
        self._found: dict[str, _Edge | None] = {}
        self._pass_edges: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # layer, out, norm's
        self._pending: dict[int, list] = {}  # a norm module's calls: (layer, its output) or None
        self._outputs: dict[int, tuple[str, torch.Tensor, int, int]] = {}
        self._pass: list | None = None  # [module, args, kwargs, modes] while a kept pass runs
        self._ran: set[str] = set()
        self._handles = []
        self._depth = 0
        self._names = {m: n for n, m in model.named_modules()}
        for module, name in self._names.items():
            # a pass is the outermost module call: the model's own forward, or a submodule
            # called directly (a LightningModule's training_step calls its network)
            self._handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
            if isinstance(module, _LINEAR):
                self._handles.append(module.register_forward_hook(self._output(name, module)))
            elif isinstance(module, (*_PER_CHANNEL, nn.GroupNorm, *_LAYER_NORMS)):
                self._handles.append(module.register_forward_pre_hook(self._input(module)))
                self._handles.append(module.register_forward_hook(self._normalized))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, module, args, kwargs):
        if self._depth == 0:
            self._ran = set()
            keep = self.batch is None or (module.training and not self.batch.modes[0][1])
            self._pass = [module, args, dict(kwargs), tuple(
                (m, m.training) for m in (module, *self._names))] if keep else None
        self._ran.add(self._names[module])
        self._depth += 1

    def _leave(self, module, args, output):
        self._depth -= 1
        if self._depth == 0:
            self._end_of_pass(output)

    def _end_of_pass(self, output):
        """Keep the pass's edges whose layer output has no consumer in the graph outside its
        norm's own ops (RMSNorm is several: a square, a mean, a product)."""
        users = _consumers(output) if any(out.grad_fn is not None and y.grad_fn is not None
                                          for _, out, y in self._pass_edges) else None
        for name, out, normalized in self._pass_edges:
            if users is None or out.grad_fn is None or normalized.grad_fn is None:
                continue
            inside = _behind(normalized.grad_fn, out.grad_fn)
            if any(user not in inside for user in users.get(out.grad_fn, ())):
                self.shared.add(name)
        self.edges = {name: edge for name, edge in self._found.items()
                      if edge is not None and name not in self.shared}
        if self._pass is not None:
            self.batch = Batch(*self._pass, frozenset(self._ran))
        self._pass = None
        self._pass_edges.clear()
        self._pending.clear()
        self._outputs.clear()

    def _output(self, name, layer):
        channel_dim = -1 if isinstance(layer, nn.Linear) else 1

        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                self._outputs[id(_root(output))] = (name, output, output._version,
                                                    channel_dim % max(output.dim(), 1))
        return hook

    def _input(self, norm):
        def hook(module, args):
            x = args[0] if args else None
            calls = self._pending.setdefault(id(module), [])
            calls.append(None)
            if not isinstance(x, torch.Tensor) or id(_root(x)) not in self._outputs:
                return
            name, out, version, cdim = self._outputs[id(_root(x))]
            if x._version != version:  # changed in place since the layer wrote it
                return
            calls[-1] = (name, out)
            edge = _edge(norm, x, out, cdim)
            old = self._found.get(name, edge)
            if old is not None and edge is not None and old.bias == edge.bias and (
                    _disjoint(old.blocks - edge.blocks, edge.blocks)):
                self._found[name] = _Edge(old.norm, old.blocks | edge.blocks, old.bias)
            else:  # two readings of one output (two norms that disagree): the test decides
                self._found[name] = None
        return hook

    def _normalized(self, module, args, output):
        calls = self._pending.get(id(module))
        call = calls.pop() if calls else None
        if call is not None and isinstance(output, torch.Tensor):
            self._pass_edges.append((*call, output))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()
        self._pass = None


def _root(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage a view reads (a Linear on 3-d input already returns a view)."""
    return t if t._base is None else t._base


def _disjoint(blocks, others) -> bool:
    rows = [r for b in blocks for r in b]
    return len(set(rows)) == len(rows) and not set(rows) & {r for b in others for r in b}


def _edge(norm: nn.Module, x: torch.Tensor, out: torch.Tensor, cdim: int) -> _Edge | None:
    """Which rows of the layer each slice that ``norm`` divides by its scale holds, for ``x``
    the layer's output ``out`` or a view of it; None where the rules do not say."""
    channels, kind = out.shape[cdim], type(norm).__name__
    everything = frozenset({tuple(range(channels))})
    if x is out and isinstance(norm, _PER_CHANNEL) and cdim == 1:
        return _Edge(kind, frozenset((c,) for c in range(channels)), False)
    if x is out and isinstance(norm, nn.GroupNorm) and cdim == 1:
        if norm.num_channels != channels:
            return None
        size = channels // norm.num_groups
        return _Edge(kind, frozenset(tuple(range(j * size, (j + 1) * size))
                                     for j in range(norm.num_groups)), True)
    if not isinstance(norm, _LAYER_NORMS):
        return None
    shape = tuple(norm.normalized_shape)
    if type(norm) not in _LAYER_NORMS and x is out and out.dim() > 2 and cdim == 1 \
            and shape == (channels,):
        return _Edge(kind, everything, True)  # LayerNorm2d: permutes, normalizes the channels
    if tuple(x.shape[x.dim() - len(shape):]) != shape:
        return None
    slices = _slice_channels(out, x, len(shape), cdim)
    if not slices:
        return None
    sizes = {len(s) for s in slices}
    if sizes == {channels}:
        return _Edge(kind, everything, True)
    if sizes == {1}:  # inside one channel: LayerNorm's mean removes a bias, RMSNorm's does not
        return _Edge(kind, frozenset((c,) for c in range(channels)),
                     isinstance(norm, nn.RMSNorm))
    (size,) = sizes if len(sizes) == 1 else (0,)
    if size and all(s == tuple(range(s[0], s[0] + size)) and s[0] % size == 0 for s in slices):
        # heads: blocks of rows, bias rows with them; the blocks between the first and last
        # read are the rest of the heads (a fused qkv layer: q's and k's, not v's)
        first, last = min(s[0] for s in slices), max(s[0] for s in slices)
        return _Edge(kind, frozenset(tuple(range(j, j + size))
                                     for j in range(first, last + 1, size)), True)
    return None


def _slice_channels(out, x, k, cdim) -> set | None:
    """The sets of output channels held by x's normalized slices (its last k dims), read from
    strides: x's elements sit at offsets of ``out``'s storage, a dense layout in which channel
    = offset // stride(channel) % channels. The slices at every index of each leading dim (the
    others 0; up to _MAX_INDICES of them) are read: a head, a batch or a position index moves
    along one dim at a time. None where a slice holds channels that are not one range."""
    dims = sorted((s, n) for s, n in zip(out.stride(), out.shape) if n > 1)
    expected = 1
    for s, n in dims:
        if s != expected:
            return None  # not dense: offsets do not map to channels
        expected *= n
    lead, size = x.dim() - k, math.prod(x.shape[x.dim() - k:])
    if size > _MAX_SLICE or x.numel() == 0:
        return None
    inner = torch.zeros((), dtype=torch.int64)
    for n, s in zip(x.shape[lead:], x.stride()[lead:]):
        inner = inner[..., None] + torch.arange(n) * s
    per_dim = max(2, min(_MAX_INDICES, _MAX_SLICE // size // max(lead, 1)))
    starts = {0} | {int(i) * s for n, s in zip(x.shape[:lead], x.stride()[:lead])
                    for i in torch.linspace(0, n - 1, min(n, per_dim)).round().long()}
    offsets = torch.tensor(sorted(starts))[:, None] + inner.reshape(1, -1) + (
        x.storage_offset() - out.storage_offset())  # (slices, slice size)
    channels = (torch.div(offsets, out.stride(cdim), rounding_mode="floor")
                % out.shape[cdim]).sort(1).values
    distinct = 1 + (channels.diff(dim=1) != 0).sum(1)
    low, high = channels[:, 0], channels[:, -1]
    if not bool((high - low + 1 == distinct).all()):
        return None
    return {tuple(range(a, b + 1)) for a, b in zip(low.tolist(), high.tolist())}


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
    """{autograd node: the nodes of the graph behind ``output`` that take its result}."""
    users: dict = {}
    stack = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    seen = set(stack)
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            users.setdefault(child, []).append(node)
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return users


def _behind(top, bottom) -> set:
    """The autograd nodes from ``top`` back to (not including) ``bottom``: a norm's ops."""
    seen, stack = {top}, [top]
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is not None and child is not bottom and child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _param(layer: str, name: str) -> str:
    return f"{layer}.{name}" if layer else name


def layer_groups(weight: str, bias: str | None, rows: int, blocks, norm: str,
                 found: str = "structure") -> list[Group]:
    """The groups of one weight of ``rows`` rows: each block of rows, with the rows of ``bias``
    (a parameter name, or None) beside them."""
    params = (weight, bias) if bias else (weight,)
    blocks = sorted(tuple(b) for b in blocks)
    if len(blocks) == 1 and len(blocks[0]) == rows:
        return [Group(weight, weight, params, blocks[0], norm, found)]
    if all(len(b) == 1 for b in blocks):
        return [Group(f"{weight}[{b[0]}]", weight, params, b, norm, found) for b in blocks]
    return [Group(f"{weight}[g{b[0] // len(b)}]", weight, params, b, norm, found)
            for b in blocks]


def merge_layers(groups: list[Group]) -> list[Group]:
    """One group per layer (a union of scale-invariant groups is scale-invariant)."""
    out: dict[str, Group] = {}
    for g in groups:
        if g.layer in out:
            first = out[g.layer]
            params = first.params + tuple(p for p in g.params if p not in first.params)
            out[g.layer] = Group(g.layer, g.layer, params, first.rows + g.rows, g.norm, g.found)
        else:
            out[g.layer] = Group(g.layer, g.layer, g.params, g.rows, g.norm, g.found)
    return list(out.values())


def make_groups(model: nn.Module, edges: dict, granularity: str | None = None) -> list[Group]:
    """The groups of the recorded edges, unconfirmed; ``granularity`` "layer" merges a layer's
    groups into one, None keeps the norm's."""
    modules = dict(model.named_modules())
    out = []
    for name, e in edges.items():
        has_bias = e.bias and getattr(modules[name], "bias", None) is not None
        out += layer_groups(_param(name, "weight"), _param(name, "bias") if has_bias else None,
                            modules[name].weight.shape[0], e.blocks, e.norm)
    return merge_layers(out) if granularity == "layer" else out


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
            out += [Group(f"{name}[{c}]", name, (name,), (c,), "user", "user") for c in rows]
        else:
            out.append(Group(name, name, (name,), rows, "user", "user"))
    return out


@contextlib.contextmanager
def _preserved(model: nn.Module, devices: list[int]):
    """Every buffer (the object and its values) and module mode as they were, the RNG forked."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(m._buffers, k, b, b.clone()) for m in model.modules()
               for k, b in m._buffers.items() if b is not None]
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for store, key, buffer, saved in buffers:
                    store[key] = buffer
                    buffer.copy_(saved)
            for module, training in modes:
                module.training = training


def example_pass(model: nn.Module, example) -> None:
    """Run ``example`` through ``model`` for the Recorder in train mode (the mode the scaling
    test reruns), with a graph, changing nothing; a batch train mode refuses (one sample before
    a BatchNorm) runs in eval mode, for the structure only."""
    devices = sorted({t.device.index or 0 for t in (*model.parameters(), *model.buffers())
                      if t.device.type == "cuda"})
    with _preserved(model, devices), torch.enable_grad():
        model.train()
        try:
            model(example)
            return
        except (ValueError, RuntimeError):
            pass
    with _preserved(model, devices), torch.enable_grad():
        model.eval()
        model(example)
