"""The scaling test: scale-invariant groups confirmed, and found, by scaling weights on a batch.

A group w is scale-invariant when the model's output, hence its loss, does not change under
w -> alpha w (alpha > 0). The rules of :mod:`thermosgd.monitor.groups` name candidates; this
module asks the model, on (a slice of) the first batch it trained on, whether its output with
the candidates scaled is its output without. The passes run in the modes of that training pass
(BatchNorm in eval mode divides by running statistics: not scale-invariant) and leave no trace:
buffers (running statistics, num_batches_tracked) and modes restored, the RNG forked and reset
to one state before each pass (the same dropout masks), weights copied back (not divided).

Confirming. Every candidate group is scaled by its own factor, log-uniform in [2, 4], in one
pass. Where some output tensor moves by more than TOLERANCE of its norm, the candidates (one
unit per layer) are bisected: a half that passes is kept, a half that fails is split again, so
k failing layers among n cost O(k log n) passes. A structural candidate that fails is dropped,
with a warning that names it.

Finding. Every other trained weight of dim >= 2 is screened (:mod:`thermosgd.monitor.screen`):
one backward pass per random projection of the outputs gives the radial derivative of every
block of its rows, and the finest partition of each layer whose blocks all have none goes
through the forward test with the structural candidates; one that fails falls back to its
layer's next (at most ROUNDS tries). A proposal is tested a second time with every parameter
of dim <= 1 (biases, gains, layer scales) moved by N(0, MOVE^2): invariance must hold whatever
the other parameters are, and at initialization a zero bias, or a residual branch behind a
layer scale of 1e-6 before a LayerNorm, can make a layer look invariant that training breaks.

Tolerance. Float32 rounding moves a ResNet-18's logits by ~1e-6 of their norm; what decides is
the normalizations' eps, which breaks invariance by about eps / (2 sigma^2) for factors >= 2
(sigma^2 the pre-normalization variance; four times more for a factor 1/2: hence factors above
1). Measured on the paper's ResNet-18 at ||w|| = 1 (variances down to 6e-4): 5e-3 with every
BatchNorm-fed channel scaled, 5e-5 at ||w|| = 10; a layer that is not scale-invariant, scaled
by 2-4, moved the logits by 0.2-0.6. The screen's tolerances follow from this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings

import torch
from torch import nn

from thermosgd.monitor import screen as _screen
from thermosgd.monitor.groups import (Group, _param, _preserved, _tensors, layer_groups,
                                      merge_layers)

__all__ = ["Discovery", "discover"]

TOLERANCE = 1e-2  # largest |f(scaled) - f| / |f| of any output tensor of an invariant group
FACTORS = (2.0, 4.0)  # alpha, log-uniform in this range, one per group and pass
SAMPLES = 4  # batch rows the passes run on (BatchNorm needs more than one)
ROUNDS = 3  # partitions tried per screened layer
MOVE = 0.5  # standard deviation of the move of biases and gains for the second test point
_SEED = 20261208


@dataclasses.dataclass
class Discovery:
    """What discovery did, for the config, the no-group warning and the benchmark."""

    structural: int = 0  # layers a rule named
    screened: tuple = ()  # weights the screen searched
    tested: bool = False  # whether the scaling test ran
    note: str = ""  # why it did not
    samples: int = 0  # batch rows the passes ran on
    passes: int = 0  # forward passes: the reference, the screen's (or a repeat), the tests
    backward: int = 0  # backward passes of the screen
    dropped: tuple = ()  # structural candidates the test refuted
    found: tuple = ()  # weights the scaling test found

    def describe(self) -> str:
        """What was checked, in words, for a model where nothing was found."""
        n = len(self.dropped)
        rule = ("no Conv/Linear output feeds a BatchNorm, InstanceNorm, GroupNorm, LayerNorm or "
                "RMSNorm module directly" if not self.structural else
                f"the {n} layer{'s' * (n > 1)} feeding a normalization module changed the output "
                "when scaled" if n else "the layers feeding a normalization module are not "
                "trained by the optimizer")
        if not self.tested:
            return f"{rule}; the scaling test did not run: {self.note}"
        return (f"{rule}; scaling each of the {len(self.screened)} other weights on the first "
                "batch (by row, by block of rows, whole, without and with its bias) changed the "
                "output")


@dataclasses.dataclass
class _Unit:
    """The groups of one layer, tested together (each with its own factor)."""

    weight: str
    groups: list
    structural: bool


def discover(model: nn.Module, recorder, granularity: str | None = None
             ) -> tuple[list[Group], Discovery]:
    """The scale-invariant groups of ``model``: the recorder's structural candidates that the
    scaling test confirms (or cannot run on), and the groups the test finds among the other
    weights; ``granularity`` "layer" merges each layer's groups. Without a recorded batch the
    candidates are kept untested."""
    recorder.remove()
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    rules = {}  # weight -> (its bias or None, rows, blocks, norm): the structural candidates
    for name, e in recorder.edges.items():
        bias = _param(name, "bias") if e.bias and getattr(
            modules[name], "bias", None) is not None else None
        weight = _param(name, "weight")
        rules[weight] = (bias, params[weight].shape[0], e.blocks, e.norm)
    report, kept = Discovery(structural=len(rules)), {}
    batch, recorder.batch = recorder.batch, None
    if batch is None:
        report.note = "no forward pass was recorded to rerun"
    else:
        probe = _Probe(model, batch, params)
        with probe.preserved():
            probe.start()
            try:
                if not probe.note:
                    _search(probe, modules, params, rules, kept, report)
            except Exception as err:  # noqa: BLE001 -- the user's model with weights scaled
                probe.note = f"the model raised {type(err).__name__} in the test: {err}"
                kept.clear()
                report.tested, report.dropped, report.found = False, (), ()
            report.note = probe.note
        report.samples, report.passes, report.backward = probe.samples, probe.passes, \
            probe.backward
    for weight in report.dropped:
        warnings.warn(f"thermosgd.Monitor: {weight} feeds a {rules[weight][3]} but scaling "
                      "it on the first batch changed the model's output: it is not a "
                      "scale-invariant group (its output is used again, or the norm's eps "
                      "dominates its variance)", UserWarning, stacklevel=4)
    for weight, rule in rules.items():  # untested: the rule alone
        if weight not in kept and weight not in report.dropped:
            kept[weight] = layer_groups(weight, *rule)
    order = {name: k for k, name in enumerate(params)}
    groups = [g for w in sorted(kept, key=order.__getitem__) for g in kept[w]]
    return (merge_layers(groups) if granularity == "layer" else groups), report


def _search(probe, modules, params, rules, kept, report) -> None:
    """Confirm the structural candidates, find the others' groups (into ``kept``)."""
    ran = probe.batch.ran
    screened = _screenable(modules, params, set(rules), ran)
    options = _screen.screen(probe, screened, ROUNDS) if screened else probe.repeat()
    if probe.note:
        return
    report.tested, report.screened = True, tuple(w for w, _ in screened)
    units = [_Unit(w, layer_groups(w, *rule, found="structure+scaling"), True)
             for w, rule in rules.items()
             if w.rpartition(".")[0] in ran and params[w].requires_grad]
    options, bias_of = options or {}, dict(screened)
    dropped, found = [], []
    for _ in range(ROUNDS):
        for w in list(options):
            if options[w]:
                blocks, bias = options[w].pop(0)
                units.append(_Unit(w, layer_groups(w, bias_of[w] if bias else None,
                                                   params[w].shape[0], blocks, "unknown",
                                                   "scaling"), False))
        failing = {id(u) for u in probe.failing(units)}
        proposed = [u for u in units if not u.structural and id(u) not in failing]
        if proposed:  # invariance must hold whatever the other parameters: test elsewhere too
            with probe.elsewhere():
                failing |= {id(u) for u in probe.failing(proposed)}
        for unit in units:
            if id(unit) in failing:
                if unit.structural:
                    dropped.append(unit.weight)
                continue
            options.pop(unit.weight, None)
            kept[unit.weight] = unit.groups
            if not unit.structural:
                found.append(unit.weight)
        units = []
        if not any(options.values()):
            break
    report.dropped, report.found = tuple(dropped), tuple(found)


