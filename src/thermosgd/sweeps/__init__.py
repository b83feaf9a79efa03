"""Sweeps: grids (``grid``), the sweep directory (``directory``), and two executors, local
(``local``) and Ray (``ray``)."""

from thermosgd.sweeps.directory import (
    collect,
    describe_status,
    gather,
    read_sweep_dir,
    run_dir,
    run_name,
    status,
)
from thermosgd.sweeps.grid import (
    PRESETS,
    Sweep,
    describe_presets,
    load_sweep,
    sweep_from_dict,
    sweep_from_options,
)
from thermosgd.sweeps.local import check_local, describe_results, plan, run_local

__all__ = ["PRESETS", "Sweep", "check_local", "collect", "describe_presets", "describe_results",
           "describe_status", "gather", "load_sweep", "plan", "read_sweep_dir", "run_dir",
           "run_local", "run_name", "status", "sweep_from_dict", "sweep_from_options"]
