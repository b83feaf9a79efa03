"""The Ray executor of a sweep: each group of configurations is one Ray task.

A task asks for one GPU when the cluster has GPUs, otherwise ``cpus_per_task`` CPUs, and runs
``thermosgd.sweeps.local.run_group``: it takes its configurations' locks, trains them with the batched
engine and writes their run directories. A worker that dies mid-run (killed, preempted, out of
memory) is retried by Ray up to ``max_retries`` times; the retry resumes every configuration
from its last checkpoint. Workers must see the sweep directory and the data at the same paths
(a shared file system on a multi-node cluster) and have thermosgd installed.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tqdm.auto import tqdm

from thermosgd.sweeps import directory as _dir
from thermosgd.sweeps import local as _local

__all__ = ["run_ray"]


def _train_group(config_dicts, outs, sweep_dir, max_batch, checkpoint_every, mechanism, threads):
    """The Ray task: one group of configurations (run on a worker)."""
    import torch

    from thermosgd.nn.config import TrainConfig

    torch.set_num_threads(threads)  # the task's CPU share, as the local executor's threads
    return _local.run_group([TrainConfig(**c) for c in config_dicts], [Path(o) for o in outs],
                            sweep_dir=Path(sweep_dir), max_batch=max_batch, progress=False,
                            checkpoint_every=checkpoint_every, mechanism=mechanism)


def check_address(address: str) -> None:
    """Fail fast (ValueError) when nothing listens at a "host:port" or "ray://host:port"."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ValueError(f"cannot reach a Ray cluster at {address} ({err.strerror or err}); "
                         "start one with `ray start --head`, or leave out --address to start a "
                         "local instance") from None


def run_ray(sweep, out: str | Path, *, address: str | None = None, data: str | None = None,
            scale: float = 1.0, max_batch: int | None = None, cpus_per_task: int = 1,
            max_retries: int = 3, checkpoint_every: float = 600.0, mechanism: str = "auto",
            progress: bool = True, num_cpus: int | None = None) -> dict[str, dict]:
    """Train ``sweep``'s pending configurations as Ray tasks; returns {run name: result}.

    ``address``: a running cluster ("host:port", "ray://host:port" or "auto"); None starts a
    local instance (``num_cpus`` CPUs, default all) for this call.
    """
    import ray

    out = Path(out).resolve()
    if address is not None:
        check_address(address)
    if cpus_per_task < 1:
        raise ValueError(f"--cpus-per-task must be >= 1, got {cpus_per_task}")
    # every check before anything is written; group size is decided once the cluster is known
    _local.plan(sweep, out, data=data, scale=scale, device="cpu", max_batch=1)
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else num_cpus,
                     include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except ConnectionError as err:  # e.g. address="auto" with no cluster running
            raise ValueError(f"cannot connect to a Ray cluster at {address}: {err}") from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        device = "auto" if gpus else "cpu"
        configs = sweep.configs(data=data, scale=scale, device=device)
        size = max_batch or _local.default_batch(configs[0], on_gpu=bool(gpus))
        todo = [i for i, c in enumerate(configs)
                if _dir.run_state(out, _dir.run_name(c))
                not in ("finished", "diverged", "damaged")]
        _dir.claim_sweep_dir(out, sweep, scale)
        task = ray.remote(_train_group).options(
            max_retries=max_retries,
            **({"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cpus_per_task}))
        pending = {}
        for k in range(0, len(todo), size):
            group = todo[k:k + size]
            ref = task.remote([configs[i].to_dict() for i in group],
                              [str(_dir.run_dir(out, _dir.run_name(configs[i]))) for i in group],
                              str(out), max_batch, checkpoint_every, mechanism, cpus_per_task)
            pending[ref] = group
        results = {}
        with tqdm(total=len(todo), unit="run", disable=not progress, desc=sweep.name) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(done[0])
                try:
                    results |= ray.get(done[0])
                except ray.exceptions.RayError as err:  # retries exhausted: the others go on
                    for i in group:
                        results[_dir.run_name(configs[i])] = {
                            "status": "failed", "error": str(err).splitlines()[0]}
                bar.update(len(group))
        _dir.record_failures(out, results)
        return results
    finally:
        if started:
            ray.shutdown()
