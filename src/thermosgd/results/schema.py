"""One spelling of every column and file that thermosgd writes.

Every result directory holds a manifest ``thermosgd.json`` with its ``kind`` and the
``schema`` version it was written in; readers of older versions live in
:mod:`thermosgd.results.compat`.

A *stationary table* has one row per grid point and seed, whichever engine produced it (the
isotropic simulator, :func:`thermosgd.isotropic.simulate`, or a network sweep,
:func:`thermosgd.sweeps.gather`). :data:`STATIONARY_COLUMNS` names its columns with their unit
and paper symbol; the analysis chooses its checks by the columns a table carries, so a new
result source plugs in by writing these columns.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MANIFEST", "METRIC_COLUMNS", "MONITOR_COLUMNS", "READABLE_SCHEMAS",
           "SCHEMA_VERSION", "STATIONARY_COLUMNS", "STATUSES", "Column", "grid_axes"]

SCHEMA_VERSION = "0.2"
READABLE_SCHEMAS = ("0.1", "0.2")  # 0.1: thermosgd 0.1, read through results.compat
MANIFEST = "thermosgd.json"  # marks a directory as written by thermosgd

# One row per log point of a network run (metrics.parquet), in this order; runs also carry the
# extras written by the engine (trace_cov_se, batch_loss, the corrected lambda_eff predictions).
METRIC_COLUMNS = (
    "iteration", "train_loss", "train_acc", "test_loss", "test_acc", "radius", "trace_cov",
    "sigma2", "full_grad_norm2", "stoch_grad_norm2", "lambda_eff", "entropy_sphere", "entropy",
    "temperature", "pressure", "volume", "radius_theory", "radius_theory_corrected",
)

# One row per scale-invariant group (and the union "all", and "other": every trainable parameter
# that is not scale-invariant) and log step of a monitored run (thermosgd.Monitor), in this order.
MONITOR_COLUMNS = (
    "step", "group", "layer", "scale_invariant", "d", "norm", "volume", "angular_update",
    "radial_share", "grad_cosine", "learning_rate", "weight_decay", "effective_learning_rate",
    "trace_cov", "sigma2", "stoch_grad_norm2", "full_grad_norm2", "noise_steps",
    "preconditioner", "temperature", "pressure", "compressibility", "radius_theory",
    "radius_theory_corrected", "angular_update_theory", "angular_update_theory_corrected",
    "distance", "relaxation_steps", "regime", "entropy_sphere", "entropy",
)


@dataclass(frozen=True)
class Column:
    """One column of a stationary table."""

    name: str
    symbol: str  # the paper's symbol
    unit: str  # "" for dimensionless numbers, "nat" for entropies
    meaning: str


STATUSES = ("finished", "diverged", "running", "interrupted", "pending")  # "status" column

STATIONARY_COLUMNS = (
    Column("protocol", "", "", "fixed-lr, fixed-elr or fixed-sphere"),
    Column("learning_rate", "η, η_eff", "",
           "learning rate η (fixed LR), effective learning rate η_eff (fixed ELR, fixed sphere)"),
    Column("weight_decay", "λ", "", "weight decay (fixed LR, fixed ELR; empty on the sphere)"),
    Column("sphere_radius", "r", "", "radius of the fixed sphere (empty for fixed LR/ELR)"),
    Column("seed", "", "", "noise and initialisation seed"),
    Column("status", "", "", "finished, diverged (or, for a sweep's runs, running, "
                             "interrupted, pending)"),
    Column("d", "d", "", "dimension of the scale-invariant weights"),
    Column("U", "U", "loss", "stationary mean loss E[L] (networks: the train loss)"),
    Column("radius", "r*", "", "measured stationary ||w||"),
    Column("entropy_sphere", "S_sphere", "nat", "entropy of the direction w/||w|| (eq. 26)"),
    Column("entropy", "S", "nat", "total entropy S_sphere + (d-1) log r (eq. 28)"),
    Column("temperature", "T", "", "T = η σ²-type temperature of the protocol (eq. 11, 18)"),
    Column("pressure", "p", "", "pressure: λ (fixed LR/ELR), λ_eff on the sphere (eq. 83)"),
    Column("volume", "V", "", "V = r*²/2 (eq. 9)"),
    Column("lambda_eff", "λ_eff", "", "measured effective weight decay on the sphere (eq. 83)"),
    Column("radius_theory", "r*", "", "SDE stationary radius (eq. 12, 19)"),
    Column("radius_theory_corrected", "r*", "", "appendix-G corrected radius (eq. 119)"),
    Column("lambda_eff_theory", "λ_eff", "", "T (d-1) / (2V) on the sphere (eq. 84)"),
    Column("lambda_eff_theory_corrected", "λ_eff", "", "appendix-G corrected λ_eff"),
    Column("U_theory", "U", "loss", "exact VMF mean loss (eq. 103; isotropic model)"),
    Column("entropy_sphere_theory", "S_sphere", "nat", "exact VMF sphere entropy (eq. 103)"),
    Column("entropy_theory", "S", "nat", "closed-form total entropy (eq. 28 with eq. 103)"),
    Column("sigma", "σ", "", "isotropic noise scale (isotropic model)"),
    Column("sigma2", "σ²", "", "measured gradient-noise scale Tr Σ / (d-1) (networks)"),
    Column("trace_cov", "Tr Σ", "", "trace of the gradient-noise covariance (networks)"),
)


def grid_axes(protocol: str) -> tuple[str, str]:
    """The two hyperparameter columns of a protocol's grid: the rate and λ, or the rate and r."""
    if protocol == "fixed-sphere":
        return "learning_rate", "sphere_radius"
    return "learning_rate", "weight_decay"
