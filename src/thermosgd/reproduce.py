"""Reproduce the paper's isotropic-noise results (Figures 1, 3, 4; section 5, appendix E).

``run_isotropic(out_dir, scale)`` simulates the three protocols over their grids and writes

    DIR/<protocol>/stationary.csv   one row per grid point (see isotropic.simulate)
    DIR/<protocol>/config.json      the config, package version and git revision
    DIR/<protocol>/traces.npz       loss/radius logs (thinned) and entropy evaluations
    DIR/<protocol>/figure.png       panels a-e of the paper's figure for that protocol
    DIR/checks.json                 the V1-V4 numbers (analysis.checks.stationary_checks)
    DIR/report.html, report.md      the checks and figures (report.build.report)

A protocol whose outputs exist with the same config is not simulated again, so a killed run
resumes at the protocol it was in.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from thermosgd.isotropic import IsotropicConfig, IsotropicResult, simulate
from thermosgd.results import io as _io
from thermosgd.results.lock import hold

__all__ = ["SCALES", "isotropic_configs", "run_isotropic", "write_result"]

KIND = "isotropic"
_GRID = tuple(np.geomspace(1e-3, 1e-1, 17))
_RADII = tuple(np.geomspace(0.1, 10.0, 17))

# The paper's setup (appendix E), and a quick one (~1 minute on 2 cores) with the same grids.
SCALES: dict[str, dict] = {
    "paper": dict(iterations=2_000_000, stationary_logs=5000, entropy_every=40_000,
                  entropy_average=10),
    # sized so that every judged check passes in about half a minute on 2 cores (at 3e5 steps
    # fixed ELR's V2 fell just short, 0.896 against 0.9: U and S were still too noisy)
    "quick": dict(iterations=600_000, stationary_logs=4000, entropy_every=40_000,
                  entropy_average=8),
}


def isotropic_configs(scale: str = "paper", **overrides) -> list[IsotropicConfig]:
    """The three protocols' configs at ``scale`` ("paper" or "quick"), with optional overrides
    (e.g. ``optimizer``). An optimizer that defines only some protocols (AdamW: fixed LR) gets
    those only."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    common = SCALES[scale] | overrides
    configs = [
        IsotropicConfig(protocol="fixed-lr", learning_rates=_GRID, weight_decays=_GRID, **common)]
    optimizer = configs[0].optimizer
    if optimizer.adaptive:  # AdamW's step does not scale with |w|^2 (theory.optimizers)
        return configs
    return configs + [
        IsotropicConfig(protocol="fixed-elr", learning_rates=_GRID, weight_decays=_GRID, **common),
        IsotropicConfig(protocol="fixed-sphere", learning_rates=_GRID, radii=_RADII, **common),
    ]


def write_result(out_dir: Path, result: IsotropicResult) -> None:
    """Write one protocol's table, config and traces under ``out_dir/<protocol>/``."""
    folder = Path(out_dir) / result.config.protocol
    _io.write_csv(folder / "stationary.csv", result.table)
    step = max(1, result.log_iterations.size // 2000)  # thin the logs: <= 2000 points a run

    def save(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, log_iterations=result.log_iterations[::step], loss=result.loss[:, ::step],
                radius=result.radius[:, ::step], entropy_iterations=result.entropy_iterations,
                entropy_sphere=result.entropy_sphere, entropy=result.entropy, mu=result.mu,
                **({} if result.lambda_eff is None else {"lambda_eff": result.lambda_eff[:, ::step]}),
                **{name: logs[:, ::step] for name, logs in (
                    ("angular_update", result.angular_update),
                    ("preconditioner", result.preconditioner)) if logs is not None},
            )

    _io.atomic_write(folder / "traces.npz", save)
    # the config goes last: its presence marks the protocol as complete (resume)
    _io.write_json(folder / "config.json", {"config": asdict(result.config)} | _io.provenance())


def _completed(out_dir: Path, config: IsotropicConfig) -> pd.DataFrame | None:
    """The table of a protocol already simulated with ``config`` (None: simulate it). Raises
    ValueError naming a damaged file: it is not overwritten without the user's say."""
    from thermosgd.analysis.sources import MissingProtocol, read_protocol_folder

    try:
        table, saved = read_protocol_folder(Path(out_dir) / config.protocol)
    except MissingProtocol:
        return None
    same = saved == json.loads(json.dumps(asdict(config)))
    return table if same else None


def run_isotropic(out_dir, scale: str = "quick", *, configs=None, progress: bool = True,
                  figures: bool = True, log=print, wait: bool = False) -> dict:
    """Simulate, check, plot and report the isotropic model; returns the checks dict.

    The output belongs to this call while it runs (an OS lock): another process writing it
    makes this call raise :class:`~thermosgd.results.lock.Busy` naming it, or, with ``wait``,
    queue behind it."""
    out_dir = Path(out_dir)
    configs = isotropic_configs(scale) if configs is None else list(configs)
    _io.check_output_dir(out_dir, KIND)
    with hold([out_dir], wait=wait):
        _io.check_output_dir(out_dir, KIND)  # again: another owner may have written it
        return _run_owned(out_dir, scale, configs, progress=progress, figures=figures, log=log)


def _run_owned(out_dir: Path, scale: str, configs, *, progress, figures, log) -> dict:
    _io.claim_output_dir(out_dir, KIND, {"scale": scale, "protocols": [c.protocol for c in configs]})
    checks = {"config": {"scale": scale, **{c.protocol: asdict(c) for c in configs}},
              **_io.provenance(), "protocols": {}, "wall_seconds": {}}
    for config in configs:
        table = _completed(out_dir, config)
        if table is None:
            start = time.perf_counter()
            result = simulate(config, progress=progress)
            checks["wall_seconds"][config.protocol] = round(time.perf_counter() - start, 2)
            write_result(out_dir, result)
            table = result.table
            log(f"{config.protocol}: {config.grid_size} points x {config.iterations} steps in "
                f"{checks['wall_seconds'][config.protocol]:.1f} s")
        else:
            log(f"{config.protocol}: found complete results in {out_dir / config.protocol}, kept")
        checks["protocols"][config.protocol] = _checks(table)
    _io.write_json(out_dir / "checks.json", checks)
    if figures:
        from thermosgd.report.build import report

        report(out_dir)  # draws each protocol's figure.png, writes report.html and report.md
    return checks


def _checks(table: pd.DataFrame) -> dict:
    """The protocol's checks; for a grid over beta, one set per optimizer, by its label."""
    from thermosgd.analysis.sources import grid_checks
    from thermosgd.analysis.tables import by_optimizer

    parts = by_optimizer(table)
    if len(parts) == 1:
        return grid_checks(table)
    return {optimizer.label: grid_checks(part) for optimizer, part in parts}
