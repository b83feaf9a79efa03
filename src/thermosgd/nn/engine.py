"""The training engine: G >= 1 configurations of one architecture and dataset, as one computation.

The G flat vectors of scale-invariant weights are stacked, W (G, d); BatchNorm running
statistics are stacked the same way, (G, ...). A protocol's update (``thermosgd.protocols``,
eq. 2, 8, 15) is a handful of fused operations on W with (G,) hyperparameters, and the frozen
head never moves. Heavy-ball and Nesterov momentum and AdamW (``thermosgd.nn.optim``, torch.optim
semantics) keep their state in (G, d) rows beside W; plain SGD is the protocol's own update,
bit for bit. Each configuration keeps its own mini-batch generator (seeded by its
``seed``), so it draws exactly the batches it would draw alone.

Two mechanisms compute the G gradients (chosen by measurement, benchmarks/RESULTS.md):
- "loop": one module per configuration whose parameters and buffers are views into row j of the
  stacked tensors, differentiated with ``torch.autograd.grad`` one after another. There is no
  functional-call overhead, so G = 1 costs what a plain single-model loop costs, and every
  configuration's trajectory is bitwise that of its run alone. Fastest on CPU, where one
  configuration already keeps the cores busy.
- "vmap": one ``torch.func.vmap`` over ``functional_call``; PyTorch folds the G configurations
  into grouped convolutions, which fills a GPU that one small network leaves idle. Sums are
  reordered, so trajectories match the loop to rounding.
"auto" takes the loop on CPU or for G = 1, vmap on a GPU.

Between log points nothing waits for the device: mini-batch indices for a whole chunk are drawn
at once, and the per-step window sums (``thermosgd.nn.accumulate``) stay on the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from thermosgd.nn import measure
from thermosgd.nn.accumulate import SnapshotQueue, WindowSums
from thermosgd.nn.config import TrainConfig
from thermosgd.nn.data import Dataset
from thermosgd.nn.models import build_model, scale_invariant_parameters
from thermosgd.nn.optim import BatchedOptimizer
from thermosgd.protocols import make_protocol
from thermosgd.results.rundir import load_checkpoint, save_checkpoint
from thermosgd.results.schema import CHARTS

__all__ = ["MECHANISMS", "SHARED_FIELDS", "Engine"]

MECHANISMS = ("auto", "loop", "vmap")

# fields every configuration of one engine must share (the rest: lr, wd, radius, seed and the
# optimizer's momentum, beta2, eps may differ)
SHARED_FIELDS = ("protocol", "model", "width", "dataset", "samples_per_class", "image_size",
                 "label_noise", "iterations", "batch_size", "init_seed", "head_seed", "bn_eps",
                 "queue_size", "queue_every", "log_every", "log_linear_until", "log_points",
                 "stationary_logs", "measure_passes", "chart", "measurement", "device",
                 "optimizer")

_CHUNK = 1000  # steps of mini-batch indices drawn at once, (chunk, G, B) int64 on the device


class Engine:
    """G configurations trained together; configuration i is ``configs[i]`` throughout.

    ``queue_device`` (default: the training device) and ``queue_dtype`` place the (G, N, d)
    entropy queues. Training (:meth:`advance`) and measuring (:meth:`close_window`,
    :meth:`measure`) act on the configurations still ``active``; :meth:`retire` drops one.

    Attributes: ``weights`` W (G_active, d), ``buffers`` {name: (G_active, ...)}, ``queue``
    (a :class:`~thermosgd.nn.accumulate.SnapshotQueue`), ``generators`` (one per configuration),
    ``iteration``, ``windows`` (the last closed window's means, per active configuration),
    ``model`` (configuration ``active[0]``'s module: architecture and frozen head), ``d``.
    """

    def __init__(self, configs: list[TrainConfig], data: Dataset, *, device="cpu",
                 queue_device=None, queue_dtype: torch.dtype = torch.float32,
                 mechanism: str = "auto"):
        configs = list(configs)
        self.check(configs)
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got "
                             f"{mechanism!r}")
        self.configs, self.data = configs, data
        self.device = torch.device(device)
        cfg = configs[0]
        self.sphere = cfg.protocol == "fixed-sphere"
        self.protocols = [c.make_protocol() for c in configs]
        self.modules = [build_model(  # each start bit-identical to the configuration alone
            cfg.model, width=cfg.width, num_classes=data.num_classes,
            in_channels=data.in_channels, init_seed=cfg.init_seed, head_seed=cfg.head_seed,
            bn_eps=cfg.bn_eps, norm=float(np.asarray(p.initial_norm()))).to(self.device).train()
            for p in self.protocols]
        self.weights = torch.stack([torch.cat([p.detach().reshape(-1)
                                               for p in scale_invariant_parameters(m)])
                                    for m in self.modules])  # (G, d)
        names = [n for n, _ in self.modules[0].named_buffers()]
        self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in self.modules])
                        for n in names}  # (G, ...)
        self.d = self.weights.shape[1]
        self.generators = [torch.Generator(device=self.device).manual_seed(c.seed)
                           for c in configs]
        qdev = torch.device(queue_device) if queue_device is not None else self.device
        self.queue = SnapshotQueue(len(configs), cfg.queue_size, cfg.queue_every, self.d,
                                   device=qdev, dtype=queue_dtype,
                                   pin=qdev.type == "cpu" and self.device.type == "cuda")
        self.schedule = measure.log_schedule(cfg.iterations, every=cfg.log_every,
                                             linear_until=cfg.log_linear_until,
                                             log_points=cfg.log_points,
                                             truncate=cfg.measurement == "paper")
        self.iteration, self.windows = 0, []
        self.rows = [[] for _ in configs]  # logged rows per configuration, kept in checkpoints
        self.seconds = [{"train": 0.0, "measure": 0.0} for _ in configs]
        self.active = list(range(len(configs)))
        if mechanism == "auto":
            mechanism = "loop" if self.device.type == "cpu" or len(configs) == 1 else "vmap"
        self.mechanism = mechanism
        # momentum and AdamW keep (G, d) state beside W; plain SGD is the protocol's own update
        self.optimizer = (None if cfg.optimizer == "sgd" else BatchedOptimizer(
            [c.optimizer_record for c in configs], self.protocols, self.weights))
        self._bind()
        self._open_window()
        if mechanism == "vmap":
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            self._names = [n for n, _ in named]
            self._shapes = [p.shape for _, p in named]
            self._sizes = [p.numel() for _, p in named]
            self._frozen = {n: p for n, p in self.model.named_parameters()
                            if not p.requires_grad}
            self._vgrad = vmap(grad_and_value(self._functional_loss, has_aux=True))

    @staticmethod
    def check(configs: list[TrainConfig]) -> None:
        """Refuse configurations that cannot train together (ValueError): none, or differing in
        a field of ``SHARED_FIELDS``."""
        if not configs:
            raise ValueError("give at least one configuration")
        for c in configs[1:]:
            diff = [f for f in SHARED_FIELDS if getattr(c, f) != getattr(configs[0], f)]
            if diff:
                raise ValueError(f"configurations of one batch must share {', '.join(diff)}; "
                                 "run different architectures or protocols as separate batches")

    @property
    def model(self) -> torch.nn.Module:
        return self.modules[0]

    # --- the loop mechanism: modules whose tensors are rows of the stacked state -----------

    def _bind(self) -> None:
        """Point module j's parameters and buffers at row j of W and of the buffers, so one
        update of W moves every model and BatchNorm's in-place updates land in the stack."""
        self._params = []
        for j, module in enumerate(self.modules):
            params = scale_invariant_parameters(module)
            start = 0
            for p in params:
                p.data = self.weights[j, start:start + p.numel()].view_as(p)
                start += p.numel()
            for name, stacked in self.buffers.items():
                owner, _, leaf = name.rpartition(".")
                setattr(module.get_submodule(owner), leaf, stacked[j])
            self._params.append(params)

    def _loop_gradients(self, idx):
        """idx (G, B) -> gradients at w (G, d) and batch losses (G,), module by module."""
        x, y = self.data.train_x, self.data.train_y
        grads, losses = [], []
        for j, (module, params) in enumerate(zip(self.modules, self._params)):
            loss = F.cross_entropy(module(x[idx[j]]), y[idx[j]])
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
            losses.append(loss.detach())
        if len(grads) == 1:  # a view: G = 1 pays nothing for the stacking
            return grads[0][None], losses[0][None]
        return torch.stack(grads), torch.stack(losses)

    # --- the vmap mechanism ------------------------------------------------------------------

    def _functional_params(self, w):
        return {n: t.view(s) for n, t, s in zip(self._names, w.split(self._sizes), self._shapes)}

    def _functional_logits(self, w, buffers, x):
        return functional_call(self.model, {**self._functional_params(w), **self._frozen,
                                            **buffers}, (x,))

    def _functional_loss(self, w, buffers, x, y):
        logits = self._functional_logits(w, buffers, x)
        return F.cross_entropy(logits, y), logits

    def _gradients(self, idx):
        """Gradients at w (G, d) and batch losses (G,) for batch indices idx (G, B)."""
        if self.mechanism == "loop":
            return self._loop_gradients(idx)
        x, y = self.data.train_x[idx], self.data.train_y[idx]
        g, (loss, _) = self._vgrad(self.weights, self.buffers, x, y)
        return g, loss.detach()

    # --- training ----------------------------------------------------------------------------

    def _protocol(self):
        """The active configurations' update rule: plain floats for one (no per-step copies of
        hyperparameters to the device), (G,) arrays for several."""
        if len(self.active) == 1:
            return self.protocols[self.active[0]]
        # (G,) arrays: the protocol copies them to the device at every step, a host round trip
        # on a GPU; device-resident hyperparameters need protocols to accept torch tensors
        rates = np.array([self.configs[i].hyperparameters[0] for i in self.active])
        seconds = np.array([self.configs[i].hyperparameters[1] for i in self.active])
        return make_protocol(self.configs[0].protocol, rates, seconds)

    def advance(self, stop: int, bar=None) -> None:
        """Train the active configurations from ``iteration`` to ``stop``. No host sync (tested
        under CUDA's sync debug mode); ``bar``: a tqdm bar to update, or None."""
        proto, cfg = self._protocol(), self.configs[0]
        gens = [self.generators[i] for i in self.active]
        n = self.data.train_x.shape[0]
        while self.iteration < stop:
            steps = min(_CHUNK, stop - self.iteration)
            batches = torch.stack([torch.randint(0, n, (steps, cfg.batch_size), generator=gen,
                                                 device=self.device)
                                   for gen in gens], dim=1)  # (steps, G, B)
            for idx in batches:
                g, loss = self._gradients(idx)  # (G, d), (G,)
                self._sums.add(self.weights, g, loss)
                new = (proto.step(self.weights, g) if self.optimizer is None
                       else self.optimizer.step(self.weights, g))  # (G, d)
                self._sums.rotate(self.weights, new)
                self.weights.copy_(new)
                self.iteration += 1
                self.queue.push(self.weights, self.iteration)
                if bar is not None:
                    bar.update(1)

    def _open_window(self) -> None:
        """New window sums, made at a log point (or a start) so that training copies nothing
        from the host."""
        eta = (self._protocol().learning_rate_at(1.0) if self.sphere and self.active
               else None)  # eta_eff r^2 on the sphere
        self._sums = WindowSums(len(self.active), self.device, sphere_rate=eta)
        self._window_begin = self.iteration

    def close_window(self) -> dict[int, int]:
        """At a log point (one host sync): keep the window's means in ``windows`` and return
        {configuration index: first non-finite iteration} of those that diverged in it."""
        if self._sums.steps == 0:
            raise RuntimeError("no training step since the last log point")
        window = self._sums.close(self.weights, self._window_begin)
        self.windows = window.means
        self._open_window()
        return {self.active[j]: at for j, at in window.diverged.items()}

    def retire(self, i: int) -> None:
        """Drop configuration ``i`` (an index into ``configs``) from training and measuring."""
        j = self.active.index(i)
        keep = [k for k in range(len(self.active)) if k != j]
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)  # at a log point
        self.active.pop(j)
        self.weights = self.weights.index_select(0, rows)
        self.buffers = {n: b.index_select(0, rows) for n, b in self.buffers.items()}
        self.queue.select(rows)
        if self.optimizer is not None:
            self.optimizer.select(rows)
        self.windows = [w for k, w in enumerate(self.windows) if k != j]
        self.modules.pop(j)
        if self.modules:
            self._bind()
        self._open_window()

    # --- measurements at a log point -----------------------------------------------------

    def measure(self) -> list[dict]:
        """One metrics row per active configuration (after :meth:`close_window`): the train set
        pass (loss, accuracy, ||grad L(w_bar)||^2, Tr Sigma), the test set, the queue's
        entropies and the protocol's state columns. Leaves the training state untouched."""
        cfg = self.configs[0]
        gens = [torch.Generator(device=self.device).manual_seed(
            measure.measure_seed(self.configs[i].seed, self.iteration)) for i in self.active]
        saved = {n: t.clone() for n, t in self.buffers.items()}
        n, r2 = self.data.train_x.shape[0], self._norms2()
        try:
            if cfg.measurement == "paper":  # rescaled by the queue's mean radius, not ||w||
                mean = self.queue.mean_norms(self.iteration)
                queue_r2 = r2 if mean is None else mean.to(self.device).square()
                stats = measure.paper_gradient_statistics(
                    self._measure_gradients(saved), r2, queue_r2, n=n, d=self.d,
                    batch_size=cfg.batch_size, draws=cfg.queue_size, generators=gens)
            else:
                stats = measure.batched_gradient_statistics(
                    self._measure_gradients(saved), r2, n=n, d=self.d,
                    batch_size=cfg.batch_size, passes=cfg.measure_passes, generators=gens)
        finally:
            for name, t in self.buffers.items():  # the measurement pass must not move BatchNorm
                t.copy_(saved[name])
        test = self._evaluate()
        missing = [(math.nan, math.nan)] * len(self.active)
        aligned, raw = (self.queue.entropies(self.iteration, align=chart == "aligned")
                        if chart in cfg.charts else missing for chart in CHARTS)
        c = None if self.optimizer is None else self.optimizer.preconditioner()
        c = [None] * len(self.active) if c is None else c.cpu().tolist()  # log point: a sync
        return [measure.log_row(self.protocols[i], self.d, self.iteration, stats[j], test[j],
                                self.windows[j], aligned[j], raw[j],
                                optimizer=self.configs[i].optimizer_record, preconditioner=c[j])
                for j, i in enumerate(self.active)]

    def _norms2(self) -> torch.Tensor:
        """||w||^2 (G,); the loop sums tensor by tensor, as a lone model's parameters do."""
        if self.mechanism == "vmap":
            return self.weights.square().sum(1)
        return torch.stack([sum(p.detach().square().sum() for p in params)
                            for params in self._params])

    def _measure_gradients(self, saved):
        """The measurement pass's batch_gradients: idx (G, B) -> gradients (G, d), losses (G,)
        and numbers of correct predictions (G,), BatchNorm in training mode."""
        x, y = self.data.train_x, self.data.train_y
        if self.mechanism == "vmap":
            buffers = {n: t.clone() for n, t in saved.items()}  # the pass moves these, not W's

            def batch_gradients(idx):
                g, (loss, logits) = self._vgrad(self.weights, buffers, x[idx], y[idx])
                return g, loss.detach(), (logits.argmax(-1) == y[idx]).sum(1)
            return batch_gradients

        def batch_gradients(idx):
            grads, losses, correct = [], [], []
            for j, (module, params) in enumerate(zip(self.modules, self._params)):
                logits = module(x[idx[j]])
                loss = F.cross_entropy(logits, y[idx[j]])
                correct.append((logits.argmax(1) == y[idx[j]]).sum())
                grads.append(torch.cat([g.reshape(-1)
                                        for g in torch.autograd.grad(loss, params)]))
                losses.append(loss.detach())
            return torch.stack(grads), torch.stack(losses), torch.stack(correct)
        return batch_gradients

    def _evaluate(self) -> list[tuple[float, float]]:
        """Test loss and accuracy per configuration, BatchNorm in evaluation mode."""
        x, y = self.data.test_x, self.data.test_y
        if self.mechanism == "loop":  # each module as it would be evaluated alone
            return [measure.evaluate(m, x, y) for m in self.modules]
        logits = vmap(self._functional_logits, in_dims=(0, 0, None))
        self.model.eval()
        try:
            return measure.batched_evaluate(lambda xb: logits(self.weights, self.buffers, xb),
                                            x, y, len(self.active))
        finally:
            self.model.train()

    # --- checkpoints: one per configuration, in the single-run format ----------------------

    def save(self, outs) -> None:
        """Write configuration i's checkpoint into ``outs[i]`` (None: skip) for the active ones,
        with its logged ``rows[i]`` and ``seconds[i]``."""
        for j, i in enumerate(self.active):
            if outs[i] is None:
                continue
            save_checkpoint(outs[i] / "checkpoint.pt", config=self.configs[i],  # copies to host
                            iteration=self.iteration, w=self.weights[j],
                            buffers={n: t[j] for n, t in self.buffers.items()},
                            generator_state=self.generators[i].get_state(),
                            queue=self.queue.data[j], rows=self.rows[i],
                            seconds=self.seconds[i],
                            optimizer_state=(None if self.optimizer is None
                                             else self.optimizer.row_state(j)))

    def load(self, outs) -> None:
        """Resume from the checkpoints in ``outs`` (None or no checkpoint: from the start).
        Every configuration must resume from one iteration."""
        iterations = set()
        self.rows = [[] for _ in self.configs]
        self.seconds = [{"train": 0.0, "measure": 0.0} for _ in self.configs]
        for i, out in enumerate(outs):
            state = load_checkpoint(out, self.configs[i])  # the previous one if damaged
            if state is None:
                iterations.add(0)
                continue
            iterations.add(state["iteration"])
            with torch.no_grad():
                self.weights[i].copy_(state["w"])
                for n, t in state["buffers"].items():
                    self.buffers[n][i].copy_(t)
                self.queue.data[i, : state["queue"].shape[0]].copy_(state["queue"])
            self.generators[i].set_state(state["generator"])
            if self.optimizer is not None:  # a checkpoint without it is an SGD run's
                if "optimizer" not in state:
                    raise ValueError(f"{out / 'checkpoint.pt'} holds no {self.optimizer.name} "
                                     "state (an SGD run's checkpoint); use a new --out")
                self.optimizer.load_row(i, state["optimizer"])
            self.rows[i] = state["rows"]
            self.seconds[i] = state["seconds"]
        if len(iterations) != 1:
            raise RuntimeError("configurations of one batch must resume from one iteration")
        self.iteration = iterations.pop()
        self._open_window()
