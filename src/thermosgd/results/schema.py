"""One spelling of every column and file that thermosgd writes.

Every result directory holds a manifest ``thermosgd.json`` with its ``kind`` and the
``schema`` version it was written in; readers of older versions live in
:mod:`thermosgd.results.compat`.
"""

from __future__ import annotations

__all__ = ["MANIFEST", "METRIC_COLUMNS", "READABLE_SCHEMAS", "SCHEMA_VERSION"]

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
