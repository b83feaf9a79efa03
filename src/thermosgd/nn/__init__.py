"""Scale-invariant networks (section 6, appendix F): models, data, the engine for G >= 1 runs.

``TrainConfig`` needs no torch; the rest loads on first use.
"""

from importlib import import_module

from thermosgd.nn.config import DATASETS, TrainConfig

# public name -> module that defines it (loaded on first use: they import torch)
_LAZY = {
    "ConvNet": "thermosgd.nn.models",
    "PreActResNet18": "thermosgd.nn.models",
    "build_model": "thermosgd.nn.models",
    "parameter_norm": "thermosgd.nn.models",
    "scale_invariant_parameters": "thermosgd.nn.models",
    "set_parameter_norm": "thermosgd.nn.models",
    "DataError": "thermosgd.nn.data",
    "Dataset": "thermosgd.nn.data",
    "load_dataset": "thermosgd.nn.data",
    "Engine": "thermosgd.nn.engine",
    "train": "thermosgd.nn.training",
    "train_batched": "thermosgd.nn.training",
    "TrainResult": "thermosgd.results.rundir",
    "Monitor": "thermosgd.monitor.api",
}

__all__ = ["DATASETS", "TrainConfig", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'thermosgd.nn' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