def _screenable(modules, params, claimed, ran) -> list[tuple[str, str | None]]:
    """(weight, its bias or None) for every trained parameter of dim >= 2 that no rule claimed,
    of a module the pass called; the bias where its rows are the weight's (not a transposed
    convolution's, not the (in, out) weight of transformers' Conv1D)."""
    out, seen = [], {id(m.weight) for m in modules.values()
                     if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    for name, module in modules.items():
        if name not in ran:
            continue
        for key, p in module.named_parameters(recurse=False):
            full = _param(name, key)
            if p.dim() < 2 or not p.requires_grad or id(p) in seen or full in claimed \
                    or full not in params:
                continue
            seen.add(id(p))
            bias = getattr(module, "bias", None) if key == "weight" else None
            aligned = isinstance(bias, nn.Parameter) and bias.requires_grad and \
                bias.shape == p.shape[:1] and type(module).__name__ != "Conv1D" and \
                not isinstance(module, nn.modules.conv._ConvTransposeNd)
            out.append((full, _param(name, "bias") if aligned else None))
    return out


class _Probe:
    """Passes of the model on the recorded batch that leave no trace."""

    def __init__(self, model, batch, params):
        self.model, self.batch, self.params = model, batch, params
        self.passes = self.backward = self.samples = 0
        self.note = ""
        self.args, self.kwargs, self.reference = batch.args, batch.kwargs, []
        self._gen = torch.Generator().manual_seed(_SEED)
        self._saved: dict[str, torch.Tensor] = {}  # originals, copied back at the end
        self._current: dict[str, torch.Tensor] = {}  # the moved ones, while elsewhere

    @contextlib.contextmanager
    def preserved(self):
        """Modes of the recorded pass, RNG forked; weights, buffers and modes restored."""
        tensors = [*self.params.values(), *self.model.buffers()]
        devices = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
        with _preserved(self.model, devices):
            self._rng = (torch.get_rng_state(),
                         [(d, torch.cuda.get_rng_state(d)) for d in devices])
            for module, training in self.batch.modes:
                module.training = training
            try:
                yield
            finally:
                with torch.no_grad():
                    for name, original in self._saved.items():
                        self.params[name].copy_(original)

    def start(self) -> None:
        """The reference outputs, on a slice of the batch where the model takes one; ``note``
        says why the test cannot run."""
        tries = [_sliced(self.batch.args, self.batch.kwargs, SAMPLES),
                 (self.batch.args, self.batch.kwargs)]
        error = None
        for args, kwargs in (t for t in tries if t is not None):
            try:
                reference = _floats(self.run(args, kwargs))
            except Exception as err:  # noqa: BLE001 -- the user's model on a slice of its batch
                error = err
                continue
            self.args, self.kwargs = args, kwargs
            break
        else:
            self.note = f"the model raised {type(error).__name__} on the first batch: {error}"
            return
        self.samples = max((t.shape[0] for t in _tensors([list(self.args), list(
            self.kwargs.values())]) if t.dim()), default=0)
        if not reference:
            self.note = "the forward pass returns no floating-point tensor"
        elif not _finite(reference):
            self.note = "the model's output on the first batch is not finite"
        else:
            self.reference = reference

    def repeat(self, out=None) -> None:
        """Check that a second pass (the screen's, or one of its own) gives the reference."""
        out = _floats(self.run()) if out is None else out
        if _change([t.detach() for t in out], self.reference) > TOLERANCE / 10:
            self.note = ("the model's output is not reproducible on the first batch "
                         "(randomness outside torch's generator, or nondeterministic kernels)")

    def run(self, args=None, kwargs=None, grad: bool = False):
        """The model on the batch (``args``, ``kwargs``: the slice chosen), RNG reset."""
        torch.set_rng_state(self._rng[0])
        for device, state in self._rng[1]:
            torch.cuda.set_rng_state(state, device)
        self.passes += 1
        module = self.batch.module  # DDP's wrapper would wait for a gradient reduction
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        with torch.set_grad_enabled(grad):
            return module(*(self.args if args is None else args),
                          **(self.kwargs if kwargs is None else kwargs))

    def change(self, units) -> float:
        """Largest relative change of an output with every group of ``units`` scaled by its
        own factor; the weights are copied back."""
        groups = [g for unit in units for g in unit.groups]
        low, high = math.log(FACTORS[0]), math.log(FACTORS[1])
        factors = torch.exp(low + (high - low) * torch.rand(len(groups), generator=self._gen))
        rows: dict[str, tuple[list, list]] = {}
        for g, f in zip(groups, factors.tolist()):
            for name in g.params:
                r, v = rows.setdefault(name, ([], []))
                r.extend(g.rows)
                v.extend([f] * len(g.rows))
        with torch.no_grad():
            try:
                for name, (r, v) in rows.items():
                    p = self.params[name]
                    if name not in self._saved:
                        self._saved[name] = p.detach().clone()
                    scale = torch.ones(p.shape[0], dtype=p.dtype)
                    scale[r] = torch.tensor(v, dtype=p.dtype)
                    p.mul_(scale.to(p.device).view(-1, *[1] * (p.dim() - 1)))
                out = _floats(self.run())
            finally:
                for name in rows:
                    self.params[name].copy_(self._current.get(name, self._saved[name]))
        return _change(out, self.reference)

    @contextlib.contextmanager
    def elsewhere(self):
        """Every parameter of dim <= 1 moved by N(0, MOVE^2), a new reference there (none,
        every unit passing, where it is not finite); all set back after."""
        moved = [(n, p) for n, p in self.params.items() if p.dim() <= 1 and p.is_floating_point()]
        reference = self.reference
        with torch.no_grad():
            try:
                for name, p in moved:
                    self._saved.setdefault(name, p.detach().clone())
                    p.add_(MOVE * torch.randn(p.shape, generator=self._gen).to(p))
                    self._current[name] = p.detach().clone()
                out = _floats(self.run())
                self.reference = out if _finite(out) else None
                yield
            finally:
                for name, p in moved:
                    p.copy_(self._saved[name])
                self.reference, self._current = reference, {}

    def failing(self, units) -> list:
        """The units whose scaling changes the output: bisection, O(k log n) passes."""
        if not units or self.reference is None or self.change(units) <= TOLERANCE:
            return []
        return self._split(units)

    def _split(self, units) -> list:
        """The failing units of a set known to fail."""
        if len(units) == 1:
            return list(units)
        half = len(units) // 2
        left = self.failing(units[:half])
        return left + self.failing(units[half:]) if left else self._split(units[half:])


def _floats(output) -> list[torch.Tensor]:
    return [t for t in _tensors(output) if t.is_floating_point()]


def _finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)  # host reads: at discovery


