"""Scale-invariant networks (section 6, appendix F): models, data, the engine for G >= 1 runs."""

from thermosgd.nn.config import TrainConfig
from thermosgd.nn.data import DATASETS, DataError, Dataset, load_dataset
from thermosgd.nn.engine import Engine
from thermosgd.nn.models import (
    ConvNet,
    PreActResNet18,
    build_model,
    parameter_norm,
    scale_invariant_parameters,
    set_parameter_norm,
)
from thermosgd.nn.training import train, train_batched
from thermosgd.results.rundir import TrainResult

__all__ = [
    "DATASETS",
    "ConvNet",
    "DataError",
    "Dataset",
    "Engine",
    "PreActResNet18",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "load_dataset",
    "parameter_norm",
    "scale_invariant_parameters",
    "set_parameter_norm",
    "train",
    "train_batched",
]
