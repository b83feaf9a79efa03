"""The monitor inside other people's loops: a Hugging Face run that fails, steps a GradScaler
skips (a raw loop, Lightning's 16-mixed) and a resumed run, each logged at the loop's own step;
an optimizer of another model, weight decay 0, and one writer per run directory."""

import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from _monitor_models import BnNet, LossBnNet
from torch import nn

from thermosgd.monitor.api import Monitor
from thermosgd.results import monitordir
from thermosgd.results.lock import Busy, OwnerLock
from thermosgd.results.schema import LOCK_FILE


def _data(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen), torch.randint(0, 2, (n,), generator=gen)


def _sgd(model, weight_decay=1e-3):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)


def _train(model, opt, steps):
    x, y = _data()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _monitor_hooks(optimizer) -> int:
    hooks = [*optimizer._optimizer_step_pre_hooks.values(),
             *optimizer._optimizer_step_post_hooks.values()]
    return sum(isinstance(getattr(h, "__self__", None), Monitor) for h in hooks)


def _logged_steps(out) -> list[int]:
    return sorted(int(s) for s in monitordir.read_metrics(out)["step"].unique())


# ---- Hugging Face ----------------------------------------------------------------------------

class _Items(torch.utils.data.Dataset):
    """64 examples; reading more than ``fail_after`` of them raises (a broken shard)."""

    def __init__(self, fail_after=None):
        self.x, self.y = _data()
        self.fail_after, self.reads = fail_after, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise OSError("the data went away")
        return {"x": self.x[i], "labels": self.y[i]}


def _hf_trainer(tmp_path, data, callbacks, max_steps=8, **options):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    settings = dict(output_dir=str(tmp_path / "hf"), max_steps=max_steps,
                    per_device_train_batch_size=16, learning_rate=0.1, weight_decay=1e-3,
                    optim="sgd", report_to=[], save_strategy="no", logging_strategy="no",
                    use_cpu=True, lr_scheduler_type="constant", seed=0) | options
    args = transformers.TrainingArguments(**settings)
    return transformers.Trainer(model=LossBnNet(), args=args, train_dataset=data,
                                callbacks=callbacks)


@pytest.mark.parametrize("attach,failure", [("constructor", "callback"),
                                            ("add_callback", "data")])