def _change(out, reference) -> float:
    """Largest |out - reference| / |reference| over the output tensors (inf where they
    differ in number or shape, or are not finite)."""
    if len(out) != len(reference) or any(o.shape != r.shape for o, r in zip(out, reference)):
        return math.inf
    if not out:
        return 0.0
    worst = torch.stack([(o.double() - r.double()).norm() / r.double().norm().clamp_min(1e-300)
                         for o, r in zip(out, reference)]).max()
    return float(torch.nan_to_num(worst, nan=math.inf))  # host read: once per pass


def _sliced(args, kwargs, n):
    """(args, kwargs) cut to the first n rows of the batch: every tensor whose first dim is the
    batch's (the most common first dim among the inputs); None where it has n rows or fewer."""
    sizes = [t.shape[0] for t in _tensors([list(args), list(kwargs.values())]) if t.dim()]
    if not sizes:
        return None
    size = max(set(sizes), key=sizes.count)
    if size <= n:
        return None

    def cut(v):
        if isinstance(v, torch.Tensor):
            return v[:n] if v.dim() and v.shape[0] == size else v
        if type(v) in (tuple, list):
            return type(v)(cut(x) for x in v)
        if type(v) is dict:
            return {k: cut(x) for k, x in v.items()}
        return v
    return cut(tuple(args)), cut(dict(kwargs))
