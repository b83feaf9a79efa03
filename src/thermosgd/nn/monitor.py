"""Moved to :mod:`thermosgd.monitor.api`; this name keeps older imports working."""

from thermosgd.monitor.api import *  # noqa: F401,F403
from thermosgd.monitor.api import __all__  # noqa: F401
