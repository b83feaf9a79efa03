"""The isotropic model under plain SGD, heavy-ball momentum and AdamW: wall time and checks.

Every protocol an optimizer defines (AdamW: fixed LR only) is simulated on the same grid, the
optimizers of one protocol one after the other (SGD first, then momentum, then AdamW), so that
the time ratios against SGD come from the same minutes of a shared machine. Each optimizer's
results go to OUT/<optimizer>/ as `thermosgd reproduce isotropic` writes them; `thermosgd report
OUT` then shows the optimizers side by side.

Usage:
  python benchmarks/bench_isotropic_optimizers.py --out DIR [--scale paper|quick]
      [--momentum 0.9] [--dim 3] [--grid LO HI N] [--iterations K]
--grid and --iterations replace the scale's grid (rates and weight decays, fixed LR only) and
length: the higher-d run uses them.

  python benchmarks/bench_isotropic_optimizers.py --timing STEPS [--rounds 3]
times the fixed-LR paper grid (289 points) for STEPS steps per optimizer, alternating the
optimizers round by round, and prints the median wall and CPU seconds and their ratios to SGD
(CPU time: less disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from thermosgd.isotropic import simulate
from thermosgd.reproduce import KIND, SCALES, isotropic_configs, write_result
from thermosgd.results import io as _io
from thermosgd.theory import make_optimizer


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timing(steps: int, rounds: int, momentum: float, dim: int) -> dict:
    """Median wall and CPU seconds of the fixed-LR paper grid per optimizer, alternated."""
    optimizers = {"sgd": make_optimizer("sgd"),
                  "momentum": make_optimizer("momentum", momentum=momentum),
                  "nesterov": make_optimizer("nesterov", momentum=momentum),
                  "adamw": make_optimizer("adamw", momentum=momentum)}
    base = isotropic_configs("paper", dim=dim)[0]
    config = dataclasses.replace(base, iterations=steps, entropy_every=steps, queue_size=100,
                                 stationary_logs=100)
    for opt in optimizers.values():  # compile (or load) every kernel path first
        simulate(dataclasses.replace(config, iterations=5000, entropy_every=5000, optimizer=opt),
                 progress=False)
    wall = {k: [] for k in optimizers}
    cpu = {k: [] for k in optimizers}
    load = _load()
    for _ in range(rounds):
        for name, opt in optimizers.items():
            w0, c0 = time.perf_counter(), time.process_time()
            simulate(dataclasses.replace(config, optimizer=opt), progress=False)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    record = {"steps": steps, "rounds": rounds, "points": config.grid_size, "d": dim,
              "load_start": load, "load_end": _load()}
    for label, times in (("wall", wall), ("cpu", cpu)):
        med = {k: float(np.median(v)) for k, v in times.items()}
        record[f"{label}_seconds"] = {k: round(v, 2) for k, v in med.items()}
        record[f"{label}_ratio_to_sgd"] = {k: round(v / med["sgd"], 3) for k, v in med.items()}
    print(json.dumps(record, indent=1))
    return record


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--scale", choices=list(SCALES), default="paper")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--grid", type=float, nargs=3, default=None, metavar=("LO", "HI", "N"))
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--equivalent-rates", action="store_true",
                        help="momentum only, at rates (1 - beta) x the grid: SGD-equivalent "
                             "rates eta' = eta / (1 - beta) on the grid itself, so that its "
                             "states have SGD's temperatures")
    parser.add_argument("--protocols", nargs="+", default=None)
    parser.add_argument("--timing", type=int, default=None, metavar="STEPS")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.timing:
        return timing(args.timing, args.rounds, args.momentum, args.dim)
    if not args.out:
        parser.error("give --out (or --timing STEPS)")
    optimizers = {"sgd": make_optimizer("sgd"),
                  "momentum": make_optimizer("momentum", momentum=args.momentum),
                  "adamw": make_optimizer("adamw", momentum=args.momentum)}
    overrides = {"dim": args.dim}
    if args.iterations:
        overrides["iterations"] = args.iterations
    plans = {}
    for name, opt in optimizers.items():
        configs = isotropic_configs(args.scale, optimizer=opt, **overrides)
        if args.grid:
            lo, hi, n = args.grid
            grid = tuple(np.geomspace(lo, hi, int(n)))
            configs = [dataclasses.replace(c, learning_rates=grid, weight_decays=grid)
                       for c in configs if c.protocol == "fixed-lr"]
        if args.equivalent_rates and name == "momentum":
            configs = [dataclasses.replace(c, learning_rates=tuple(
                (1.0 - args.momentum) * np.asarray(c.learning_rates))) for c in configs]
        if args.protocols:
            configs = [c for c in configs if c.protocol in args.protocols]
        plans[name] = {c.protocol: c for c in configs}
    if args.equivalent_rates:
        plans = {"momentum": plans["momentum"]}
    out = Path(args.out)
    record = {"argv": vars(args), "load_start": _load(), "wall_seconds": {}}
    for name, configs in plans.items():
        folder = out / name
        _io.check_output_dir(folder, KIND)
        _io.claim_output_dir(folder, KIND, {"scale": args.scale, "protocols": list(configs)})
    protocols = list(next(iter(plans.values())))
    for protocol in protocols:
        for name, configs in plans.items():
            if protocol not in configs:
                continue
            start = time.perf_counter()
            result = simulate(configs[protocol], progress=False)
            seconds = time.perf_counter() - start
            write_result(out / name, result)
            record["wall_seconds"].setdefault(protocol, {})[name] = round(seconds, 2)
            print(f"{protocol} {name}: {seconds:.1f} s (load {_load()})", flush=True)
    record["load_end"] = _load()
    for protocol, times in record["wall_seconds"].items():
        record.setdefault("ratio_to_sgd", {})[protocol] = {
            k: round(v / times["sgd"], 3) for k, v in times.items()} if "sgd" in times else {}
    _io.write_json(out / "bench.json", record | _io.provenance())
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
