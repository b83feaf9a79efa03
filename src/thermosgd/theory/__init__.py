"""Closed forms of the thermodynamic framework, as pure functions (NumPy and SciPy only).

Symbols follow the paper: eta (learning rate), eta_eff (effective learning rate), lambda (weight
decay), sigma^2 (per-direction gradient-noise variance, sigma^2 = Tr Sigma / (d-1)), d (number of
scale-invariant weights), T, p, V, U, S (temperature, pressure, volume, internal energy,
entropy). ``gas``: the ideal gas of each protocol; ``vmf``: the isotropic model's exact
statistics; ``discrete``: appendix G's finite-step correction; ``optimizers``: the same gas
under heavy-ball and Nesterov momentum and AdamW; ``modes``: how each optimizer's discrete
step weighs the full-batch gradient.
"""

from thermosgd.theory.discrete import *  # noqa: F401,F403
from thermosgd.theory.discrete import __all__ as _discrete
from thermosgd.theory.gas import *  # noqa: F401,F403
from thermosgd.theory.gas import __all__ as _gas
from thermosgd.theory.modes import *  # noqa: F401,F403
from thermosgd.theory.modes import __all__ as _modes
from thermosgd.theory.optimizers import *  # noqa: F401,F403
from thermosgd.theory.optimizers import __all__ as _optimizers
from thermosgd.theory.vmf import *  # noqa: F401,F403
from thermosgd.theory.vmf import __all__ as _vmf

__all__ = [*_gas, *_vmf, *_discrete, *_optimizers, *_modes]
