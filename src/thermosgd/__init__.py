"""thermosgd: the thermodynamics of SGD on scale-invariant networks.

Learning rate, weight decay and weight norm act as temperature, pressure and volume; stationary
SGD behaves like an ideal gas; the entropy of the weights obeys Maxwell relations.
"""

__version__ = "0.1.0"

from thermosgd import theory
from thermosgd.analysis import isotropic_checks
from thermosgd.entropy import knn_entropy, sphere_entropy, to_spherical, total_entropy
from thermosgd.isotropic import IsotropicConfig, IsotropicResult, simulate
from thermosgd.protocols import FixedELR, FixedLR, FixedSphere, Protocol, make_protocol
from thermosgd.reproduce import run_isotropic

__all__ = [
    "__version__",
    "theory",
    "Protocol",
    "FixedSphere",
    "FixedELR",
    "FixedLR",
    "make_protocol",
    "knn_entropy",
    "to_spherical",
    "sphere_entropy",
    "total_entropy",
    "IsotropicConfig",
    "IsotropicResult",
    "simulate",
    "isotropic_checks",
    "run_isotropic",
]
