"""``thermosgd.Monitor``: the thermodynamics of your own training loop, through optimizer hooks.

    with thermosgd.Monitor(model, opt, out="runs/mine", every=10) as mon:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
    mon.state()  # one row per group: norm, angle per step, T, p, Z, predicted r* and angle

The monitor attaches ``register_step_pre_hook`` / ``register_step_post_hook`` to the
``torch.optim`` optimizer, so the loop does not change. Scale-invariant groups are found on the
first forward pass (:mod:`thermosgd.monitor.groups`); everything else the optimizer trains is one
group "other", measured but without a prediction; "all" is the union of the scale-invariant
groups (itself scale-invariant, the paper's w). Every ``every`` steps the step's geometry and
the last gradient-noise window are summed on the device (:mod:`thermosgd.monitor.stats`);
the host sees them only at a flush (every ``flush_every`` logs, :meth:`Monitor.state`, the
end), where the state and the predictions for the optimizer in use are formed
(:mod:`thermosgd.monitor.predictions`) and written to the sinks.
"""

from __future__ import annotations

import warnings
import weakref
from collections import Counter

import numpy as np
import pandas as pd
import torch

from thermosgd.monitor import columns as _columns
from thermosgd.monitor import groups as _groups
from thermosgd.monitor import optimizer as _optimizer
from thermosgd.monitor import scaling as _scaling
from thermosgd.monitor.stats import RAW, DeviceStats
from thermosgd.monitor.predictions import classify, state_table
from thermosgd.monitor.sinks import (RunDirSink, TensorBoardSink, WandbSink, check_scalars,
                                     regimes_by_level)
from thermosgd.results import monitordir
from thermosgd.results.schema import MONITOR_COLUMNS

__all__ = ["Monitor"]

COSINE_TOLERANCE = 0.05  # median |cos(g, w)| over a flush above this: not orthogonal
OTHER = _columns.OTHER


