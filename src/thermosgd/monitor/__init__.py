"""``thermosgd.Monitor``: the thermodynamics of any PyTorch training loop.

``api`` (the :class:`Monitor`), ``groups`` (which weights are scale-invariant, found from the
forward pass), ``stats`` (sums kept on the device between flushes), ``predictions`` (the state
and the equilibrium predictions for the optimizer in use, from :mod:`thermosgd.theory`),
``sinks`` (run directory, TensorBoard, W&B), ``lightning`` and ``huggingface`` (callbacks).

``predictions`` needs no torch; the rest loads on first use.
"""

from importlib import import_module

_LAZY = {"Monitor": "thermosgd.monitor.api"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'thermosgd.monitor' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
