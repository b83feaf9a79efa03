"""thermosgd: the thermodynamics of SGD on scale-invariant networks."""

__version__ = "0.1.0"
