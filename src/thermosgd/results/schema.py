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

__all__ = ["ARCHITECTURES", "CHART_COLUMNS", "CHARTS", "LOCK_FILE", "MANIFEST", "MEASUREMENTS",
           "METRIC_COLUMNS", "MONITOR_COLUMNS", "OPTIMIZER_COLUMNS", "READABLE_SCHEMAS",
           "SCHEMA_VERSION", "STATIONARY_COLUMNS", "STATUSES", "Column", "architecture_of",
           "grid_axes"]

SCHEMA_VERSION = "0.3"
# 0.1: thermosgd 0.1, read through results.compat; 0.3 adds the monitor's "level" column (its
# rows of schema 0.2 read with the level inferred, results.monitordir)
READABLE_SCHEMAS = ("0.1", "0.2", "0.3")
MANIFEST = "thermosgd.json"  # marks a directory as written by thermosgd
LOCK_FILE = ".thermosgd.lock"  # held by the process writing a directory (results.lock)

# The network a run trained, recorded in its config.json ("architecture"). ResNet-18 v2 is the
# paper's (BatchNorm, then the 1x1 conv, in the projection shortcut: 20 BatchNorm layers); v1,
# thermosgd 0.2 and earlier, had no BatchNorm there. Runs written before the record read as v1.
ARCHITECTURES = {"convnet": "convnet-v1", "resnet18": "resnet18-v2"}

# The spherical charts of the entropy estimate (eq. 26-27): "aligned" (thermosgd's default: the
# sample's mean direction reflected to the chart's flattest point) and "raw" (the paper's own
# chart, as its code computes it). Columns per chart, sphere entropy first; runs written before
# the raw chart was recorded have no raw columns.
CHARTS = ("aligned", "raw")
CHART_COLUMNS = {"aligned": ("entropy_sphere", "entropy"),
                 "raw": ("entropy_sphere_raw", "entropy_raw")}

# How a log point measures the train loss, ||grad L||^2 and Tr Sigma (nn.measure): "thermosgd"
# (one pass of disjoint training batches, unbiased) or "paper" (the paper code's conventions).
MEASUREMENTS = ("thermosgd", "paper")

# One row per log point of a network run (metrics.parquet), in this order; runs also carry the
# extras written by the engine (trace_cov_se, batch_loss, the corrected lambda_eff predictions).
METRIC_COLUMNS = (
    "iteration", "train_loss", "train_acc", "test_loss", "test_acc", "radius", "trace_cov",
    "sigma2", "full_grad_norm2", "stoch_grad_norm2", "lambda_eff", "entropy_sphere", "entropy",
    "entropy_sphere_raw", "entropy_raw", "temperature", "pressure", "volume", "radius_theory",
    "radius_theory_corrected",
)

# One row per log step of a monitored run (thermosgd.Monitor) and per scale-invariant group, layer,
# weight matrix that is not scale-invariant, "other" (the remaining trained parameters) and "all"
# (the union of the scale-invariant groups); "level" says which (thermosgd.monitor.columns).
MONITOR_COLUMNS = (
    "step", "group", "layer", "level", "scale_invariant", "d", "norm", "volume", "angular_update",
    "radial_share", "grad_cosine", "radial_force", "learning_rate", "weight_decay", "effective_learning_rate",
    "trace_cov", "sigma2", "stoch_grad_norm2", "full_grad_norm2", "noise_steps",
    "preconditioner", "temperature", "pressure", "compressibility", "radius_theory",
    "radius_theory_corrected", "angular_update_theory", "angular_update_theory_corrected",
    "distance", "relaxation_steps", "regime", "entropy_sphere", "entropy",
)


def architecture_of(record: dict) -> str:
    """The network of a run from its config.json or summary.json record: the recorded
    ``architecture``, or for a run written before it was recorded the first version of its
    model (ResNet-18 without BatchNorm in the shortcut)."""
    if record.get("architecture"):
        return str(record["architecture"])
    model = (record.get("config") or {}).get("model", "convnet")
    return f"{model}-v1"


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
    Column("entropy_sphere_raw", "S_sphere", "nat",
           "entropy of the direction in the paper's raw spherical chart (eq. 26-27; networks)"),
    Column("entropy_raw", "S", "nat", "total entropy from the raw chart (eq. 28; networks)"),
    Column("architecture", "", "", "the network a run trained (networks; see ARCHITECTURES)"),
    Column("chart", "", "", "entropy chart(s) recorded: aligned, raw or both (networks)"),
    Column("measurement", "", "", "log-point conventions: thermosgd or paper (networks)"),
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
    Column("optimizer", "", "", "sgd, momentum, nesterov or adamw (torch.optim semantics); "
                                "absent: sgd"),
    Column("momentum", "β, β₁", "", "heavy-ball / Nesterov momentum, or AdamW's β₁ (0 for sgd)"),
    Column("beta2", "β₂", "", "AdamW's second-moment decay (empty otherwise)"),
    Column("eps", "ε", "", "AdamW's eps added to sqrt(v̂) (empty otherwise)"),
    Column("angular_update", "Δθ", "rad", "rms angle per step, 2 asin(|û_(t+1) − û_t|/2)"),
    Column("angular_update_theory", "Δθ", "rad",
           "equilibrium angle per step (SDE; sqrt(2ηλ) for SGD at fixed LR)"),
    Column("preconditioner", "c", "", "AdamW: measured mean sqrt(v̂) + eps over the weights"),
    Column("preconditioner_theory", "c", "", "AdamW: sqrt(Tr Σ / d) / r* + eps"),
    Column("compressibility", "Z", "", "pV / (RT) of the measured state (AdamW: p = λ c)"),
)
# The optimizer's record in a stationary table (theory.Optimizer.to_dict, name -> "optimizer")
OPTIMIZER_COLUMNS = ("optimizer", "momentum", "beta2", "eps")


def grid_axes(protocol: str) -> tuple[str, str]:
    """The two hyperparameter columns of a protocol's grid: the rate and λ, or the rate and r."""
    if protocol == "fixed-sphere":
        return "learning_rate", "sphere_radius"
    return "learning_rate", "weight_decay"
