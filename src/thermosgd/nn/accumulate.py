"""What SGD leaves behind between two log points, for G >= 1 configurations at once.

Two pieces, both on stacked flat weights W (G, d) and independent of how the gradients were
computed, so a training engine and an optimizer hook can share them:

- :class:`WindowSums` adds up, at every step and without talking to the host, the quantities the
  log point reports as means over its window: the batch loss, the running mean of
  ||grad L_B(w_bar)||^2 = ||w||^2 ||grad L_B(w)||^2 (P1: gradients scale as 1 / ||w||), which
  appendix G's corrected radius (eq. 117-120) needs, and on the fixed sphere the effective
  weight decay lambda_eff of eq. 83, and the angle the direction w / ||w|| turns per step (the
  angular update of spherical motion dynamics, whose equilibrium value each optimizer predicts:
  ``thermosgd.theory.optimizers.optimizer_angular_update``). Closing the window is the one host
  sync, and detects divergence.
- :class:`SnapshotQueue` keeps the last N weight snapshots (one every ``every`` steps) per
  configuration, whose directions give the sphere entropy (eq. 26-27) and whose mean norm the
  total entropy (eq. 28).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from thermosgd import theory
from thermosgd.entropy import sphere_entropy

__all__ = ["SnapshotQueue", "Window", "WindowSums"]


@dataclass(frozen=True)
class Window:
    """A closed window of G configurations."""

    means: list[dict]  # per configuration: stoch_grad_norm2, batch_loss, lambda_eff (eq. 83),
    # angular_update (radians per step)
    diverged: dict[int, int]  # {row: first iteration whose loss was not finite}


class WindowSums:
    """Device-side sums over the steps since the last log point, for G configurations.

    ``sphere_rate``: on the fixed sphere, eta = eta_eff r^2 per configuration (G,), the step
    size in the ambient space (eq. 2); None for the other protocols (lambda_eff is then NaN).
    Call :meth:`add` once per step with the weights *before* the update (and :meth:`rotate`
    with the weights before and after it), then :meth:`close`.
    """

    def __init__(self, count: int, device, *, sphere_rate=None):
        zero = torch.zeros(count, dtype=torch.float64, device=device)  # (G,)
        self.stoch = zero.clone()  # sum of ||grad L_B(w_bar)||^2
        self.loss = zero.clone()  # sum of batch losses
        self.leff = zero.clone()  # sum of eq. 83's per-step lambda_eff
        self.angle = zero.clone()  # sum of the per-step angles of w / ||w|| (radians)
        self.rotations = 0  # steps whose angle was added
        self.finite = torch.zeros(count, dtype=torch.int64, device=device)  # finite losses
        self.steps = 0
        # eta_eff r^2 in float64: eq. 83's (||w - eta g|| - r) / (eta r) cancels, and float32
        # would lose ~1e-4 of lambda_eff
        self.eta = (None if sphere_rate is None else torch.as_tensor(
            np.asarray(sphere_rate, dtype=float).reshape(count), device=device))  # (G,)

    def add(self, weights: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor) -> None:
        """One step: ``weights`` and ``grad`` (G, d) at w before the update, ``loss`` (G,).
        Device work only: no host sync."""
        r2, g2 = weights.square().sum(1), grad.square().sum(1)  # (G,), (G,)
        self.stoch += r2 * g2  # P1: ||grad L_B(w_bar)||^2 = ||w||^2 ||grad L_B(w)||^2
        self.loss += loss.detach()
        self.finite += torch.isfinite(loss)
        if self.eta is not None:  # eq. 83 with ||w - eta g||^2 = r^2 - 2 eta w.g + eta^2 ||g||^2
            eta = self.eta
            moved = (r2 - 2 * eta * (weights * grad).sum(1) + eta**2 * g2).sqrt()
            self.leff += (moved - r2.sqrt()) / (eta * r2.sqrt())
        self.steps += 1

    def rotate(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """The angle between the directions of ``before`` and ``after`` (G, d), added to the
        window. Taken as 2 asin(chord / 2) of the unit vectors' chord, in float64: acos of
        their dot product loses angles below ~3e-4 rad in float32 (1 - cos is below its
        rounding). Device work only: no host sync."""
        a, b = before.double(), after.double()
        chord = (a / a.norm(dim=1, keepdim=True) - b / b.norm(dim=1, keepdim=True)).norm(dim=1)
        self.angle += 2 * torch.asin((chord / 2).clamp(max=1.0))  # (G,)
        self.rotations += 1

    def close(self, weights: torch.Tensor, begin: int) -> Window:
        """At a log point (one host sync): the window's means, and the configurations that
        diverged, each with the first iteration whose loss was not finite (or the window's last
        iteration if only the weights or the gradient norm blew up). ``begin``: the iteration
        the window started from; ``weights`` (G, d) after its last step."""
        n = self.steps
        # the log point's host sync: counts, weight health and the three sums in one transfer
        table = torch.stack([self.finite.double(), torch.isfinite(weights).all(1).double(),
                             self.stoch / n, self.loss / n, self.leff / n,
                             self.angle / max(self.rotations, 1)], dim=1).cpu().numpy()
        means, diverged = [], {}
        for j, (finite, ok, stoch, loss, leff, angle) in enumerate(table):
            if finite < n or not ok or not math.isfinite(stoch):
                diverged[j] = begin + int(finite) + 1 if finite < n else begin + n
            means.append({"stoch_grad_norm2": float(stoch), "batch_loss": float(loss),
                          "lambda_eff": float(leff) if self.eta is not None else math.nan,
                          "angular_update": float(angle) if self.rotations else math.nan})
        return Window(means, diverged)


class SnapshotQueue:
    """The last ``size`` snapshots of G weight vectors, one every ``every`` steps: (G, N, d).

    ``device`` and ``dtype`` bound its memory (G N d entries): on a GPU the queues may live in
    pinned host memory (copies are then asynchronous), and float16 halves them at a relative
    rounding of 2^-11, far below the snapshots' spread that sets the entropy estimate.
    """

    def __init__(self, count: int, size: int, every: int, d: int, *, device, dtype=torch.float32,
                 pin: bool = False):
        self.size, self.every = size, every
        self.data = torch.zeros(count, size, d, dtype=dtype, device=device,
                                pin_memory=pin)  # (G, N, d)

    def push(self, weights: torch.Tensor, iteration: int) -> None:
        """After step ``iteration``: keep ``weights`` (G, d) if a snapshot is due (no sync)."""
        if iteration % self.every == 0:
            slot = (iteration // self.every - 1) % self.size
            self.data[:, slot].copy_(weights, non_blocking=True)

    def taken(self, iteration: int) -> int:
        """Snapshots held after ``iteration`` steps (at most N)."""
        return min(iteration // self.every, self.size)

    def mean_norms(self, iteration: int) -> torch.Tensor | None:
        """The mean norm of the snapshots taken so far (G,) float64, or None before the first.
        Slots fill in order, so the first ``taken`` slots hold them."""
        taken = self.taken(iteration)
        if taken == 0:
            return None
        return self.data[:, :taken].double().norm(dim=2).mean(1)  # (G,)

    def select(self, rows: torch.Tensor) -> None:
        """Keep the configurations ``rows`` (indices into the G axis)."""
        kept = self.data.index_select(0, rows.to(self.data.device))
        # pinned host memory keeps the snapshot copies from the GPU asynchronous
        self.data = kept.pin_memory() if self.data.is_pinned() else kept

    def entropies(self, iteration: int, *, align: bool = True) -> list[tuple[float, float]]:
        """(sphere entropy, total entropy) per configuration once the queue is full (eq. 26-28:
        S = S_sphere + (d - 1) log r, r the queue's mean norm); NaN before. One host sync.

        ``align=False``: in the paper's raw chart (``entropy.sphere_entropy``). The chart is
        computed in float64 from the stored snapshots whatever their dtype; the paper's code
        computed it in float32, which reads 1-7 nats high at d = 24408-43692."""
        count, _, d = self.data.shape
        if self.taken(iteration) < self.size:
            return [(math.nan, math.nan)] * count
        s_sphere = np.atleast_1d(sphere_entropy(self.data, align=align))  # log point: host syncs
        norms = self.data.double().norm(dim=2).mean(1).cpu().numpy()
        return [(float(s), float(theory.total_entropy(float(s), float(r), d)))
                for s, r in zip(s_sphere, norms)]
