"""The monitor's sinks and framework callbacks, each with the real package where it installs
(skipped otherwise: ``pip install thermosgd[monitor]``)."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from _monitor_models import BnNet, LossBnNet

from thermosgd.monitor.api import Monitor
from thermosgd.results import monitordir


def _loop(model, opt, steps=6):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, generator=gen), torch.randint(0, 2, (32,), generator=gen)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_tensorboard_sink(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = BnNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    with Monitor(model, opt, every=2, tensorboard=tmp_path / "tb"):
        _loop(model, opt)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    # by default the whole weights: fc.weight (the sum of its 3 channels), the head, all
    assert "thermosgd/norm/fc.weight" in tags and "thermosgd/angular_update/all" in tags
    assert not any(tag.endswith("]") for tag in tags)
    assert [e.step for e in events.Scalars("thermosgd/norm/all")] == [2, 4, 6]


def test_wandb_sink_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    model = BnNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wandb's own deprecation notices are not ours
        run = wandb.init(project="thermosgd-test", dir=str(tmp_path), mode="offline")
        try:
            with Monitor(model, opt, every=2, wandb=run):
                _loop(model, opt)
            history = run.summary._as_dict()
        finally:
            run.finish()
    assert history["thermosgd/step"] == 6 and "thermosgd/norm/all" in history


def test_lightning_callback(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from thermosgd.monitor.lightning import MonitorCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = BnNet()

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 5, generator=gen),
                                          torch.randint(0, 2, (64,), generator=gen))
    callback = MonitorCallback(out=tmp_path / "run", every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and loggers
        trainer = pl.Trainer(max_steps=8, callbacks=[callback], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path,
                             accelerator="cpu")
        trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=16))
    assert callback.monitor.groups == ["net.fc.weight[0]", "net.fc.weight[1]", "net.fc.weight[2]"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 8
    assert sorted(monitordir.read_metrics(tmp_path / "run")["step"].unique()) == [2, 4, 6, 8]


def test_huggingface_callback(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from thermosgd.monitor.huggingface import MonitorCallback

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=gen), torch.randint(0, 2, (64,), generator=gen)
    data = [{"x": a, "labels": b} for a, b in zip(x, y)]
    callback = MonitorCallback(out=tmp_path / "run", every=2, noise_window=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / "hf"), max_steps=8, per_device_train_batch_size=16,
            learning_rate=0.1, weight_decay=1e-3, optim="sgd", report_to=[], save_strategy="no",
            logging_strategy="no", use_cpu=True, lr_scheduler_type="constant")
        trainer = transformers.Trainer(model=LossBnNet(), args=args, train_dataset=data,
                                       callbacks=[callback])
        trainer.train()
    mon = callback.monitor
    assert mon.groups == ["net.fc.weight[0]", "net.fc.weight[1]", "net.fc.weight[2]"]
    metrics = monitordir.read_metrics(tmp_path / "run")
    assert sorted(metrics["step"].unique()) == [2, 4, 6, 8]
    fc = metrics[metrics["group"] == "net.fc.weight[0]"]
    assert fc["learning_rate"].eq(0.1).all() and fc["radius_theory"].notna().any()
