"""``thermosgd.Monitor`` as a PyTorch Lightning callback (``pip install thermosgd[lightning]``).

    trainer = lightning.Trainer(callbacks=[MonitorCallback(out="runs/mine", every=10)])

The monitor attaches to the LightningModule and its first optimizer when training starts and
closes when it ends (status "interrupted" if it ends by an exception). Its steps are the
Trainer's ``global_step``: a resumed fit goes on from the checkpoint's step, and a step that
``precision="16-mixed"``'s GradScaler skips (inf/nan gradients: the optimizer never steps) is
counted as Lightning counts it.
"""

from __future__ import annotations

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package spells it pytorch_lightning
    from pytorch_lightning import Callback

from thermosgd.monitor.api import Monitor

__all__ = ["MonitorCallback"]


class MonitorCallback(Callback):
    """Monitor the LightningModule's training; ``options`` are :class:`Monitor`'s keywords.
    ``optimizer_index`` picks the optimizer when ``configure_optimizers`` returns several."""

    def __init__(self, *, optimizer_index: int = 0, **options):
        super().__init__()
        self.options, self.optimizer_index = options, optimizer_index
        self.monitor: Monitor | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.monitor is not None:  # a fit before this one that failed unseen
            self.monitor.close("interrupted")
        self.monitor = Monitor(pl_module, trainer.optimizers[self.optimizer_index],
                               **self.options)
        self.monitor.step_to(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.monitor is not None:
            self.monitor.step_to(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close("finished")

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.monitor is not None:  # status "interrupted"; never hides ``exception``
            self.monitor.__exit__(type(exception), exception, exception.__traceback__)