def test_a_failing_hugging_face_run_keeps_its_logs_and_lets_go(tmp_path, attach, failure):
    transformers = pytest.importorskip("transformers")
    from thermosgd.monitor.huggingface import MonitorCallback

    class Boom(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise RuntimeError("a callback failed")

    callback = MonitorCallback(out=tmp_path / "run", every=2, noise_window=2, flush_every=100)
    others = [Boom()] if failure == "callback" else []
    data = _Items(fail_after=5 * 16 if failure == "data" else None)  # 5 batches of 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' and accelerate's own notices
        trainer = _hf_trainer(tmp_path, data,
                              [callback, *others] if attach == "constructor" else others)
        if attach == "add_callback":
            trainer.add_callback(callback)
        with pytest.raises(RuntimeError if failure == "callback" else OSError):
            trainer.train()
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    # Accelerate reads a batch ahead: the data fails during step 5 or before it
    assert trainer.state.global_step == (5 if failure == "callback" else 4)
    assert summary["status"] == "interrupted" and summary["steps"] == trainer.state.global_step
    assert _logged_steps(out) == [2, 4]  # held on the device until the failure flushed them
    assert _monitor_hooks(trainer.optimizer.optimizer) == 0
    assert not OwnerLock(out / LOCK_FILE).is_locked()


def test_a_resumed_hugging_face_run_logs_the_trainer_steps(tmp_path):
    from thermosgd.monitor.huggingface import MonitorCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hf_trainer(tmp_path, _Items(), [], max_steps=4, save_strategy="steps",
                    save_steps=4).train()
        callback = MonitorCallback(out=tmp_path / "run", every=2, noise_window=2)
        trainer = _hf_trainer(tmp_path, _Items(), [callback])
        trainer.train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-4"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert trainer.state.global_step == 8
    assert summary["steps"] == 8 and summary["optimizer_steps"] == 4
    assert _logged_steps(tmp_path / "run") == [6, 8]  # the Trainer's steps, not 2, 4


# ---- steps the loop counts and the optimizer does not take ----------------------------------

def test_steps_a_grad_scaler_skips_are_counted(tmp_path):
    torch.manual_seed(0)
    model = BnNet()
    opt = _sgd(model)
    x, y = _data()
    # fp32 gradients never overflow at scale 1: only the inf losses below make it skip
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    skipped, taken = {3, 7, 20, 33, 34, 35}, []
    with Monitor(model, opt, every=10, noise_window=3, out=tmp_path / "run",
                 scaler=scaler) as mon:
        for step in range(1, 61):
            loss = F.cross_entropy(model(x), y) * (math.inf if step in skipped else 1.0)
            opt.zero_grad()
            scaler.scale(loss).backward()
            before = mon.optimizer_steps
            scaler.step(opt)
            if mon.optimizer_steps > before:
                taken.append(step)
            scaler.update()
    assert taken == [s for s in range(1, 61) if s not in skipped]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["optimizer_steps"] == 54
    # step 20 was skipped: its log is taken at the next step the optimizer takes
    assert _logged_steps(tmp_path / "run") == [10, 21, 30, 40, 50, 60]
    assert "update" not in scaler.__dict__  # the scaler is left as it was
    with pytest.raises(TypeError, match="scaler must be a torch.amp.GradScaler"):
        Monitor(model, opt, scaler=object())


def test_lightning_logs_its_global_step_through_skipped_amp_steps(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.plugins.precision import MixedPrecision

    from thermosgd.monitor.lightning import MonitorCallback

    skipped = {3, 8}  # the loop's steps, from 1

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = BnNet()

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            return loss * math.inf if self.global_step + 1 in skipped else loss

        def configure_optimizers(self):
            return _sgd(self)

    x, y = _data()
    callback = MonitorCallback(out=tmp_path / "run", every=2, noise_window=2)
    # a small initial scale: fp16 gradients of this net never overflow, only inf losses skip
    precision = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=16.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers, loggers and AMP on CPU
        trainer = pl.Trainer(max_steps=12, callbacks=[callback], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path,
                             accelerator="cpu", plugins=[precision])
        trainer.fit(Module(), torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=4))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert trainer.global_step == 12 and summary["steps"] == 12
    assert summary["optimizer_steps"] == 10
    assert _logged_steps(tmp_path / "run") == [2, 4, 6, 9, 10, 12]  # 8 skipped: logged at 9


def test_step_to_starts_a_resumed_count_and_never_moves_back():
    model = BnNet()
    opt = _sgd(model)
    with Monitor(model, opt, every=2, noise_window=2) as mon:
        mon.step_to(10)
        _train(model, opt, 4)
        assert list(mon.state()["step"].unique()) == [14]
        assert mon.logs == 2  # at 12 and 14: the count went on from 10
        with pytest.raises(ValueError, match="back from step 14"):
            mon.step_to(13)
        with pytest.raises(ValueError, match="step must be an integer >= 0"):
            mon.step_to(-1)


# ---- what the optimizer trains ---------------------------------------------------------------

def test_an_optimizer_of_another_model_is_refused(tmp_path):
    model, stranger = BnNet(), BnNet()
    opt = _sgd(stranger)
    with pytest.raises(ValueError, match="trains none of BnNet's parameters: it was built for "
                                         "another model"):
        Monitor(model, opt, out=tmp_path / "run")
    assert not (tmp_path / "run").exists() and _monitor_hooks(opt) == 0


def test_parameters_outside_the_model_are_measured_as_other():
    torch.manual_seed(0)
    model = BnNet()
    temperature = nn.Parameter(torch.ones(()))  # a learnable loss's, trained by the same SGD
    opt = torch.optim.SGD([*model.parameters(), temperature], lr=0.1, momentum=0.9,
                          weight_decay=1e-3)
    x, y = _data()
    with Monitor(model, opt, every=2) as mon:
        for _ in range(4):
            loss = F.cross_entropy(model(x) / temperature, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    state = mon.state().set_index("group")
    assert mon.groups == ["fc.weight[0]", "fc.weight[1]", "fc.weight[2]"]
    assert "param_groups[0][3]" in mon.not_scale_invariant
    assert state.loc["other", "d"] == 2 + 1  # head.bias and the temperature


# ---- weight decay 0 --------------------------------------------------------------------------

def test_zero_weight_decay_warns_once_and_is_noted(tmp_path):
    model = BnNet()
    opt = _sgd(model, weight_decay=0.0)
    with pytest.warns(UserWarning, match="weight_decay = 0") as record:
        mon = Monitor(model, opt, every=2, out=tmp_path / "run")
    assert sum("weight_decay = 0" in str(w.message) for w in record) == 1
    assert "parameter group 0 (fc.weight, head.weight)" in str(record[0].message)
    with mon:
        _train(model, opt, 4)
    assert mon.state()["radius_theory"].isna().all()  # no equilibrium, nothing predicted
    note = monitordir.read_config(tmp_path / "run")["optimizers"][0]["note"]
    assert "no equilibrium" in note


def test_a_no_decay_group_of_biases_is_noted_without_a_warning(tmp_path):
    model = BnNet()  # the Hugging Face Trainer's split: matrices decay, biases do not
    opt = torch.optim.SGD([{"params": [model.fc.weight, model.head.weight]},
                           {"params": [model.head.bias], "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, weight_decay=1e-3)
    with Monitor(model, opt, every=2, noise_window=2, out=tmp_path / "run") as mon:
        _train(model, opt, 4)  # (warnings are errors here)
    notes = [o["note"] for o in monitordir.read_config(tmp_path / "run")["optimizers"]]
    assert notes[0] == "" and "no equilibrium" in notes[1]
    assert mon.state().set_index("group")["radius_theory"].notna().any()


# ---- one writer per run directory ------------------------------------------------------------

def test_a_second_monitor_on_a_directory_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    first, second = BnNet(), BnNet()
    opt, other_opt = _sgd(first), _sgd(second)
    with Monitor(first, opt, every=2, out=out) as mon:
        _train(first, opt, 2)
        mon.flush()
        with pytest.raises(Busy, match=f"{out} is being written by process {os.getpid()}.*"
                                       "close that one first"):
            Monitor(second, other_opt, every=2, out=out, overwrite=True)
        assert _monitor_hooks(other_opt) == 0
        _train(first, opt, 2)
    assert _logged_steps(out) == [2, 4]  # the refused one deleted nothing
    with Monitor(second, other_opt, every=2, out=out, overwrite=True):  # closed: free again
        _train(second, other_opt, 2)
    assert _logged_steps(out) == [2]


def test_a_monitor_that_fails_to_start_leaves_no_hook_and_no_lock(tmp_path):
    model = BnNet()
    opt = _sgd(model)
    with pytest.raises(RuntimeError):  # an example batch of the wrong width
        Monitor(model, opt, out=tmp_path / "run", example=torch.randn(2, 7))
    assert _monitor_hooks(opt) == 0 and not OwnerLock(tmp_path / "run" / LOCK_FILE).is_locked()


def test_a_monitor_nobody_holds_frees_its_directory(tmp_path):
    def forgotten():
        model = BnNet()
        Monitor(model, _sgd(model), out=tmp_path / "run")  # never closed, dropped

    forgotten()
    model = BnNet()
    Monitor(model, _sgd(model), out=tmp_path / "run", overwrite=True).close()


def test_a_directory_held_by_another_process_is_refused_until_it_dies(tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time\nfrom thermosgd.results import monitordir\n"
            f"monitordir.claim({str(out)!r}, {{}})\nprint('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        model = BnNet()
        with pytest.raises(Busy, match=f"process {proc.pid} on .*wait for that run to end"):
            Monitor(model, _sgd(model), out=out, overwrite=True)
    finally:
        proc.kill()  # dies holding it: the kernel drops its lock, its record stays
        proc.wait()
        proc.stdout.close()
    with Monitor(model, _sgd(model), out=out, overwrite=True):
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
