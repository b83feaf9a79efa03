"""Moved to :mod:`thermosgd.monitor.lightning`; this name keeps older imports working."""

from thermosgd.monitor.lightning import *  # noqa: F401,F403
from thermosgd.monitor.lightning import __all__  # noqa: F401
