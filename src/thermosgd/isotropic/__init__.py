"""The isotropic noise model (section 5, appendix E), batched over whole hyperparameter grids.

``IsotropicConfig`` holds one protocol's grid and schedule; :func:`simulate` runs it in a
compiled loop (``_kernel``) with per-point counter-free noise streams (``_rng``) and returns the
stationary table and traces.
"""

from thermosgd.isotropic.config import IsotropicConfig
from thermosgd.isotropic.simulate import IsotropicResult, grid_protocol, simulate, unit_vector

__all__ = ["IsotropicConfig", "IsotropicResult", "grid_protocol", "simulate", "unit_vector"]
