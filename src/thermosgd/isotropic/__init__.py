"""The isotropic noise model (section 5, appendix E), batched over whole hyperparameter grids.

``IsotropicConfig`` holds one protocol's grid and schedule; :func:`simulate` runs it in a
compiled loop (``_kernel``) with per-point counter-free noise streams (``_rng``) and returns the
stationary table and traces. The simulator (numba, and torch for the entropy) loads on first
use, so reading a config costs neither.
"""

from importlib import import_module

from thermosgd.isotropic.config import IsotropicConfig

_SIMULATOR = ("IsotropicResult", "grid_momenta", "grid_protocol", "simulate", "unit_vector")

__all__ = ["IsotropicConfig", *_SIMULATOR]


def __getattr__(name):
    if name in _SIMULATOR:
        return getattr(import_module("thermosgd.isotropic.simulator"), name)
    raise AttributeError(f"module 'thermosgd.isotropic' has no attribute {name!r}")
