"""Moved to :mod:`thermosgd.monitor.huggingface`; this name keeps older imports working."""

from thermosgd.monitor.huggingface import *  # noqa: F401,F403
from thermosgd.monitor.huggingface import __all__  # noqa: F401
