"""G configurations of one architecture and dataset trained together, as one computation.

The G flat weight vectors are stacked, W (G, d), and the model is evaluated with
``torch.func.functional_call``. Each configuration sees its own mini-batch (G, B, C, H, W), its
own BatchNorm running statistics (buffers stacked to (G, ...), updated in place) and gets its
own gradient; the protocol's update is the same ``thermosgd.protocols`` rule with (G,)
hyperparameter arrays. Each configuration keeps its own mini-batch generator, seeded as in the
single-run trainer, so it draws exactly the batches it would draw alone.

Two mechanisms compute the G gradients (chosen by measurement, benchmarks/RESULTS.md):
- "vmap": one ``torch.func.vmap`` call over the stacked weights; PyTorch folds the G
  configurations into grouped convolutions. Floating-point sums are reordered, so trajectories
  match the single-run trainer to rounding (tests bound the drift).
- "loop": the G functional gradients one after another. On CPU the step is compute-bound and
  this is the fastest; it is bitwise identical to the single-run trainer.
"auto" takes "loop" on CPU or for G = 1 and "vmap" on a GPU, where one small network leaves
the device mostly idle.

Measurements at log points are batched the same way (one pass over the training set with a
per-configuration permutation; the test set in evaluation mode; the entropy of the (G, N, d)
queues in one call). Every configuration writes its own run directory in the single-run format
(``thermosgd.nn.trainer``), so analysis cannot tell the engines apart. A configuration that
diverges is recorded as diverged and leaves the batch; the others go on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap
from tqdm.auto import tqdm

from thermosgd.results import io as _io
from thermosgd.entropy import sphere_entropy
from thermosgd.nn import measure
from thermosgd.nn.data import Dataset
from thermosgd.nn.models import build_model, scale_invariant_parameters
from thermosgd.nn.config import TrainConfig, load_data, resolve_device
from thermosgd.nn.trainer import _CHUNK, log_row, measure_seed, prepare
from thermosgd.results.rundir import (
    KIND,
    TrainResult,
    checkpoint_iteration,
    config_record,
    finish,
    read_finished,
    save_checkpoint,
    write_metrics,
)
from thermosgd.protocols import make_protocol
from thermosgd.theory import total_entropy

__all__ = ["MECHANISMS", "SHARED_FIELDS", "train_batched"]

MECHANISMS = ("auto", "loop", "vmap")

# fields every configuration of one batch must share (the rest: lr, wd, radius, seed may differ)
SHARED_FIELDS = ("protocol", "model", "width", "dataset", "samples_per_class", "image_size",
                 "label_noise",
                 "iterations", "batch_size", "init_seed", "head_seed", "bn_eps", "queue_size",
                 "queue_every", "log_every", "log_linear_until", "log_points", "stationary_logs",
                 "measure_passes", "device")


def train_batched(configs: list[TrainConfig], outs: list[str | Path | None] | None = None, *,
                  dataset: Dataset | None = None, progress: bool = True,
                  checkpoint_every: float = 600.0, max_batch: int | None = None,
                  queue_device: str | None = None,
                  queue_dtype: torch.dtype = torch.float32,
                  mechanism: str = "auto") -> list[TrainResult]:
    """Train ``configs`` (one protocol and architecture) in batches of at most ``max_batch``.

    ``outs``: one run directory per configuration (or None for no files); finished or diverged
    runs are read back, killed ones resume from their checkpoints. ``queue_device`` (default: the
    training device; "cpu" keeps the (G, N, d) entropy queues in pinned host memory) and
    ``queue_dtype`` bound the queues' memory. ``mechanism``: "loop", "vmap" or "auto" (module
    docstring). Returns one result per configuration, in order.
    """
    if not configs:
        raise ValueError("give at least one configuration")
    outs = [None] * len(configs) if outs is None else [None if o is None else Path(o) for o in outs]
    if len(outs) != len(configs):
        raise ValueError(f"{len(configs)} configurations but {len(outs)} output directories")
    first = configs[0]
    for c in configs[1:]:
        diff = [f for f in SHARED_FIELDS if getattr(c, f) != getattr(first, f)]
        if diff:
            raise ValueError(f"configurations of one batch must share {', '.join(diff)}; "
                             "run different architectures or protocols as separate batches")
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    for config, out in zip(configs, outs):
        prepare(config, out)
    device = resolve_device(first.device)
    data = dataset if dataset is not None else load_data(first, device)
    results: list[TrainResult | None] = [None] * len(configs)
    todo = []
    for i, (config, out) in enumerate(zip(configs, outs)):
        done = read_finished(out)
        if done is not None:
            results[i] = done
        else:
            todo.append(i)
    # configurations resume together only from the same iteration (a kill between two
    # checkpoint writes can leave them one log apart): group by the checkpoint's iteration
    groups: dict[int, list[int]] = {}
    for i in todo:
        groups.setdefault(checkpoint_iteration(outs[i]), []).append(i)
    size = max_batch or len(configs)
    for members in groups.values():
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            run = _Batch([configs[i] for i in chunk], [outs[i] for i in chunk], data, device,
                         queue_device=queue_device, queue_dtype=queue_dtype,
                         mechanism=mechanism)
            for i, result in zip(chunk, run.execute(progress=progress,
                                                    checkpoint_every=checkpoint_every)):
                results[i] = result
    return results


def _loop_map(fn, in_dims=0):
    """``vmap``'s contract by a Python loop: ``fn`` on each configuration's slice in turn (a dict
    argument is sliced value by value; slices are views, so in-place buffer updates land in the
    stacked tensors), outputs stacked along a new leading axis."""
    def mapped(*args):
        dims = in_dims if isinstance(in_dims, tuple) else (in_dims,) * len(args)
        first = next(a for a, dim in zip(args, dims) if dim is not None)
        count = len(next(iter(first.values()))) if isinstance(first, dict) else len(first)
        outs = [fn(*(a if dim is None else _slice(a, j) for a, dim in zip(args, dims)))
                for j in range(count)]
        return _stack(outs)
    return mapped


def _slice(arg, j):
    return {k: v[j] for k, v in arg.items()} if isinstance(arg, dict) else arg[j]


def _stack(outs):
    if isinstance(outs[0], tuple):
        return tuple(_stack([o[k] for o in outs]) for k in range(len(outs[0])))
    return torch.stack(outs)


class _Batch:
    """The state of G configurations trained together."""

    def __init__(self, configs, outs, data: Dataset, device, *, queue_device, queue_dtype,
                 mechanism: str = "auto"):
        self.configs, self.outs, self.data = list(configs), list(outs), data
        self.device = torch.device(device)
        cfg = configs[0]
        self.sphere = cfg.protocol == "fixed-sphere"
        self.protocols = [c.make_protocol() for c in configs]
        weights, buffers = [], []
        for proto in self.protocols:  # each start bit-identical to the single-run trainer's
            model = build_model(cfg.model, width=cfg.width, num_classes=data.num_classes,
                                in_channels=data.in_channels, init_seed=cfg.init_seed,
                                head_seed=cfg.head_seed, bn_eps=cfg.bn_eps,
                                norm=float(np.asarray(proto.initial_norm())))
            weights.append(torch.cat([p.detach().reshape(-1)
                                      for p in scale_invariant_parameters(model)]))
            buffers.append(dict(model.named_buffers()))
        self.model = model.to(self.device).train()  # the template: architecture + frozen head
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.frozen = {n: p for n, p in self.model.named_parameters() if not p.requires_grad}
        self.W = torch.stack(weights).to(self.device)  # (G, d)
        self.buffers = {n: torch.stack([b[n] for b in buffers]).to(self.device)
                        for n in buffers[0]}  # (G, ...)
        self.d = self.W.shape[1]
        self.generators = [torch.Generator(device=self.device).manual_seed(c.seed)
                           for c in configs]
        qdev = torch.device(queue_device) if queue_device is not None else self.device
        self.queue = torch.zeros(len(configs), cfg.queue_size, self.d, dtype=queue_dtype,
                                 device=qdev, pin_memory=qdev.type == "cpu"
                                 and self.device.type == "cuda")  # (G, N, d)
        self.schedule = measure.log_schedule(cfg.iterations, every=cfg.log_every,
                                             linear_until=cfg.log_linear_until,
                                             log_points=cfg.log_points)
        self.iteration = 0
        self.rows = [[] for _ in configs]
        self.seconds = [{"train": 0.0, "measure": 0.0} for _ in configs]
        self.results: list[TrainResult | None] = [None] * len(configs)
        self.active = list(range(len(configs)))  # indices (into configs) still training
        self._load()
        if mechanism == "auto":
            mechanism = "loop" if self.device.type == "cpu" or len(configs) == 1 else "vmap"
        self.mechanism = mechanism
        self._map = vmap if mechanism == "vmap" else _loop_map
        self._grad = self._map(grad_and_value(self._loss, has_aux=True))

    # --- the functional model ----------------------------------------------------------------

    def _params(self, w):
        return {n: t.view(s) for n, t, s in zip(self.names, w.split(self.sizes), self.shapes)}

    def _loss(self, w, buffers, x, y):
        logits = functional_call(self.model, {**self._params(w), **self.frozen, **buffers}, (x,))
        return F.cross_entropy(logits, y), logits

    def _hyper(self):
        """The batched protocol of the active configurations: (G,) hyperparameter arrays."""
        rates = np.array([self.configs[i].hyperparameters[0] for i in self.active])
        seconds = np.array([self.configs[i].hyperparameters[1] for i in self.active])
        return make_protocol(self.configs[0].protocol, rates, seconds)

    # --- the loop ----------------------------------------------------------------------------

    def execute(self, *, progress: bool, checkpoint_every: float) -> list[TrainResult]:
        if self.iteration == 0:
            for i, out in enumerate(self.outs):
                if out is not None:
                    _io.claim_output_dir(out, KIND, self.configs[i].to_dict())
                    _io.write_json(out / "config.json", config_record(
                        self.configs[i], self.data, self.d, self.device, self.schedule))
        cfg = self.configs[0]
        bar = tqdm(total=cfg.iterations, initial=self.iteration, unit="it", disable=not progress,
                   dynamic_ncols=True, desc=f"{cfg.model} {cfg.protocol} x{len(self.active)}")
        last_checkpoint = time.monotonic()
        try:
            for stop in self.schedule[self.schedule > self.iteration]:
                if not self.active:
                    break
                tick = time.monotonic()
                begin = self.iteration
                sums = self._advance(int(stop), bar)
                bad = self._close_window(sums, int(stop) - begin, begin)
                self._share("train", time.monotonic() - tick)
                for i, at in bad.items():
                    self._retire(i, "diverged", at)
                if not self.active:
                    break
                tick = time.monotonic()
                rows = self._measure()
                self._share("measure", time.monotonic() - tick)
                for i, row in zip(self.active, rows):
                    self.rows[i].append(row)
                    if self.outs[i] is not None:
                        write_metrics(self.outs[i], self.rows[i])
                lead = rows[0]
                bar.set_postfix(loss=f"{lead['train_loss']:.4f}", radius=f"{lead['radius']:.4g}")
                if (time.monotonic() - last_checkpoint >= checkpoint_every
                        or stop == self.schedule[-1]):
                    self._save()
                    last_checkpoint = time.monotonic()
        finally:
            bar.close()
        for i in list(self.active):
            self._retire(i, "finished", None)
        return self.results

    def _share(self, kind, seconds):
        for i in self.active:  # the batch's time, split evenly over its configurations
            self.seconds[i][kind] += seconds / len(self.active)

    def _advance(self, stop: int, bar) -> dict:
        """Training steps up to ``stop`` for all active configurations; no host sync."""
        cfg = self.configs[0]
        x, y = self.data.train_x, self.data.train_y
        proto = self._hyper()
        g_count = len(self.active)
        zero = torch.zeros(g_count, dtype=torch.float64, device=self.device)
        sums = {"stoch": zero.clone(), "loss": zero.clone(), "leff": zero.clone(),
                "finite": torch.zeros(g_count, dtype=torch.int64, device=self.device)}
        eta = (torch.as_tensor(np.asarray(proto.learning_rate_at(1.0), dtype=float),
                               device=self.device) if self.sphere else None)  # (G,) eta_eff r^2
        gens = [self.generators[i] for i in self.active]
        while self.iteration < stop:
            steps = min(_CHUNK, stop - self.iteration)
            batches = torch.stack([torch.randint(0, x.shape[0], (steps, cfg.batch_size),
                                                 generator=gen, device=self.device)
                                   for gen in gens], dim=1)  # (steps, G, B)
            for idx in batches:
                g, (loss, _) = self._grad(self.W, self.buffers, x[idx], y[idx])  # (G, d), (G,)
                r2, g2 = self.W.square().sum(1), g.square().sum(1)
                sums["stoch"] += r2 * g2  # P1: ||grad L_B(w_bar)||^2 = ||w||^2 ||grad L_B(w)||^2
                sums["loss"] += loss.detach()
                sums["finite"] += torch.isfinite(loss)
                if self.sphere:  # eq. 83, as in the single-run trainer
                    moved = (r2 - 2 * eta * (self.W * g).sum(1) + eta**2 * g2).sqrt()
                    sums["leff"] += (moved - r2.sqrt()) / (eta * r2.sqrt())
                self.W.copy_(proto.step(self.W, g))
                self.iteration += 1
                if self.iteration % cfg.queue_every == 0:
                    slot = (self.iteration // cfg.queue_every - 1) % cfg.queue_size
                    self.queue[:, slot].copy_(self.W, non_blocking=True)
                bar.update(1)
        return sums

    def _close_window(self, sums: dict, n: int, begin: int) -> dict[int, int]:
        """At a log point (host sync): window means of the healthy, {index: iteration} of the
        diverged."""
        finite = sums["finite"].cpu().numpy()
        ok = torch.isfinite(self.W).all(1).cpu().numpy()
        stoch, loss, leff = (sums[k].cpu().numpy() / n for k in ("stoch", "loss", "leff"))
        bad, self.windows = {}, []
        for j, i in enumerate(self.active):
            if finite[j] < n or not ok[j] or not math.isfinite(stoch[j]):
                bad[i] = begin + int(finite[j]) + 1 if finite[j] < n else begin + n
            self.windows.append({"stoch_grad_norm2": float(stoch[j]),
                                 "batch_loss": float(loss[j]),
                                 "lambda_eff": float(leff[j]) if self.sphere else math.nan})
        return bad

    def _retire(self, i: int, status: str, diverged_at: int | None) -> None:
        """Write configuration i's summary and drop it from the batch."""
        self.results[i] = finish(self.configs[i], self.outs[i], self.rows[i], status=status,
                                 diverged_at=diverged_at, iteration=self.iteration, d=self.d,
                                 seconds=self.seconds[i])
        j = self.active.index(i)
        keep = [k for k in range(len(self.active)) if k != j]
        self.active.pop(j)
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.W = self.W.index_select(0, index)
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
        self.queue = self.queue.index_select(0, index.to(self.queue.device))
        self.windows = [w for k, w in enumerate(getattr(self, "windows", [])) if k != j]

    # --- measurements, batched ---------------------------------------------------------------

    def _measure(self) -> list[dict]:
        cfg = self.configs[0]
        gens = [torch.Generator(device=self.device).manual_seed(
            measure_seed(self.configs[i].seed, self.iteration)) for i in self.active]
        stats = self._gradient_statistics(gens)
        test = self._evaluate()
        filled = self.iteration // cfg.queue_every >= cfg.queue_size
        if filled:
            s_sphere = np.atleast_1d(sphere_entropy(self.queue))
            norms = self.queue.double().norm(dim=2).mean(1).cpu().numpy()
            entropies = [(float(s), float(total_entropy(s, r, self.d)))
                         for s, r in zip(s_sphere, norms)]
        else:
            entropies = [(math.nan, math.nan)] * len(self.active)
        return [log_row(self.protocols[i], self.d, self.iteration, stats[j], test[j],
                        self.windows[j], entropies[j]) for j, i in enumerate(self.active)]

    def _gradient_statistics(self, gens) -> list[dict]:
        """``measure.gradient_statistics`` for every active configuration at once."""
        x, y = self.data.train_x, self.data.train_y
        buffers = {name: t.clone() for name, t in self.buffers.items()}  # leave the run's alone

        def batch_gradients(idx):  # (G, B)
            g, (loss, logits) = self._grad(self.W, buffers, x[idx], y[idx])
            return g, loss.detach(), (logits.argmax(-1) == y[idx]).sum(1)

        cfg = self.configs[0]
        return measure.batched_gradient_statistics(
            batch_gradients, self.W.square().sum(1), n=x.shape[0], d=self.d,
            batch_size=cfg.batch_size, passes=cfg.measure_passes, generators=gens)

    @torch.no_grad()
    def _evaluate(self, batch_size: int = 1000) -> list[tuple[float, float]]:
        """Test loss and accuracy of every configuration, BatchNorm in evaluation mode."""
        x, y = self.data.test_x, self.data.test_y

        def logits_of(w, buffers, xb):
            return functional_call(self.model, {**self._params(w), **self.frozen, **buffers},
                                   (xb,))

        batched = self._map(logits_of, in_dims=(0, 0, None))
        g_count = len(self.active)
        loss = torch.zeros(g_count, dtype=torch.float64, device=self.device)
        correct = torch.zeros(g_count, dtype=torch.int64, device=self.device)
        self.model.eval()
        try:
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                logits = batched(self.W, self.buffers, xb)  # (G, b, classes)
                loss += F.cross_entropy(logits.transpose(1, 2), yb.expand(g_count, -1),
                                        reduction="none").sum(1).double()
                correct += (logits.argmax(-1) == yb).sum(1)
        finally:
            self.model.train()
        out = torch.stack([loss / x.shape[0], correct.double() / x.shape[0]], dim=1).cpu()
        return [tuple(row) for row in out.tolist()]

    # --- checkpoints: one per configuration, in the single-run format -------------------------

    def _save(self) -> None:
        for j, i in enumerate(self.active):
            if self.outs[i] is None:
                continue
            save_checkpoint(self.outs[i] / "checkpoint.pt", config=self.configs[i],
                            iteration=self.iteration, w=self.W[j],
                            buffers={n: t[j] for n, t in self.buffers.items()},
                            generator_state=self.generators[i].get_state(), queue=self.queue[j],
                            rows=self.rows[i], seconds=self.seconds[i])

    def _load(self) -> None:
        iterations = set()
        for i, out in enumerate(self.outs):
            if out is None or not (out / "checkpoint.pt").is_file():
                iterations.add(0)
                continue
            state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
            iterations.add(state["iteration"])
            self.W[i].copy_(state["w"])
            for n, t in state["buffers"].items():
                self.buffers[n][i].copy_(t)
            self.generators[i].set_state(state["generator"])
            self.queue[i, : state["queue"].shape[0]].copy_(state["queue"])
            self.rows[i] = state["rows"]
            self.seconds[i] = state["seconds"]
        if len(iterations) != 1:
            raise RuntimeError("configurations of one batch must resume from one iteration")
        self.iteration = iterations.pop()