def _torch_optimizer(optimizer):
    """The ``torch.optim.Optimizer`` inside Lightning's or Accelerate's wrappers (Accelerate's
    subclasses Optimizer without its hooks: the innermost one steps the weights)."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", getattr(optimizer, "_optimizer", None))
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    return optimizer


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Monitor:
    """Measure temperature, pressure, volume and the equilibrium predictions of each
    scale-invariant group of ``model`` trained by ``optimizer``.

    Keyword options: ``out`` a directory for the run (result kind "monitor", read by
    ``thermosgd analyze | plot | report``); ``every`` steps between logs; ``groups`` "auto"
    (found from the forward pass), a list of weight names (one group each) or a dict
    name -> "layer" | "channel", or None (no scale-invariant group); ``granularity`` "layer"
    merges auto-found per-channel groups per layer; ``noise_window`` steps per gradient-noise
    estimate; ``flush_every`` logs held on the device between host copies; ``regime_window``
    logs at most that decide a group's regime (those within the norm's relaxation time:
    :func:`thermosgd.monitor.predictions.classify`); ``entropy_queue`` snapshots (0: off) for
    the sphere entropy of groups of at most ``entropy_max_dim`` weights; ``tensorboard`` a
    SummaryWriter or a log dir; ``wandb`` a W&B run (or True: the active one); ``scalars`` which
    rows TensorBoard and W&B get: "layers" (whole weights, "other" and "all": a few hundred tags
    on a ResNet), "groups" (every group too, each channel) or a list of row names; the run
    directory keeps every row whatever it says; ``sinks`` more sinks;
    ``example`` an input batch to find the groups at once; ``overwrite`` replaces a monitored
    run already in ``out`` (one monitor writes a directory at a time); ``scaler`` the loop's
    ``torch.amp.GradScaler``. Steps are the loop's: one per optimizer step, plus each step the
    scaler skips (inf/nan gradients: counted from its ``update()`` calls) or :meth:`step_to`
    adds (the Lightning and HF callbacks pass their ``global_step``); a log is taken at the
    first optimizer step at or after each multiple of ``every``. Parameters the optimizer trains
    outside ``model`` are measured with the non-scale-invariant ones; none of the model's: refused.
    After the first step ``mon.groups`` names the groups and ``mon.discovery`` says how they
    were found (the structural rules, then the scaling test on the first batch).
    """

    def __init__(self, model, optimizer, *, out=None, every: int = 10, groups="auto",
                 granularity: str | None = None, noise_window: int = 5,
                 flush_every: int = 100, regime_window: int = 20, entropy_queue: int = 0,
                 entropy_max_dim: int = 2000, tensorboard=None, wandb=None,
                 scalars="layers", sinks=(),
                 example=None, overwrite: bool = False, scaler=None):
        self.every = _positive_int("every", every)
        self.noise_window = _positive_int("noise_window", noise_window, 2)
        self.flush_every = _positive_int("flush_every", flush_every)
        self.regime_window = _positive_int("regime_window", regime_window, 4)
        self.entropy_queue = _positive_int("entropy_queue", entropy_queue, 0)
        self.entropy_max_dim = _positive_int("entropy_max_dim", entropy_max_dim, 2)
        if granularity not in (None, *_groups.GRANULARITIES):
            raise ValueError(f"granularity must be None, 'layer' or 'channel', got "
                             f"{granularity!r}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model, self.optimizer = model, _torch_optimizer(optimizer)
        self._params, self._param_group, self._names = _optimizer.trained_parameters(
            model, self.optimizer)
        self._scaler = None if scaler is None else _optimizer.ScalerSteps(scaler)
        if groups != "auto" and groups is not None and not isinstance(groups, (list, tuple, dict)):
            raise ValueError(f"groups must be 'auto', None, a list of weight names or a dict "
                             f"name -> 'layer' | 'channel'; got {groups!r}")
        self._override = None if groups == "auto" else _groups.groups_from_override(
            model, groups or [])
        self._granularity = granularity
        self.theory, self.theory_notes = _optimizer.theories(self.optimizer)  # warns
        self.decay_notes = _optimizer.decay_notes(self.optimizer, self._params, self._param_group,
                                                  self._names, self._override)  # warns
        check_scalars(scalars)
        extra = list(sinks)
        if tensorboard is not None:
            extra.append(TensorBoardSink(tensorboard, scalars=scalars))
        if wandb is not None and wandb is not False:
            extra.append(WandbSink(None if wandb is True else wandb, scalars=scalars))
        self.out, self._lock = None, None
        if out is not None:  # last: a refused option leaves nothing written
            self.out, self._lock = monitordir.claim(out, self._settings(), overwrite=overwrite)
            weakref.finalize(self, self._lock.release)  # never closed: freed when collected
            extra.insert(0, RunDirSink(self.out))
        self.sinks = extra
        self.step = self.logs = self.flushes = self.optimizer_steps = self._logged = 0
        self._slot, self._log_steps, self._hyper = 0, [], []
        self._history, self._last = None, pd.DataFrame(columns=list(MONITOR_COLUMNS))
        self._unconfirmed, self._closed, self._stats, self._groups = set(), False, None, None
        self._logging = False
        self._recorder = _groups.Recorder(model) if self._override is None else None
        self._hooks = [self.optimizer.register_step_pre_hook(self._before),
                       self.optimizer.register_step_post_hook(self._after)]
        if self._scaler is not None:
            self._scaler.attach(self)
        try:
            if self._recorder is None:
                self._finalize()
            elif example is not None:
                # train mode, as the scaling test reruns it; a graph, to see which layer
                # outputs feed two ops; no BatchNorm statistics, mode or RNG state moves
                _groups.example_pass(model, example)
                self._finalize()
        except BaseException:  # a monitor that did not start leaves no hook and no lock
            self._detach()
            raise

    # ---- the groups ------------------------------------------------------------------------

    def _settings(self) -> dict:
        return {"every": self.every, "noise_window": self.noise_window,
                "flush_every": self.flush_every, "regime_window": self.regime_window,
                "entropy_queue": self.entropy_queue, "entropy_max_dim": self.entropy_max_dim,
                "optimizer": type(self.optimizer).__name__, "model": type(self.model).__name__}

    def _finalize(self) -> None:
        if self._recorder is not None:
            found, self.discovery = _scaling.discover(self.model, self._recorder,
                                                      self._granularity)
        else:
            found, self.discovery = self._override, None  # named by hand: nothing to test
        trained = set(self._names)
        self._groups = [g for g in found if set(g.params) <= trained]
        self._cols, rows = _columns.layout(self._groups, self._params, self._names,
                                           self._param_group, len(self.optimizer.param_groups))
        self._d = self._cols.d
        self._adam = any(t is not None and t.adaptive for t in self.theory)
        # groups are whole rows of parameters: the device sums take the per-row columns
        self._stats = DeviceStats(self._params, rows, self._cols.stored,
                                  capacity=self.flush_every, noise_window=self.noise_window,
                                  every=self.every, adaptive=self._adam)
        self._entropy_groups = []  # (group id, its weights' positions in a snapshot)
        if self.entropy_queue:
            small = [k for k in range(len(self._groups)) if self._d[k] <= self.entropy_max_dim]
            if small:  # a group's device columns: one per optimizer parameter group
                owner = {j: k for k in small for j in self._cols.members[k]}
                merged = {}
                for j, part in self._stats.keep_snapshots(self.entropy_queue, sorted(owner)):
                    merged.setdefault(owner[j], []).append(part)
                self._entropy_groups = [(k, torch.cat(v)) for k, v in merged.items()]
        self.not_scale_invariant = sorted(
            {n for n, r in zip(self._names, rows) if bool((r >= len(self._groups)).any())})
        if not self._groups and self._recorder is not None:
            warnings.warn(f"thermosgd.Monitor: no scale-invariant group found in "
                          f"{type(self.model).__name__} ({self.discovery.describe()}): "
                          "each weight matrix is measured on its own rows with its optimizer's "
                          "rotational equilibrium as an approximate prediction, the rest as "
                          "'other'; name groups with groups=[...] if the model normalizes "
                          "another way", UserWarning, stacklevel=3)
        if self.out is not None:
            monitordir.write_config(self.out, self._config_record())

    def _config_record(self) -> dict:
        c = self._cols
        params = {g.name: list(g.params) for g in self._groups}
        rows = {g.name: list(g.rows) for g in self._groups}
        norms = {g.name: {"norm": g.norm, "found": g.found} for g in self._groups}
        groups = []
        for k, name in enumerate(c.names):
            record = {"group": name, "layer": c.layers[k], "level": c.levels[k],
                      "d": int(c.d[k]), "scale_invariant": bool(c.scale_invariant[k]),
                      "param_groups": [int(j) for j in np.flatnonzero(c.share[k] > 0)]}
            if name in params:
                record |= {"params": params[name], "rows": rows[name], **norms[name]}
            elif name == OTHER:
                record["params"] = [n for n in self.not_scale_invariant
                                    if n not in c.matrices]
            elif name in c.matrices:
                record["params"] = [name]
            groups.append(record)
        optimizers = [{"param_group": k, "theory": None if t is None else t.to_dict(),
                       "label": None if t is None else t.label,
                       "note": "; ".join(n for n in (note, self.decay_notes[k]) if n)}
                      for k, (t, note) in enumerate(zip(self.theory, self.theory_notes))]
        return {"settings": self._settings(), "groups": groups, "optimizers": optimizers,
                "not_scale_invariant": self.not_scale_invariant}

    @property
    def groups(self) -> list[str]:
        """The scale-invariant groups by parameter name (``conv1.weight[3]``: one channel)."""
        if self._groups is None:
            raise RuntimeError("the groups are found on the first forward pass: read mon.groups "
                               "after the first optimizer step, or pass example=<a batch>")
        return [g.name for g in self._groups]

    # ---- the hooks ---------------------------------------------------------------------------

    def _before(self, optimizer, args, kwargs):
        """Before the update. A closure (Lightning, LBFGS) computes the gradient inside
        ``step()``: it is wrapped so the measurement follows its first call."""
        self._logging = False
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0]: the optimizer
        if closure is None:
            self._start()
            return None
        called = []

        def measured():
            loss = closure()
            if not called:
                called.append(True)
                self._start()
            return loss
        if "closure" in kwargs:
            return args, {**kwargs, "closure": measured}
        return (args[0], measured, *args[2:]), kwargs

    def _start(self) -> None:
        """The gradient of this step exists and the weights are still those before it."""
        if self._groups is None:
            self._finalize()
        self.step += 1
        self.optimizer_steps += 1
        phase = self.step % self.every
        # due at a multiple of every, or at the first step after one a skipped step passed
        self._logging = self.step // self.every > self._logged // self.every
        if self.every <= self.noise_window or self._logging or \
                phase > self.every - self.noise_window:
            self._stats.accumulate()
        if self._logging:
            self._logged = self.step
            self._stats.close_window(keep_mean_square=self._adam)
            self._stats.before(self._slot)

    def _after(self, optimizer, args, kwargs):
        if not self._logging:
            return
        self._stats.after(self._slot, self._adam_state() if self._adam else None)
        self._log_steps.append(self.step)
        self._hyper.append([(hp["lr"], hp.get("weight_decay", 0.0))
                            for hp in self.optimizer.param_groups])
        self._slot += 1
        self.logs += 1
        if self._slot == self.flush_every:
            self.flush()

    def _adam_state(self):
        """(exp_avg_sq, 1 - beta2^step, eps) per parameter; torch keeps ``step`` on the host
        unless the optimizer is capturable or fused, so the bias correction reads host memory
        only."""
        out = []
        for p, k in zip(self._params, self._param_group):
            state = self.optimizer.state.get(p, {})
            eps = float(self.optimizer.param_groups[k].get("eps", 0.0))
            if "exp_avg_sq" not in state:
                out.append((torch.zeros_like(p), 1.0, eps))
                continue
            beta2 = self.optimizer.param_groups[k]["betas"][1]
            step = state["step"]
            if isinstance(step, torch.Tensor) and step.device.type != "cpu":
                correction = 1.0 - beta2 ** step.to(torch.float64)
            else:
                correction = 1.0 - beta2 ** float(step)
            out.append((state["exp_avg_sq"], correction, eps))
        return out

    # ---- flushing ----------------------------------------------------------------------------

    def flush(self) -> pd.DataFrame:
        """Copy the logs held on the device to the host (one sync), form the state and write it
        to the sinks. Returns the new rows."""
        if self._stats is None or self._slot == 0:
            return pd.DataFrame(columns=list(MONITOR_COLUMNS))
        logs = self._slot
        table = self._stats.take(logs)  # (logs, RAW, groups)
        steps, hyper = self._log_steps[-logs:], self._hyper[-logs:]
        self._slot = 0
        self._log_steps, self._hyper = [], []
        rows = self._rows(table, steps, hyper)
        self.flushes += 1
        for sink in self.sinks:
            sink.write(rows)
        self._last = rows[rows["step"] == steps[-1]].reset_index(drop=True)
        return rows

    def _rows(self, table, steps, hyper) -> pd.DataFrame:
        c, si, logs = self._cols, len(self._groups), len(steps)
        table_r0sq = table[:, RAW.index("r0sq")]  # (logs, stored)
        table = c.expand(table, RAW.index("n"))  # (logs, RAW, rows): the unions added
        raw = {k: table[:, j, :] for j, k in enumerate(RAW)}
        lr, wd = c.hyperparameters(hyper, table_r0sq)  # (logs, rows) each
        columns = {}
        for cols, theory in c.prediction_blocks(hyper, self.theory):
            values = state_table({k: v[:, cols] for k, v in raw.items()}, d=c.d[cols],
                                 optimizer=theory, learning_rate=lr[:, cols],
                                 weight_decay=wd[:, cols])
            for key, value in values.items():
                columns.setdefault(key, np.full((logs, len(c.names)), np.nan))[:, cols] = value
        columns["regime"] = self._regimes(steps, columns)
        self._check_orthogonal(c.names[:si], columns["grad_cosine"][:, :si])
        frame = {"step": np.repeat(steps, len(c.names)), "group": c.names * logs,
                 "layer": c.layers * logs, "level": c.levels * logs,
                 "scale_invariant": np.tile(c.scale_invariant, logs),
                 "d": np.tile(c.d.astype(np.int64), logs)}
        frame |= {k: np.asarray(v).reshape(-1) for k, v in columns.items()}
        frame |= self._stats.entropies(self._entropy_groups, logs, len(c.names))
        return pd.DataFrame(frame)[list(MONITOR_COLUMNS)]

    def _regimes(self, steps, columns) -> np.ndarray:
        keys = ("norm", "trace_cov", "distance", "angular_update", "angular_update_theory",
                "learning_rate", "weight_decay", "relaxation_steps")
        new = np.stack([np.asarray(steps, float)[:, None] * np.ones_like(columns["norm"]),
                        *(columns[k] for k in keys)])  # (1 + 8, logs, groups)
        history = new if self._history is None else np.concatenate([self._history, new], 1)
        out = []
        for i in range(history.shape[1] - len(steps), history.shape[1]):
            w = history[:, max(0, i + 1 - self.regime_window): i + 1]
            out.append(classify(w[0, :, 0], **dict(zip(keys, w[1:]))))
        self._history = history[:, -(self.regime_window - 1):]
        return np.array(out, dtype=object)

    def _check_orthogonal(self, names, cosine) -> None:
        """P2: grad L(w) . w = 0 for a scale-invariant w; a group that breaks it is named."""
        with warnings.catch_warnings():  # a group without gradient (a dead channel): no cosine
            warnings.simplefilter("ignore", RuntimeWarning)
            typical = np.nanmedian(np.abs(cosine), axis=0) if cosine.size else []
        for name, c in zip(names, typical):
            if c > COSINE_TOLERANCE and name not in self._unconfirmed:
                self._unconfirmed.add(name)
                warnings.warn(f"thermosgd.Monitor: the gradient of group {name} is not orthogonal "
                              f"to its weights (|cos| = {c:.2g}): it is not scale-invariant "
                              "(a second use of the layer's output, a bias after the norm, or a "
                              "large eps in the norm); its predictions do not apply; name the "
                              "groups by hand with groups=", UserWarning, stacklevel=4)

    # ---- the user's view and the end ---------------------------------------------------------

    def state(self) -> pd.DataFrame:
        """The latest log's measurements and predictions, one row per group (flushes first)."""
        self.flush()
        return self._last.copy()

    def summary(self, status: str) -> dict:
        counts = Counter(self._last["regime"]) if len(self._last) else {}
        last = self._last.replace({np.nan: None}).to_dict("records")
        return {"status": status, "steps": self.step, "optimizer_steps": self.optimizer_steps,
                "logs": self.logs, "flushes": self.flushes, "groups": len(self._groups or []),
                "unconfirmed_groups": sorted(self._unconfirmed), "regimes": dict(counts),
                "regimes_by_level": regimes_by_level(last), "last": last}

    def step_to(self, step: int) -> None:
        """``step`` steps of the loop are done, taken or skipped (a resumed run, a step a
        GradScaler skipped): the next optimizer step is ``step + 1``. Never moves back."""
        step = _positive_int("step", step, 0)
        if step < self.step:
            raise ValueError(f"step_to({step}) would move the monitor back from step "
                             f"{self.step}: pass the number of loop steps done so far")
        if not self.optimizer_steps:  # the count starts here: first log at the next multiple
            self._logged = step
        self.step = step

    def close(self, status: str = "finished") -> None:
        """Flush, detach the hooks, close the sinks and free ``out`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._detach(keep_lock=True)
        try:
            self.flush()
        finally:
            try:
                for sink in self.sinks:
                    sink.close(self.summary(status))
            finally:
                self._detach()

    def _detach(self, *, keep_lock: bool = False) -> None:
        for held in (*self._hooks, self._recorder, self._scaler):
            if held is not None:
                held.remove()
        if self._lock is not None and not keep_lock:
            self._lock.release()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close("finished")
            return
        try:  # keep what was measured; never hide the exception that ended the loop
            self.close("interrupted")
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"thermosgd.Monitor could not save its last logs: {err}",
                          UserWarning, stacklevel=2)

    def __repr__(self) -> str:
        found = "not yet found" if self._groups is None else f"{len(self._groups)} groups"
        return f"Monitor({type(self.model).__name__}, every={self.every}, {found}, " \
               f"step {self.step})"

