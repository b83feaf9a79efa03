"""Window sums and the snapshot queue on hand-made (G, d) tensors, without an engine."""

import math

import numpy as np
import pytest
import torch

from thermosgd.nn.accumulate import SnapshotQueue, WindowSums


def _steps(g_count=3, d=7, steps=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(g_count, d, generator=gen), torch.randn(g_count, d, generator=gen),
             torch.rand(g_count, generator=gen)) for _ in range(steps)]


def test_window_means_are_the_per_step_formulas():
    """Batch loss, ||w||^2 ||g||^2 (P1) and eq. 83's (||w - eta g|| - r) / (eta r), averaged
    over the window, against the same formulas in float64 step by step."""
    steps = _steps()
    eta = np.array([0.1, 0.2, 0.4])
    sums = WindowSums(3, "cpu", sphere_rate=eta)
    for w, g, loss in steps:
        sums.add(w, g, loss)
    window = sums.close(steps[-1][0], begin=10)
    assert window.diverged == {}
    for j in range(3):
        w = [s[0][j].double() for s in steps]
        g = [s[1][j].double() for s in steps]
        loss = np.mean([float(s[2][j]) for s in steps])
        stoch = np.mean([float((a @ a) * (b @ b)) for a, b in zip(w, g)])
        leff = np.mean([float(((a - eta[j] * b).norm() - a.norm()) / (eta[j] * a.norm()))
                        for a, b in zip(w, g)])
        means = window.means[j]
        # float32 inputs summed in float32 per step, accumulated in float64: ~1e-6 relative
        assert means["batch_loss"] == pytest.approx(loss, rel=1e-6)
        assert means["stoch_grad_norm2"] == pytest.approx(stoch, rel=1e-5)
        assert means["lambda_eff"] == pytest.approx(leff, rel=1e-4)


def test_without_a_sphere_lambda_eff_is_missing():
    sums = WindowSums(3, "cpu")
    for w, g, loss in _steps():
        sums.add(w, g, loss)
    assert all(math.isnan(m["lambda_eff"]) for m in sums.close(w, begin=0).means)


def test_divergence_names_the_first_non_finite_step():
    """Configuration 1's loss is non-finite from the window's third step (iteration 10 + 3);
    configuration 2's weights blow up without a bad loss: the window's last iteration."""
    sums = WindowSums(3, "cpu")
    steps = _steps()
    for k, (w, g, loss) in enumerate(steps):
        if k >= 2:
            loss[1] = math.inf
        sums.add(w, g, loss)
    w = steps[-1][0].clone()
    w[2, 0] = math.nan
    assert sums.close(w, begin=10).diverged == {1: 13, 2: 15}


def test_the_queue_keeps_the_last_snapshots_in_a_ring():
    queue = SnapshotQueue(2, 3, 5, 4, device="cpu")
    for it in range(1, 26):  # snapshots at 5, 10, ..., 25: slots 0, 1, 2, 0, 1
        queue.push(torch.full((2, 4), float(it)), it)
    assert queue.taken(25) == 3 and queue.taken(7) == 1
    assert queue.data[:, :, 0].tolist() == [[20.0, 25.0, 15.0]] * 2
    assert all(math.isnan(s) for pair in queue.entropies(10) for s in pair)
    queue.select(torch.tensor([1]))
    assert queue.data.shape == (1, 3, 4)
