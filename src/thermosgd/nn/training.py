"""Network runs from configurations to run directories: ``train`` (one) and ``train_batched`` (G).

Both drive one :class:`~thermosgd.nn.engine.Engine` along the log schedule (appendix F): train to
the next log point, close the window (divergence), measure, write the metrics, and take a
checkpoint every ``checkpoint_every`` seconds and at the end. A run directory holds
``config.json``, ``metrics.parquet`` (one row per log point), ``summary.json`` (stationary means
over the last logs and the status) and ``checkpoint.pt`` (``thermosgd.results.rundir``). A killed
run started again with the same configuration resumes from its last checkpoint and ends with
exactly the metrics of an uninterrupted run. A configuration that diverges is recorded as
diverged and leaves the batch; the others go on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from thermosgd.nn.config import TrainConfig, resolve_device
from thermosgd.nn.data import load_data
from thermosgd.nn.data import Dataset
from thermosgd.nn.engine import MECHANISMS, Engine
from thermosgd.results import io as _io
from thermosgd.results import lock as _lock
from thermosgd.results import rundir
from thermosgd.results.rundir import (
    KIND,
    TrainResult,
    checkpoint_iteration,
    config_record,
    finish,
    read_finished,
    write_metrics,
)
from thermosgd.results.schema import ARCHITECTURES, architecture_of

__all__ = ["prepare", "train", "train_batched"]

_FIRST_CHECKPOINT = 60.0  # seconds: the most a run killed early loses


def prepare(config: TrainConfig, out: Path | None, *, checkpoint: bool = False) -> None:
    """Every check that can fail before anything is written: the output directory, and that a
    directory holding a run holds this run by every record it has (config.json, the
    manifest, summary.json and, with ``checkpoint``, the checkpoint, which is loaded to be
    sure it is whole). Raises ValueError naming the record that disagrees or is damaged."""
    if out is None:
        return
    out = Path(out)
    _io.check_output_dir(out, KIND)
    records = rundir.recorded_configs(out)  # names a damaged record before anything else
    stored = out / "config.json"
    if stored.is_file():
        record = json.loads(stored.read_text())  # parsed above: recorded_configs checked it
        found, now_network = architecture_of(record), ARCHITECTURES[config.model]
        if record["config"].get("model") == config.model and found != now_network:
            raise ValueError(f"{out} holds a run of the network {found}, which this thermosgd "
                             f"no longer trains (it builds {now_network}); it still reads, "
                             "but to train use a new --out")
    for where, before in records:
        diff = rundir.differences(before, config)
        if diff:
            raise ValueError(f"{out} holds a run with another configuration ({', '.join(diff)}; "
                             f"recorded in {where.name}); use a new --out, or the original "
                             "options to resume it")
    if checkpoint and read_finished(out) is None:  # a finished run resumes nothing
        rundir.load_checkpoint(out, config)


def train(config: TrainConfig, out: str | Path | None = None, *, dataset: Dataset | None = None,
          progress: bool = True, checkpoint_every: float = 600.0,
          wait: bool = False) -> TrainResult:
    """Train one configuration; with ``out``, write (and resume) a run directory.

    ``dataset``: an already loaded :class:`~thermosgd.nn.data.Dataset` (else loaded from the
    config). ``checkpoint_every``: seconds between checkpoints (taken at log points; 0 = every
    log point). A run that already finished (or diverged) is returned from disk. ``wait``:
    queue behind another process writing ``out`` instead of raising
    :class:`~thermosgd.results.lock.Busy`.
    """
    return train_batched([config], None if out is None else [out], dataset=dataset,
                         progress=progress, checkpoint_every=checkpoint_every, wait=wait)[0]


def train_batched(configs: list[TrainConfig], outs: list[str | Path | None] | None = None, *,
                  dataset: Dataset | None = None, progress: bool = True,
                  checkpoint_every: float = 600.0, max_batch: int | None = None,
                  queue_device: str | None = None,
                  queue_dtype: torch.dtype = torch.float32,
                  mechanism: str = "auto", wait: bool = False) -> list[TrainResult]:
    """Train ``configs`` (one protocol and architecture) in batches of at most ``max_batch``.

    ``outs``: one run directory per configuration (or None for no files); finished or diverged
    runs are read back, killed ones resume from their checkpoints. ``queue_device`` (default: the
    training device; "cpu" keeps the (G, N, d) entropy queues in pinned host memory) and
    ``queue_dtype`` bound the queues' memory. ``mechanism``: "loop", "vmap" or "auto"
    (``thermosgd.nn.engine``). Each run directory belongs to this call while it runs (an OS
    lock, :mod:`thermosgd.results.lock`): another process writing one of them makes this
    call raise :class:`~thermosgd.results.lock.Busy` naming it, or, with ``wait``, queue
    behind it. Returns one result per configuration, in order.
    """
    if not configs:
        raise ValueError("give at least one configuration")
    outs = [None] * len(configs) if outs is None else [None if o is None else Path(o) for o in outs]
    if len(outs) != len(configs):
        raise ValueError(f"{len(configs)} configurations but {len(outs)} output directories")
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    Engine.check(configs)
    for config, out in zip(configs, outs):
        prepare(config, out)
    device = resolve_device(configs[0].device)
    data = dataset if dataset is not None else load_data(configs[0], device)
    with _lock.hold([o for o in outs if o is not None], wait=wait):
        for config, out in zip(configs, outs):  # again: another owner may have written them
            prepare(config, out)
        return _train_owned(configs, outs, data, device, progress=progress,
                            checkpoint_every=checkpoint_every, max_batch=max_batch,
                            queue_device=queue_device, queue_dtype=queue_dtype,
                            mechanism=mechanism)


def _train_owned(configs, outs, data, device, *, progress, checkpoint_every, max_batch,
                 queue_device, queue_dtype, mechanism) -> list[TrainResult]:
    """:func:`train_batched` once its run directories are locked."""
    results: list[TrainResult | None] = [read_finished(out) for out in outs]
    for config, out, done in zip(configs, outs, results):
        if done is not None and not (out / "config.json").is_file():
            _rebuild_config(config, out, done, data, device)
    # configurations resume together only from the same iteration (a kill between two
    # checkpoint writes can leave them one log apart): group by the checkpoint's iteration
    groups: dict[int, list[int]] = {}
    for i, done in enumerate(results):
        if done is None:
            groups.setdefault(checkpoint_iteration(outs[i]), []).append(i)
    size = max_batch or len(configs)
    for members in groups.values():
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            engine = Engine([configs[i] for i in chunk], data, device=device,
                            queue_device=queue_device, queue_dtype=queue_dtype,
                            mechanism=mechanism)
            for i, result in zip(chunk, _execute(engine, [outs[i] for i in chunk], progress,
                                                 checkpoint_every)):
                results[i] = result
    return results


def _rebuild_config(config, out, done: TrainResult, data, device) -> None:
    """config.json of a finished run that lost it, from the configuration its summary and
    manifest recorded (prepare checked that they agree with ``config``)."""
    from thermosgd.nn.measure import log_schedule

    schedule = log_schedule(config.iterations, every=config.log_every,
                            linear_until=config.log_linear_until,
                            log_points=config.log_points)
    _io.write_json(out / "config.json", config_record(config, data, done.summary["d"], device,
                                                      schedule))


_FROZEN = ("the weights stopped moving: every snapshot of the entropy queue is the same "
           "point (the updates are below float32 resolution: the learning rate is too small), "
           "so the entropy is that of a point mass, -inf")


def _frozen(engine: Engine) -> list[int]:
    """The active configurations whose full entropy queue holds one point N times: a rate so
    small that no update changes a float32 weight. Recorded as diverged (the entropy estimate
    of eq. 25 has no finite value) rather than failing the batch at the entropy."""
    queue = engine.queue
    if queue.taken(engine.iteration) < queue.size:
        return []
    same = (queue.data == queue.data[:, :1]).flatten(1).all(1).tolist()  # (G,), at a log point
    return [i for i, frozen in zip(engine.active, same) if frozen]


def _execute(engine: Engine, outs: list[Path | None], progress: bool,
             checkpoint_every: float) -> list[TrainResult]:
    """The log schedule of one engine, with its run directories."""
    engine.load(outs)
    configs, schedule = engine.configs, engine.schedule
    for config, out in zip(configs, outs):
        if out is None:
            continue
        if engine.iteration == 0:
            _io.claim_output_dir(out, KIND, config.to_dict())
        if engine.iteration == 0 or not (out / "config.json").is_file():
            # a resumed run whose config.json was lost: the checkpoint and the manifest
            # agreed with this configuration (prepare), so it is rebuilt, not guessed
            _io.write_json(out / "config.json", config_record(
                config, engine.data, engine.d, engine.device, schedule))
    results: list[TrainResult | None] = [None] * len(configs)

    def retire(i, status, diverged_at, reason=None):
        results[i] = finish(configs[i], outs[i], engine.rows[i], status=status,
                            diverged_at=diverged_at, iteration=engine.iteration, d=engine.d,
                            seconds=engine.seconds[i], reason=reason)
        engine.retire(i)

    def share(kind, seconds):  # the batch's time, split evenly over its configurations
        for i in engine.active:
            engine.seconds[i][kind] += seconds / len(engine.active)

    cfg = configs[0]
    count = f" x{len(configs)}" if len(configs) > 1 else ""
    bar = tqdm(total=cfg.iterations, initial=engine.iteration, unit="it", disable=not progress,
               dynamic_ncols=True, desc=f"{cfg.model} {cfg.protocol}{count}")
    last_checkpoint = time.monotonic()
    # the first checkpoint comes within a minute (at the first log point after it), so that a
    # run killed early does not start again from zero; then every ``checkpoint_every``
    due = checkpoint_every if engine.iteration > 0 else min(checkpoint_every, _FIRST_CHECKPOINT)
    try:
        for stop in schedule[schedule > engine.iteration]:
            tick = time.monotonic()
            engine.advance(int(stop), bar)
            diverged = engine.close_window()
            share("train", time.monotonic() - tick)
            for i, at in diverged.items():
                retire(i, "diverged", at)
            for i in _frozen(engine):
                retire(i, "diverged", engine.iteration, reason=_FROZEN)
            if not engine.active:
                break
            tick = time.monotonic()
            rows = engine.measure()
            share("measure", time.monotonic() - tick)
            for i, row in zip(engine.active, rows):
                engine.rows[i].append(row)
                if outs[i] is not None:
                    write_metrics(outs[i], engine.rows[i])
            bar.set_postfix(loss=f"{rows[0]['train_loss']:.4f}",
                            radius=f"{rows[0]['radius']:.4g}")
            if time.monotonic() - last_checkpoint >= due or stop == schedule[-1]:
                engine.save(outs)
                last_checkpoint, due = time.monotonic(), checkpoint_every
    finally:
        bar.close()
    for i in list(engine.active):
        retire(i, "finished", None)
    return results
