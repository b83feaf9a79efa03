"""Reference only: the single-run trainer as it was before the one engine (``thermosgd.nn.engine``).

bench_train.py times it against the engine at G = 1; the package never imports it.

One network run under one protocol, with every thermodynamic measurement (section 6).

The scale-invariant weights live in one flat tensor w (d,); the model's parameters are views into
it, so a protocol's update (``thermosgd.protocols``, eq. 2, 8, 15) is a handful of fused vector
operations on the device and the frozen head never moves. Between log points the loop does not
talk to the host: mini-batch indices for a whole segment are drawn at once on the device, and the
per-step quantities (the running mean of ||grad L_B(w_bar)||^2 for appendix G, lambda_eff of
eq. 83 on the sphere, a count of finite losses for divergence) are accumulated in device tensors.

A run directory holds ``config.json``, ``metrics.parquet`` (one row per log point),
``summary.json`` (stationary means over the last logs and the status) and ``checkpoint.pt``.
Checkpoints are taken at log points; a killed run restarted with the same configuration resumes
from the last one and ends with exactly the metrics of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from thermosgd.results import io as _io
from thermosgd.results.schema import METRIC_COLUMNS
from thermosgd.results.rundir import (
    KIND,
    TrainResult,
    config_record,
    finish,
    save_checkpoint,
    write_metrics,
)
from thermosgd.nn import measure
from thermosgd.nn.config import PAPER_WIDTH, TrainConfig, resolve_device
from thermosgd.nn.data import load_data
from thermosgd.nn.data import Dataset
from thermosgd.nn.models import build_model, scale_invariant_parameters

__all__ = ["PAPER_WIDTH", "TrainConfig", "TrainResult", "train"]

_CHUNK = 1000  # steps of mini-batch indices drawn at once, (chunk, B) int64 on the device
_RUNTIME_FIELDS = ("data", "device")  # may change between a run and its resumption


def prepare(config: TrainConfig, out: Path | None) -> None:
    """Every check that can fail before anything is written: the output directory, and that a
    directory holding a run holds this run. Raises ValueError."""
    if out is None:
        return
    out = Path(out)
    _io.check_output_dir(out, KIND)
    stored = out / "config.json"
    if stored.is_file():
        before = json.loads(stored.read_text())["config"]
        now = config.to_dict()
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        before = defaults | before  # a field added after the run was written reads as its default
        diff = [k for k in now if k not in _RUNTIME_FIELDS and before.get(k) != now[k]]
        if diff:
            changes = ", ".join(f"{k} {before.get(k)!r} -> {now[k]!r}" for k in diff)
            raise ValueError(f"{out} holds a run with another configuration ({changes}); "
                             "use a new --out, or the original options to resume it")


def train(config: TrainConfig, out: str | Path | None = None, *, dataset: Dataset | None = None,
          progress: bool = True, checkpoint_every: float = 600.0) -> TrainResult:
    """Train one configuration; with ``out``, write (and resume) a run directory.

    ``dataset``: an already loaded :class:`~thermosgd.nn.data.Dataset` (else loaded from the
    config). ``checkpoint_every``: seconds between checkpoints (taken at log points; 0 = every
    log point). A run that already finished (or diverged) is returned from disk.
    """
    out = None if out is None else Path(out)
    prepare(config, out)
    device = resolve_device(config.device)
    data = dataset if dataset is not None else load_data(config, device)
    if out is not None and (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        if summary.get("status") in ("finished", "diverged"):
            return TrainResult(pd.read_parquet(out / "metrics.parquet"), summary, out)
    run = _Run(config, data, device, out)
    return run.execute(progress=progress, checkpoint_every=checkpoint_every)


class _Run:
    """State of one run: model with flat weights, RNG, entropy queue, logged rows."""

    def __init__(self, config: TrainConfig, data: Dataset, device, out: Path | None):
        self.config, self.data, self.out = config, data, out
        self.device = torch.device(device)
        self.protocol = config.make_protocol()
        self.sphere = config.protocol == "fixed-sphere"
        norm = float(np.asarray(self.protocol.initial_norm()))
        self.model = build_model(config.model, width=config.width, num_classes=data.num_classes,
                                 in_channels=data.in_channels, init_seed=config.init_seed,
                                 head_seed=config.head_seed, norm=norm, bn_eps=config.bn_eps)
        self.model.to(self.device).train()
        self.params = scale_invariant_parameters(self.model)
        self.w = torch.cat([p.detach().reshape(-1) for p in self.params])  # (d,)
        start = 0
        for p in self.params:  # parameters become views of w: one update moves them all
            p.data = self.w[start:start + p.numel()].view_as(p)
            start += p.numel()
        self.d = self.w.numel()
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.queue = torch.zeros(config.queue_size, self.d, device=self.device)  # (N, d)
        self.schedule = measure.log_schedule(
            config.iterations, every=config.log_every, linear_until=config.log_linear_until,
            log_points=config.log_points)
        self.iteration, self.rows = 0, []
        self.seconds = {"train": 0.0, "measure": 0.0}
        if out is not None and (out / "checkpoint.pt").is_file():
            self._load(out / "checkpoint.pt")

    # --- the loop ---------------------------------------------------------------------------

    def execute(self, *, progress: bool, checkpoint_every: float) -> TrainResult:
        if self.out is not None and self.iteration == 0:
            _io.claim_output_dir(self.out, KIND, self.config.to_dict())
            _io.write_json(self.out / "config.json", self._config_record())
        bar = tqdm(total=self.config.iterations, initial=self.iteration, unit="it",
                   disable=not progress, dynamic_ncols=True,
                   desc=f"{self.config.model} {self.config.protocol}")
        last_checkpoint = time.monotonic()
        status, diverged_at = "finished", None
        try:
            for stop in self.schedule[self.schedule > self.iteration]:
                tick = time.monotonic()
                bad_step = self._segment(int(stop), bar)
                self.seconds["train"] += time.monotonic() - tick
                if bad_step is not None:
                    status, diverged_at = "diverged", bad_step
                    break
                tick = time.monotonic()
                row = self._measure()
                self.seconds["measure"] += time.monotonic() - tick
                self.rows.append(row)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", radius=f"{row['radius']:.4g}")
                if self.out is not None:
                    self._write_metrics()
                    if (time.monotonic() - last_checkpoint >= checkpoint_every
                            or stop == self.schedule[-1]):
                        self._save(self.out / "checkpoint.pt")
                        last_checkpoint = time.monotonic()
        finally:
            bar.close()
        return self._finish(status, diverged_at)

    def _segment(self, stop: int, bar) -> int | None:
        """Train from self.iteration to ``stop``; return the first non-finite iteration, if any."""
        begin = self.iteration
        sums = self._advance(stop, bar)
        return self._close_window(sums, stop - begin, begin)

    def _advance(self, stop: int, bar) -> dict:
        """The training steps up to ``stop``: no host sync (tested under CUDA's sync debug mode).

        Returns the device-side window sums."""
        cfg, proto = self.config, self.protocol
        x, y = self.data.train_x, self.data.train_y
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        sums = {"stoch": zero.clone(),  # sum of ||grad L_B(w_bar)||^2
                "loss": zero.clone(), "leff": zero.clone(),  # sum of eq. 83's terms
                "finite": torch.zeros((), dtype=torch.int64, device=self.device)}
        # eta_eff r^2 in float64: eq. 83's (||w - eta g|| - r) / (eta r) cancels, float32 would
        # lose ~1e-4 of lambda_eff (the batched engine computes it the same way)
        eta = torch.full((), float(proto.learning_rate_at(1.0)) if self.sphere else 0.0,
                         dtype=torch.float64, device=self.device)  # a fill kernel, no copy
        while self.iteration < stop:
            steps = min(_CHUNK, stop - self.iteration)
            batches = torch.randint(0, x.shape[0], (steps, cfg.batch_size),
                                    generator=self.generator, device=self.device)  # (steps, B)
            for idx in batches:
                loss = F.cross_entropy(self.model(x[idx]), y[idx])
                g = torch.cat([gi.reshape(-1) for gi in torch.autograd.grad(loss, self.params)])
                r2, g2 = self.w.square().sum(), g.square().sum()  # as the batched engine
                sums["stoch"] += r2 * g2  # P1: ||grad L_B(w_bar)||^2 = ||w||^2 ||grad L_B(w)||^2
                sums["loss"] += loss.detach()
                sums["finite"] += torch.isfinite(loss)
                if self.sphere:  # eq. 83 with ||w - eta g||^2 = r^2 - 2 eta w.g + eta^2 ||g||^2
                    moved = (r2 - 2 * eta * (self.w * g).sum() + eta**2 * g2).sqrt()
                    sums["leff"] += (moved - r2.sqrt()) / (eta * r2.sqrt())
                self.w.copy_(proto.step(self.w, g))
                self.iteration += 1
                if self.iteration % cfg.queue_every == 0:
                    slot = (self.iteration // cfg.queue_every - 1) % cfg.queue_size
                    self.queue[slot].copy_(self.w)
                bar.update(1)
        return sums

    def _close_window(self, sums: dict, n: int, begin: int) -> int | None:
        """At a log point (host sync): check for divergence and keep the window means."""
        n_finite, ok = int(sums["finite"]), bool(torch.isfinite(self.w).all())
        stoch, loss, leff = (float(sums[k]) / n for k in ("stoch", "loss", "leff"))
        if n_finite < n or not ok or not math.isfinite(stoch):
            return begin + n_finite + 1 if n_finite < n else begin + n
        self.window = {"stoch_grad_norm2": stoch, "batch_loss": loss,
                       "lambda_eff": leff if self.sphere else math.nan}
        return None

    def _measure(self) -> dict:
        cfg = self.config
        gen = torch.Generator(device=self.device).manual_seed(measure_seed(cfg.seed, self.iteration))
        stats = measure.gradient_statistics(
            self.model, self.params, self.data.train_x, self.data.train_y,
            batch_size=cfg.batch_size, passes=cfg.measure_passes, generator=gen)
        test = measure.evaluate(self.model, self.data.test_x, self.data.test_y)
        filled = self.iteration // cfg.queue_every >= cfg.queue_size
        entropies = measure.queue_entropy(self.queue) if filled else (math.nan, math.nan)
        return log_row(self.protocol, self.d, self.iteration, stats, test, self.window, entropies)

    def _finish(self, status: str, diverged_at: int | None) -> TrainResult:
        return finish(self.config, self.out, self.rows, status=status, diverged_at=diverged_at,
                      iteration=self.iteration, d=self.d, seconds=self.seconds)

    def _config_record(self) -> dict:
        return config_record(self.config, self.data, self.d, self.device, self.schedule)

    def _write_metrics(self) -> None:
        write_metrics(self.out, self.rows)

    def _save(self, path: Path) -> None:
        save_checkpoint(path, config=self.config, iteration=self.iteration, w=self.w,
                        buffers=dict(self.model.named_buffers()),
                        generator_state=self.generator.get_state(), queue=self.queue,
                        rows=self.rows, seconds=self.seconds)

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.iteration = state["iteration"]
        self.w.copy_(state["w"])
        buffers = dict(self.model.named_buffers())
        for k, v in state["buffers"].items():
            buffers[k].copy_(v)
        self.generator.set_state(state["generator"])
        self.queue[: state["queue"].shape[0]].copy_(state["queue"])
        self.rows = state["rows"]
        self.seconds = state["seconds"]


# --- pieces shared with the batched engine: one file format whichever engine ran ---------------


def measure_seed(seed: int, iteration: int) -> int:
    """Seed of the measurement pass's permutation at a log point: its own stream, so measuring
    never perturbs the mini-batch stream."""
    return int(np.random.SeedSequence((seed, iteration, 1)).generate_state(1)[0])


def log_row(protocol, d, iteration, stats, test, window, entropies) -> dict:
    """One metrics row: issue 3's columns first, then the extras."""
    row = {"iteration": iteration, **stats, "test_loss": test[0], "test_acc": test[1], **window,
           "entropy_sphere": entropies[0], "entropy": entropies[1]}
    row |= measure.state_columns(
        protocol, d, radius=stats["radius"], trace_cov=stats["trace_cov"],
        full_grad_norm2=stats["full_grad_norm2"], stoch_grad_norm2=window["stoch_grad_norm2"],
        lambda_eff=window["lambda_eff"])
    first = list(METRIC_COLUMNS)  # the old trainer had no raw-chart entropy: NaN there
    return ({k: row.get(k, float("nan")) for k in first}
            | {k: v for k, v in row.items() if k not in first})
