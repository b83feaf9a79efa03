"""``thermosgd.Monitor`` as a Hugging Face ``TrainerCallback`` (``pip install
thermosgd[huggingface]``).

    trainer = transformers.Trainer(..., callbacks=[MonitorCallback(out="runs/mine")])

The monitor attaches to the Trainer's model and optimizer (the torch optimizer inside
Accelerate's wrapper) when training begins and closes when it ends. The Trainer puts biases and
norm weights in a parameter group without weight decay: groups there get no prediction.
"""

from __future__ import annotations

from transformers import TrainerCallback

from thermosgd.monitor.api import Monitor

__all__ = ["MonitorCallback"]


class MonitorCallback(TrainerCallback):
    """Monitor a ``transformers.Trainer`` run; ``options`` are :class:`Monitor`'s keywords."""

    def __init__(self, **options):
        self.options = options
        self.monitor: Monitor | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError("the Trainer passed no model or optimizer to on_train_begin: "
                             "this transformers version is not supported by MonitorCallback")
        self.monitor = Monitor(model, optimizer, **self.options)

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close("finished")
