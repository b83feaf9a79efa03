"""``thermosgd.Monitor`` as a Hugging Face ``TrainerCallback`` (``pip install
thermosgd[huggingface]``).

    trainer = transformers.Trainer(..., callbacks=[MonitorCallback(out="runs/mine")])

The monitor attaches to the Trainer's model and optimizer (the torch optimizer inside
Accelerate's wrapper) when training begins and closes when it ends. Its steps are the Trainer's
``global_step`` (a resumed run goes on from the checkpoint's step; a step the fp16 GradScaler
skips is counted). The Trainer puts biases and norm weights in a parameter group without weight
decay: a group whose weight decays and whose bias does not is predicted with their
norm-weighted decay (:mod:`thermosgd.monitor.columns`); "other" (the biases and gains) never is.

A ``TrainerCallback`` has no event for a failed run: ``Trainer.train`` raises past every
callback. So the callback wraps the ``train`` method of its own Trainer instance (found at
``on_init_end``: the callback API passes the Trainer's parts, never the Trainer); an exception
leaving ``train()``, a KeyboardInterrupt included, flushes the monitor's logs and detaches it with
status "interrupted" before it propagates. A callback added after construction
(``trainer.add_callback``) sees no ``on_init_end``: it wraps ``train`` at ``on_train_begin``
for the later runs, and for the run under way the Trainer's epoch loop (``_run_epoch``, the unit
``train()`` runs the steps in since transformers 5), where there is one. A run left open anyway
is closed as "interrupted" when training begins again.
"""

from __future__ import annotations

import functools
import sys

from transformers import Trainer, TrainerCallback

from thermosgd.monitor.api import Monitor

__all__ = ["MonitorCallback"]


class MonitorCallback(TrainerCallback):
    """Monitor a ``transformers.Trainer`` run; ``options`` are :class:`Monitor`'s keywords."""

    def __init__(self, **options):
        self.options = options
        self.monitor: Monitor | None = None

    def on_init_end(self, args, state, control, **kwargs):
        trainer = self._trainer()
        if trainer is not None:
            self._guard(trainer, "train")

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError("the Trainer passed no model or optimizer to on_train_begin: "
                             "this transformers version is not supported by MonitorCallback")
        if self.monitor is not None:  # a run before this one that failed unseen
            self.monitor.close("interrupted")
        trainer = self._trainer()
        if trainer is not None and not self._guard(trainer, "train"):
            self._guard(trainer, "_run_epoch")  # the run under way: train() is running already
        self.monitor = Monitor(model, optimizer, **self.options)
        self.monitor.step_to(state.global_step)  # a resumed run goes on from its step

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.step_to(state.global_step)  # counts a step the GradScaler skipped

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close("finished")

    def _trainer(self):
        """The Trainer calling this callback: the nearest caller frame whose ``self`` is a
        Trainer holding this callback."""
        frame = sys._getframe(2)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Trainer) and self in owner.callback_handler.callbacks:
                return owner
            frame = frame.f_back
        return None

    def _guard(self, trainer, name: str) -> bool:
        """Wrap ``trainer.<name>`` so that an exception through it closes the monitor as
        "interrupted". True when it was wrapped before: a later call of a wrapped method is
        guarded already, a call under way never is."""
        method = getattr(trainer, name, None)
        if method is None or getattr(method, "_thermosgd_callback", None) is self:
            return method is not None

        @functools.wraps(method)
        def guarded(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except BaseException as error:
                if self.monitor is not None:  # status "interrupted"; never hides ``error``
                    self.monitor.__exit__(type(error), error, error.__traceback__)
                raise
        guarded._thermosgd_callback = self
        setattr(trainer, name, guarded)  # this Trainer only: an instance attribute
        return False
