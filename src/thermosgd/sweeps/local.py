"""The local executor: a sweep's configurations trained on this machine, group after group.

Running a sweep again skips finished and diverged runs and resumes interrupted ones from their
checkpoints; every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from filelock import Timeout
from tqdm.auto import tqdm

from thermosgd.sweeps.directory import (
    _lock,
    claim_sweep_dir,
    open_sweep_dir,
    run_name,
    run_state,
)
from thermosgd.sweeps.grid import Sweep

__all__ = ["default_batch", "plan", "run_group", "run_local"]

_LOCK_WAIT = 2.0  # seconds a worker waits for a configuration's lock (status holds it briefly)


def run_group(configs, outs, *, sweep_dir: Path, dataset=None, max_batch: int | None = None,
              progress: bool = True, checkpoint_every: float = 600.0,
              mechanism: str = "auto") -> dict[str, dict]:
    """Train the configurations whose locks this worker gets; returns {run name: {"status",
    "resumed_from"}} (status "running" for those another worker holds). Finished runs are read
    back, interrupted ones resume from their checkpoints (``thermosgd.nn.training``)."""
    from thermosgd.nn.training import train, train_batched
    from thermosgd.results.rundir import checkpoint_iteration

    held, mine = [], []
    results = {}
    try:
        for config, out in zip(configs, outs):
            lock = _lock(sweep_dir, out.name)
            try:
                lock.acquire(timeout=_LOCK_WAIT)
            except Timeout:
                results[out.name] = {"status": "running", "resumed_from": None}
                continue
            held.append(lock)
            mine.append((config, out))
        if len(mine) == 1:
            config, out = mine[0]
            starts = [checkpoint_iteration(out)]
            done = [train(config, out, dataset=dataset, progress=progress,
                          checkpoint_every=checkpoint_every)]
        elif mine:
            starts = [checkpoint_iteration(out) for _, out in mine]
            done = train_batched([c for c, _ in mine], [o for _, o in mine], dataset=dataset,
                                 progress=progress, checkpoint_every=checkpoint_every,
                                 max_batch=max_batch, mechanism=mechanism)
        if mine:
            for (_, out), start, result in zip(mine, starts, done):
                results[out.name] = {"status": result.summary["status"], "resumed_from": start}
    finally:
        for lock in held:
            lock.release()
    return results


def plan(sweep: Sweep, out: Path, *, data: str | None, scale: float, device: str,
         max_batch: int | None) -> list[list[int]]:
    """Check everything, then the groups of configuration indices still to train."""
    configs = sweep.configs(data=data, scale=scale, device=device)
    open_sweep_dir(out, sweep, scale)
    from thermosgd.nn.training import prepare

    for config in configs:
        prepare(config, Path(out) / "runs" / run_name(config))
    todo = [i for i, c in enumerate(configs)
            if run_state(out, run_name(c)) not in ("finished", "diverged")]
    from thermosgd.nn.config import resolve_device

    on_gpu = resolve_device(device).type != "cpu"
    size = max_batch or default_batch(configs[0], on_gpu=on_gpu)
    return [todo[k:k + size] for k in range(0, len(todo), size)]


def default_batch(config, *, on_gpu: bool) -> int:
    """CPU: one configuration at a time (batching gains nothing there, benchmarks/RESULTS.md).
    GPU: as many as fit 8 GiB of float32 entropy queues (N d 4 bytes each)."""
    if not on_gpu:
        return 1
    d_estimate = {"convnet": 24408 * (config.width / 8) ** 2,
                  "resnet18": 43692 * (config.width / 4) ** 2}[config.model]
    return max(1, int(8 * 2**30 // (config.queue_size * d_estimate * 4)))


def run_local(sweep: Sweep, out: str | Path, *, data: str | None = None, dataset=None,
              scale: float = 1.0, device: str = "auto", max_batch: int | None = None,
              progress: bool = True, checkpoint_every: float = 600.0,
              mechanism: str = "auto") -> dict[str, dict]:
    """Train every configuration of ``sweep`` not yet done, group after group, on this machine
    (``dataset``: already loaded data, else read from ``data``). Returns {run name: result}."""
    out = Path(out)
    groups = plan(sweep, out, data=data, scale=scale, device=device, max_batch=max_batch)
    configs = sweep.configs(data=data, scale=scale, device=device)
    from thermosgd.nn.config import load_data, resolve_device

    if dataset is None and groups:
        dataset = load_data(configs[0], resolve_device(device))
    claim_sweep_dir(out, sweep, scale)
    results = {}
    with tqdm(total=sum(map(len, groups)), unit="run", desc=sweep.name, disable=not progress,
              dynamic_ncols=True) as bar:  # the sweep's bar; each run shows its own below
        for group in groups:
            results |= run_group([configs[i] for i in group],
                                 [out / "runs" / run_name(configs[i]) for i in group],
                                 sweep_dir=out, dataset=dataset, max_batch=max_batch,
                                 progress=progress, checkpoint_every=checkpoint_every,
                                 mechanism=mechanism)
            bar.update(len(group))
    return results

