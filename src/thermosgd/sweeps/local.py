"""The local executor: a sweep's configurations trained on this machine, group after group.

Running a sweep again skips finished and diverged runs and resumes interrupted ones from their
checkpoints; every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from thermosgd.results import io as _io
from thermosgd.results.lock import Busy

from thermosgd.sweeps.directory import (
    _lock,
    claim_sweep_dir,
    clear_failure,
    open_sweep_dir,
    record_failures,
    run_dir,
    run_name,
    run_problem,
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
            except Busy:
                results[out.name] = {"status": "running", "resumed_from": None}
                continue
            held.append(lock)
            mine.append((config, out))
            clear_failure(sweep_dir, out.name)
        try:
            if len(mine) == 1:
                config, out = mine[0]
                starts = [checkpoint_iteration(out)]
                done = [train(config, out, dataset=dataset, progress=progress,
                              checkpoint_every=checkpoint_every)]
            elif mine:
                starts = [checkpoint_iteration(out) for _, out in mine]
                done = train_batched([c for c, _ in mine], [o for _, o in mine],
                                     dataset=dataset, progress=progress,
                                     checkpoint_every=checkpoint_every, max_batch=max_batch,
                                     mechanism=mechanism)
        except Busy as err:  # a `thermosgd train` of its own writes into the run directory
            return results | {o.name: {"status": "running", "error": str(err)} for _, o in mine}
        except ValueError as err:  # a damaged file found on loading it: named, others go on
            return results | {o.name: {"status": "failed", "error": str(err)} for _, o in mine}
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
    if not (Path(out) / _io.MANIFEST).is_file():  # a sweep begun at its scale resumes at it
        sweep.check_scale(scale)
    configs = sweep.configs(data=data, scale=scale, device=device)
    open_sweep_dir(out, sweep, scale)
    from thermosgd.nn.training import prepare

    states = [run_state(out, run_name(c)) for c in configs]
    for config, state in zip(configs, states):
        if state != "damaged":  # a damaged run is left alone and named; the others go on
            prepare(config, run_dir(out, run_name(config)))
    todo = [i for i, s in enumerate(states) if s not in ("finished", "diverged", "damaged")]
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
              mechanism: str = "auto", workers: int | None = None) -> dict[str, dict]:
    """Train every configuration of ``sweep`` not yet done on this machine (``dataset``:
    already loaded data, else read from ``data``). Returns {run name: result}.

    On a CPU the groups run in ``workers`` processes at once (default: one per usable core),
    each with one torch thread: small networks use two one-thread processes far better than one
    two-thread process, and a one-thread run's trajectory does not depend on the machine's core
    count. ``workers=1``, or a GPU, trains group after group in this process."""
    out = Path(out)
    groups = plan(sweep, out, data=data, scale=scale, device=device, max_batch=max_batch)
    configs = sweep.configs(data=data, scale=scale, device=device)
    from thermosgd.nn.config import resolve_device
    from thermosgd.nn.data import load_data

    workers = _worker_count(workers, resolve_device(device).type, len(groups))
    if dataset is None and groups and workers == 1:
        dataset = load_data(configs[0], resolve_device(device))
    claim_sweep_dir(out, sweep, scale)
    jobs = [([configs[i] for i in group], [run_dir(out, run_name(configs[i])) for i in group])
            for group in groups]
    options = {"max_batch": max_batch, "checkpoint_every": checkpoint_every,
               "mechanism": mechanism}
    results = {name: {"status": "damaged", "error": run_problem(out, name)}
               for name in map(run_name, configs)
               if run_state(out, name) == "damaged"}  # left alone, named in the summary
    with tqdm(total=sum(map(len, groups)), unit="run", desc=sweep.name, disable=not progress,
              dynamic_ncols=True) as bar:  # the sweep's bar; a single process adds each run's
        if workers == 1:
            for group_configs, outs in jobs:
                results |= run_group(group_configs, outs, sweep_dir=out, dataset=dataset,
                                     progress=progress, **options)
                bar.update(len(outs))
            record_failures(out, results)
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: a forked child inherits the parent's OpenMP state, which hangs
        with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {pool.submit(_group_task, [c.to_dict() for c in group_configs],
                                   [str(o) for o in outs], str(out), options): outs
                       for group_configs, outs in jobs}
            for future in as_completed(pending):
                try:
                    results |= future.result()
                except Exception as err:  # a worker that died: its runs resume next time
                    first = (str(err).splitlines() or [type(err).__name__])[0]
                    results |= {o.name: {"status": "failed", "error": first}
                                for o in pending[future]}
                bar.update(len(pending[future]))
    record_failures(out, results)
    return results


def _worker_count(workers: int | None, device_type: str, n_groups: int) -> int:
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if device_type != "cpu" or n_groups <= 1:
        return 1
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            workers = os.cpu_count() or 1
    return max(1, min(workers, n_groups))


def _one_thread() -> None:
    """A worker process's start: one torch thread (intra- and inter-op)."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


_DATA_CACHE: dict = {}  # a worker process loads each dataset once


def _group_task(config_dicts, outs, sweep_dir, options) -> dict[str, dict]:
    """One group of configurations in a worker process (see :func:`run_local`)."""
    from thermosgd.nn.config import TrainConfig, resolve_device
    from thermosgd.nn.data import load_data

    configs = [TrainConfig(**c) for c in config_dicts]
    first = configs[0]
    key = (first.dataset, first.data, first.samples_per_class, first.image_size,
           first.label_noise)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_data(first, resolve_device(first.device))
    return run_group(configs, [Path(o) for o in outs], sweep_dir=Path(sweep_dir),
                     dataset=_DATA_CACHE[key], progress=False, **options)


def check_local(sweep: Sweep, out: str | Path, *, data: str | None, scale: float = 1.0,
                device: str = "auto", max_batch: int | None = None):
    """Everything :func:`run_local` could refuse, checked before anything is written; returns
    the loaded dataset (a missing or bad archive fails here). Raises ValueError."""
    from thermosgd.nn.config import resolve_device
    from thermosgd.nn.data import load_data

    plan(sweep, Path(out), data=data, scale=scale, device=device, max_batch=max_batch)
    configs = sweep.configs(data=data, scale=scale, device=device)
    return load_data(configs[0], resolve_device(device))


def failed_runs(results: dict) -> list[str]:
    """The runs whose training raised (a run's own error, or its worker died)."""
    return [name for name, result in results.items() if result["status"] == "failed"]


def describe_results(out, results: dict) -> str:
    """One line on what a run of the sweep did: counts by status, resumptions, where."""
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    resumed = sum(1 for r in results.values() if r.get("resumed_from"))
    text = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing to do"
    errors = [f"  {name}: {r['status']}: {r['error']}" for name, r in results.items()
              if r.get("error")]
    return "\n".join([f"{text}; {resumed} resumed from checkpoints; wrote {out} "
                      "(`thermosgd sweep status`, `thermosgd report` read it)"] + errors)
