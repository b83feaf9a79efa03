"""How the result directories under tests/data/v0_1 were made (thermosgd 0.1, schema 0.1).

Kept for the record: it ran once against thermosgd 0.1 (git 16328eb) and cannot run against
later versions, whose API differs. The tests read its outputs to check that results written by
0.1 still analyse, plot, report and resume.

    python tests/data/make_v0_1.py tests/data/v0_1
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from thermosgd import sweep
from thermosgd.isotropic import IsotropicConfig
from thermosgd.nn import trainer
from thermosgd.nn.data import load_dataset
from thermosgd.reproduce import run_isotropic

torch.set_num_threads(1)
out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
digits = load_dataset("digits")

# 1. a finished 3 x 3 fixed-LR network sweep (ConvNet k = 2 on digits, 200 steps)
spec = sweep.sweep_from_dict({
    "protocol": "fixed-lr", "learning_rates": [0.1, 0.2, 0.4],
    "weight_decays": [0.02, 0.04, 0.08], "width": 2, "iterations": 200, "queue_size": 4,
    "train": {"log_every": 50, "log_linear_until": 200, "log_points": 0,
              "queue_every": 10, "stationary_logs": 2}}, default_name="tiny")
sweep.run_local(spec, out / "sweep", dataset=digits, device="cpu", progress=False)

# 2. an isotropic output: three protocols on 3 x 3 grids, short
grid = (0.01, 0.03, 0.1)
short = dict(iterations=20_000, stationary_logs=200, queue_size=100, queue_every=50,
             entropy_every=10_000, entropy_average=2, log_every=50)
configs = [IsotropicConfig(protocol="fixed-lr", learning_rates=grid, weight_decays=grid, **short),
           IsotropicConfig(protocol="fixed-elr", learning_rates=grid, weight_decays=grid, **short),
           IsotropicConfig(protocol="fixed-sphere", learning_rates=grid, radii=(0.5, 1.0, 2.0),
                           **short)]
run_isotropic(out / "isotropic", "custom", configs=configs, progress=False, log=lambda *_: None)
for derived in ("report.md", "report.html", *(f"{c.protocol}/figure.png" for c in configs)):
    (out / "isotropic" / derived).unlink()

# 3. one fixed-sphere run, uninterrupted: the pinned trajectory
config = trainer.TrainConfig(protocol="fixed-sphere", learning_rate=0.01, radius=2.0, width=2,
                             iterations=600, log_every=100, log_linear_until=400, log_points=2,
                             queue_size=6, queue_every=25, stationary_logs=3, device="cpu")
trainer.train(config, out / "run_whole", dataset=digits, progress=False)

# 4. the same run stopped after its third log point, its checkpoint taken there
class _Stop(Exception):
    pass


run = trainer._Run(config, digits, "cpu", out / "run_killed")
measure_once = run._measure
logs = []


def measure_then_maybe_stop():
    if len(logs) == 3:
        raise _Stop
    logs.append(1)
    return measure_once()


run._measure = measure_then_maybe_stop
try:
    run.execute(progress=False, checkpoint_every=0)
except _Stop:
    pass
assert not (out / "run_killed" / "summary.json").exists()

# 5. a grid trained by `thermosgd train --lr 0.1 0.2 --wd 0.04` (kind "train-grid")
from thermosgd.cli import main  # noqa: E402

main(["train", "--protocol", "fixed-lr", "--lr", "0.1", "0.2", "--wd", "0.04", "--width", "2",
      "--iterations", "100", "--log-every", "50", "--log-linear-until", "100",
      "--log-points", "0", "--queue-size", "4", "--queue-every", "10", "--stationary-logs", "2",
      "--device", "cpu", "--no-progress", "--out", str(out / "train_grid")])

for lock in out.rglob("locks"):
    shutil.rmtree(lock)
print(sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()))
print(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()), "bytes")
