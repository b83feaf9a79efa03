"""The optimizer a :class:`~thermosgd.monitor.api.Monitor` watches: the theory of each of its
parameter groups, its parameters matched to the model's, the groups without weight decay, and
a GradScaler that skips its steps.

Weight decay is what holds a scale-invariant weight's norm: the gradient is orthogonal to w
(P2), so each step lengthens w by a factor sqrt(1 + eta^2 |g|^2 / |w|^2) and only the decay
-eta lambda w pulls it back. With lambda = 0 the norm grows without bound (r* = (eta sigma^2
(d - 1) / (2 lambda))^(1/4), eq. 19, 21, is infinite; the angular update decays to zero): there
is no equilibrium to predict, and those rows are measured only.
"""

from __future__ import annotations

import warnings

import torch

from thermosgd.theory.optimizers import UnsupportedOptimizer, optimizer_from_torch

__all__ = ["NO_EQUILIBRIUM", "ScalerSteps", "decay_notes", "theories", "trained_parameters"]

NO_EQUILIBRIUM = ("weight_decay = 0: no equilibrium (the norm grows without bound, r* is "
                  "infinite), predictions left empty")


def theories(optimizer) -> tuple[list, list[str]]:
    """Per parameter group, the theory's reading of ``optimizer`` (None where it has none) and
    why not ("" where it has one); warns once per reason."""
    theory, notes = [], []
    for k in range(len(optimizer.param_groups)):
        try:
            theory.append(optimizer_from_torch(optimizer, k))
            notes.append("")
        except UnsupportedOptimizer as err:
            theory.append(None)
            notes.append(str(err))
    for note in sorted({n for n in notes if n}):
        warnings.warn(f"thermosgd.Monitor: {note}; its groups are measured, their "
                      "predictions are left empty", UserWarning, stacklevel=3)
    return theory, notes


def trained_parameters(model, optimizer) -> tuple[list, list[int], list[str]]:
    """The parameters ``optimizer`` trains (``requires_grad``, each once), their parameter
    group and name. Parameters outside ``model`` (a learnable loss's, a temperature) are kept,
    named ``param_groups[k][j]``, and measured like the model's other non-scale-invariant ones.
    Raises ValueError when none of them is the model's: the optimizer belongs to another model."""
    names = {id(p): n for n, p in model.named_parameters()}
    if not names:
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to "
                         "monitor (pass the model whose weights the optimizer trains)")
    params, group, found, seen = [], [], [], set()
    for k, hp in enumerate(optimizer.param_groups):
        for j, p in enumerate(hp["params"]):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
                group.append(k)
                found.append(names.get(id(p), f"param_groups[{k}][{j}]"))
    if not params:
        raise ValueError("the optimizer trains none of the model's parameters (all frozen or "
                         "none given to it): give it the model's parameters")
    if not any(id(p) in names for p in params):
        raise ValueError(f"the optimizer trains none of {type(model).__name__}'s parameters: it "
                         "was built for another model; pass the model it trains, or build it "
                         "from this one's (torch.optim.SGD(model.parameters(), ...))")
    return params, group, found


def decay_notes(optimizer, params, param_group, names, override=None) -> list[str]:
    """Per parameter group, :data:`NO_EQUILIBRIUM` where its weight decay is 0 ("" elsewhere).
    Warns once, naming those groups that hold a row with a prediction: a weight matrix (a
    Conv/Linear weight, scale-invariant or not) or a weight named in the ``override`` groups.
    Biases and norm gains alone (the Hugging Face Trainer's no-decay group) are never
    predicted: noted, not warned about."""
    notes = [NO_EQUILIBRIUM if float(hp.get("weight_decay", 0.0) or 0.0) == 0.0 else ""
             for hp in optimizer.param_groups]
    named = {g.layer for g in override or []}
    held = {}
    for p, k, name in zip(params, param_group, names):
        if notes[k] and (p.dim() >= 2 or name in named):
            held.setdefault(k, []).append(name)
    if held:
        listed = "; ".join(f"{k} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                           for k, v in sorted(held.items()))
        warnings.warn(f"thermosgd.Monitor: weight_decay = 0 in parameter group {listed}: "
                      "without weight decay a scale-invariant weight's norm grows without bound "
                      "(r* is infinite), there is no equilibrium and its predictions are left "
                      "empty; give these groups weight_decay > 0 to have them", UserWarning,
                      stacklevel=3)
    return notes


class ScalerSteps:
    """Counts the loop's steps from a ``torch.amp.GradScaler``'s ``update()`` calls, one per
    step: ``scaler.step(optimizer)`` skips ``optimizer.step()`` when the unscaled gradients hold
    an inf or a nan, so the optimizer's hooks miss those steps, and ``update()`` (which lowers
    the scale after them) is called anyway. An update with no optimizer step since the last one
    moves the monitor on by one skipped step (``monitor.step_to``)."""

    def __init__(self, scaler):
        if not isinstance(scaler, torch.amp.GradScaler):
            raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
        self.scaler, self._counted, self._seen = scaler, None, 0

    def attach(self, monitor) -> None:
        """Wrap this scaler's ``update`` (an instance attribute: other scalers keep theirs)."""
        self._previous = self.scaler.__dict__.get("update")
        update, self._seen = self.scaler.update, monitor.optimizer_steps

        def counted(*args, **kwargs):
            out = update(*args, **kwargs)
            if monitor.optimizer_steps == self._seen:  # skipped: inf/nan gradients
                monitor.step_to(monitor.step + 1)
            self._seen = monitor.optimizer_steps
            return out
        self._counted = self.scaler.update = counted

    def remove(self) -> None:
        if self._counted is None or self.scaler.__dict__.get("update") is not self._counted:
            return  # never attached, or wrapped again since: leave the newer wrapper in place
        if self._previous is None:
            del self.scaler.update
        else:
            self.scaler.update = self._previous
