"""Scale-invariant networks (section 6, appendix F): models now; data and trainers to follow."""

from thermosgd.nn.models import (
    ConvNet,
    PreActResNet18,
    build_model,
    parameter_norm,
    scale_invariant_parameters,
    set_parameter_norm,
)

__all__ = [
    "ConvNet",
    "PreActResNet18",
    "build_model",
    "parameter_norm",
    "scale_invariant_parameters",
    "set_parameter_norm",
]
