"""Analysis of stationary tables: the isotropic model's V1-V4 (``isotropic``) and a network
sweep's V1, Table 4 and appendix-H flags (``network``)."""

from thermosgd.analysis.isotropic import isotropic_checks

__all__ = ["isotropic_checks"]
