"""thermosgd: the thermodynamics of SGD on scale-invariant networks.

Learning rate, weight decay and weight norm act as temperature, pressure and volume; stationary
SGD behaves like an ideal gas; the entropy of the weights obeys Maxwell relations.

The names below load on first use: ``import thermosgd`` costs nothing, and ``thermosgd.theory``
needs neither torch nor numba.
"""

from importlib import import_module

from thermosgd._version import __version__

# public name -> module that defines it
_API = {
    "theory": None,  # a subpackage
    "nn": None,
    "sweeps": None,
    "Protocol": "thermosgd.protocols",
    "FixedSphere": "thermosgd.protocols",
    "FixedELR": "thermosgd.protocols",
    "FixedLR": "thermosgd.protocols",
    "make_protocol": "thermosgd.protocols",
    "knn_entropy": "thermosgd.entropy",
    "to_spherical": "thermosgd.entropy",
    "sphere_entropy": "thermosgd.entropy",
    "total_entropy": "thermosgd.entropy",
    "IsotropicConfig": "thermosgd.isotropic",
    "IsotropicResult": "thermosgd.isotropic",
    "simulate": "thermosgd.isotropic",
    "isotropic_checks": "thermosgd.analysis",
    "run_isotropic": "thermosgd.reproduce",
    "TrainConfig": "thermosgd.nn",
    "train": "thermosgd.nn",
    "Monitor": "thermosgd.monitor.api",
    "Sweep": "thermosgd.sweeps",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'thermosgd' has no attribute {name!r}")
    module = import_module(f"thermosgd.{name}" if _API[name] is None else _API[name])
    value = module if _API[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
