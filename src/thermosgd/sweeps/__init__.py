"""Sweeps: grids (``grid``), the sweep directory (``directory``), and two executors, local
(``local``) and Ray (``ray``)."""

from thermosgd.sweeps.directory import collect, gather, read_sweep_dir, run_name, status
from thermosgd.sweeps.grid import PRESETS, Sweep, load_sweep, sweep_from_dict
from thermosgd.sweeps.local import plan, run_local

__all__ = ["PRESETS", "Sweep", "collect", "gather", "load_sweep", "plan", "read_sweep_dir", "run_local",
           "run_name", "status", "sweep_from_dict"]
