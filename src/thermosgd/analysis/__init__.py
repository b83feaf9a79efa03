"""Analysis of stationary tables: the tables and the one seed-averaging rule (``tables``), the
entropy fits and Table 4 (``fits``), the numbers of V1-V4 (``checks``), the one tolerance system
(``rules``) and the readers of result directories (``sources``; a monitored run's in
``monitor``, registered in ``sources.READERS`` on import)."""

from thermosgd.analysis import monitor as _monitor  # noqa: F401  (its reader into READERS)
from thermosgd.analysis.checks import isotropic_checks, stationary_checks
from thermosgd.analysis.rules import Check, Rule, judge
from thermosgd.analysis.sources import Analysis, analyse_path

__all__ = ["Analysis", "Check", "Rule", "analyse_path", "isotropic_checks", "judge",
           "stationary_checks"]
