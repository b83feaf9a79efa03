"""Scale-invariant networks (section 6, appendix F): models, data, the single-run trainer."""

from thermosgd.nn.data import DATASETS, DataError, Dataset, load_dataset
from thermosgd.nn.models import (
    ConvNet,
    PreActResNet18,
    build_model,
    parameter_norm,
    scale_invariant_parameters,
    set_parameter_norm,
)
from thermosgd.nn.config import TrainConfig
from thermosgd.nn.trainer import TrainResult, train

__all__ = [
    "DATASETS",
    "ConvNet",
    "DataError",
    "Dataset",
    "PreActResNet18",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "load_dataset",
    "parameter_norm",
    "scale_invariant_parameters",
    "set_parameter_norm",
    "train",
]
