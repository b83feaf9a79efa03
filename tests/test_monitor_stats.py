"""The monitor's device sums (``thermosgd.monitor.stats``) against direct float64 sums, step by
step, without the Monitor around them."""

import pytest
import torch
from torch import nn

from thermosgd.monitor.stats import RAW, DeviceStats


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("block", [None, 4])
def test_device_sums_take_the_step_gradient_even_when_the_optimizer_changes_it(every, block,
                                                                              monkeypatch):
    """SGD's foreach Nesterov step without weight decay adds its momentum to ``.grad`` in place:
    u.g must still use the gradient of the step. Logs that close a window keep w0 in the
    window's emptied sum (two copies of the weights); logs inside a window need a third.
    ``block``: temporaries one row at a time, as for a large parameter."""
    if block is not None:
        monkeypatch.setattr(DeviceStats, "block_elements", block)
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True, foreach=True)
    rows = torch.tensor([0, 0, 1])  # rows 0-1 in column 0, row 2 in column 1
    stats = DeviceStats([w], [rows], 2, capacity=4, noise_window=2, every=every)
    grads, expected = [], []
    for step in range(1, 5):
        w.grad = torch.randn(3, 4)
        g, w0 = w.grad.double(), w.detach().double()
        grads.append(g)
        stats.accumulate()
        if step % every == 0:
            stats.close_window()
            stats.before(len(expected))
        opt.step()
        if step % every == 0:
            stats.after(len(expected), None)
            u = w.detach().double() - w0
            sums = {"r0sq": w0 * w0, "gw": g * w0, "gg": g * g, "uu": u * u, "uw": u * w0,
                    "ug": u * g}
            expected.append({k: torch.stack([v[:2].sum(), v[2].sum()]) for k, v in sums.items()})
    assert not torch.equal(w.grad.double(), grads[-1])  # the step did change .grad
    table = stats.take(len(expected))  # (logs, RAW, columns)
    for log, want in zip(table, expected):
        for k, v in want.items():
            # float32 products and row sums: 1e-5 relative, far above float32 rounding
            assert log[RAW.index(k)] == pytest.approx(v.numpy(), rel=1e-5), k
    g3, g4 = grads[2], grads[3]  # the last window: steps 3 and 4
    last = dict(zip(RAW, table[-1]))
    for k, v in {"s1s1": (g3 + g4) ** 2, "s2": g3 * g3 + g4 * g4, "lag": g3 * g4}.items():
        assert last[k] == pytest.approx([float(v[:2].sum()), float(v[2].sum())], rel=1e-5), k
    assert (last["n"] == 2).all()
    assert (stats._spare_w0 is None) == (every >= 2)


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("block", [None, 4])
def test_adamw_sums_weigh_the_last_closed_window(every, block, monkeypatch):
    """csum = sum sqrt(v_hat) and g2v = sum mean(g^2 over the last closed window) / (sqrt(v_hat)
    + eps)^2 at each log; logs inside the next window still read the closed one's mean."""
    if block is not None:
        monkeypatch.setattr(DeviceStats, "block_elements", block)
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.AdamW([w], lr=1e-2, weight_decay=0.1, eps=1e-3)
    stats = DeviceStats([w], [torch.tensor([0, 0, 1])], 2, capacity=4, noise_window=2,
                        every=every, adaptive=True)
    grads, expected = [], []
    for step in range(1, 5):
        w.grad = torch.randn(3, 4)
        grads.append(w.grad.double())
        stats.accumulate()
        if step % every == 0:
            stats.close_window(keep_mean_square=True)
            stats.before(len(expected))
        opt.step()
        if step % every == 0:
            correction = 1 - 0.999**step
            stats.after(len(expected), [(opt.state[w]["exp_avg_sq"], correction, 1e-3)])
            root = (opt.state[w]["exp_avg_sq"].double() / correction).sqrt()
            closed = (step // 2) * 2  # the last closed window: steps closed - 1 and closed
            g2v = [float("nan")] * 2  # before the first window closes
            if closed:
                mean_square = (grads[closed - 2] ** 2 + grads[closed - 1] ** 2) / 2
                weighted = mean_square / (root + 1e-3) ** 2
                g2v = [float(weighted[:2].sum()), float(weighted[2].sum())]
            expected.append({"csum": [float(root[:2].sum()), float(root[2].sum())],
                             "g2v": g2v})
    table = stats.take(len(expected))  # (logs, RAW, columns)
    for log, want in zip(table, expected):
        for k, v in want.items():
            # float32 state, products and row sums: 1e-5 relative
            assert log[RAW.index(k)] == pytest.approx(v, rel=1e-5, nan_ok=True), k
