"""Device-side sums that the monitor takes around ``optimizer.step()``: no host sync until a flush.

Every quantity is a sum over a group's coordinates, so one ``index_add_`` over the flattened
parameters serves every group at once, and any union of groups (the union of the scale-invariant
groups) is a sum of columns, formed on the host after the flush. At a log step t, with w0 the
weights before the step, w1 after it, u = w1 - w0 and g the mini-batch gradient:

    RAW = (r0sq = w0.w0, gw = g.w0, gg = g.g, uu = u.u, uw = u.w0, ug = u.g,
           s1s1 = |sum_k g_k|^2, s2 = sum_k |g_k|^2, n = K, lag = sum_k g_k.g_(k-1),
           csum = sum sqrt(v_hat), g2v = sum_i (s2_i / K) / (sqrt(v_hat_i) + eps)^2)

over the K consecutive steps of the last closed noise window (``noise_window``, the estimates of
:mod:`thermosgd.monitor.predictions`). Angles are formed from u, never from a cosine of w0 and
w1 (a float32 cosine loses angles below ~3e-4 rad). ``csum`` and ``g2v`` are AdamW's: its
preconditioner summed over the group, and the window's mean squared gradient per coordinate in
units of the preconditioner actually applied, v_hat = exp_avg_sq / (1 - beta2^step).
"""

from __future__ import annotations

import numpy as np
import torch

from thermosgd.entropy import sphere_entropy
from thermosgd.theory import total_entropy

__all__ = ["RAW", "DeviceStats"]

RAW = ("r0sq", "gw", "gg", "uu", "uw", "ug", "s1s1", "s2", "n", "lag", "csum", "g2v")
_R = {name: k for k, name in enumerate(RAW)}


class DeviceStats:
    """Sums for ``params`` whose elements belong to groups ``element_group`` (flat, int64).

    ``capacity``: log steps held on the device between two flushes.
    """

    def __init__(self, params: list[torch.Tensor], element_group: torch.Tensor, groups: int,
                 capacity: int, noise_window: int):
        self.params = params
        self.index = element_group  # (D,)
        self.groups = groups
        device = params[0].device
        self.buffer = torch.full((capacity, len(RAW), groups), float("nan"), dtype=torch.float64,
                                 device=device)  # (logs, RAW, groups)
        self.noise = torch.full((4, groups), float("nan"), dtype=torch.float64,
                                device=device)  # last closed window: s1s1, s2, n, lag
        self.sum1 = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.sum2 = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.lag = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.prev = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.mean_square = None  # the closed window's sum2 / K per coordinate (D,), for AdamW
        self.window = noise_window
        self.counted = 0  # steps in the open noise window
        self._zeros = {}
        self._w0 = self._g = None
        self.queue, self.queue_index, self.snapshots = None, None, 0

    def keep_snapshots(self, size: int, elements: torch.Tensor) -> None:
        """Keep the last ``size`` log-step snapshots of the flat ``elements`` (E,): (N, E)."""
        self.queue_index = elements.to(self.index.device)
        self.queue = torch.zeros(size, len(elements), dtype=torch.float32,
                                 device=self.index.device)

    def _grads(self) -> list[torch.Tensor]:
        # called at every step of a noise window: kept to one pass over the parameters
        zeros = self._zeros
        return [p.grad if p.grad is not None
                else zeros.setdefault(k, torch.zeros_like(p))  # a frozen or unused parameter
                for k, p in enumerate(self.params)]

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1).float() for t in tensors])  # (D,)

    def _add(self, slot: int, rows: slice, values: torch.Tensor) -> None:
        """Group sums of ``values`` (k, D) into buffer[slot, rows]."""
        self.buffer[slot, rows].zero_().index_add_(1, self.index, values.double())

    def accumulate(self) -> None:
        """One step's gradient into the open noise window (foreach calls, no sync).

        Besides sum g and sum g^2 it keeps sum g_k g_(k-1) over consecutive steps: the lag-1
        autocovariance separates the full-batch gradient from the noise (see
        :mod:`thermosgd.monitor.predictions`)."""
        grads = [g if g.dtype == torch.float32 else g.float() for g in self._grads()]
        torch._foreach_add_(self.sum1, grads)
        torch._foreach_addcmul_(self.sum2, grads, grads)
        if self.counted:
            torch._foreach_addcmul_(self.lag, grads, self.prev)
        torch._foreach_copy_(self.prev, grads)
        self.counted += 1

    def close_window(self, keep_mean_square: bool = False) -> None:
        """Close the noise window into ``self.noise`` once it has ``noise_window`` steps;
        ``keep_mean_square``: keep sum2 / K per coordinate for AdamW's weighted sums."""
        if self.counted < max(self.window, 2):
            return
        s1, s2, lag = self._flat(self.sum1), self._flat(self.sum2), self._flat(self.lag)
        self.noise[:2].zero_().index_add_(1, self.index, torch.stack([s1 * s1, s2]).double())
        self.noise[2].fill_(float(self.counted))
        self.noise[3].zero_().index_add_(0, self.index, lag.double())
        if keep_mean_square:
            self.mean_square = s2 / self.counted
        for buffers in (self.sum1, self.sum2, self.lag):
            torch._foreach_zero_(buffers)
        self.counted = 0

    def before(self, slot: int) -> None:
        """At a log step, before the update: |w0|^2, g.w0, |g|^2; keeps w0."""
        w0, g = self._flat(self.params), self._flat(self._grads())
        self._w0, self._g = w0, g
        self._add(slot, slice(_R["r0sq"], _R["gg"] + 1), torch.stack([w0 * w0, g * w0, g * g]))

    def after(self, slot: int, adam: list | None) -> None:
        """At a log step, after the update: u.u, u.w0, u.g, the noise window, AdamW's sums.

        ``adam``: per parameter (exp_avg_sq, bias correction 1 - beta2^step, eps), or None.
        """
        (w0, g), self._w0, self._g = (self._w0, self._g), None, None
        w1 = self._flat(self.params)
        if self.queue is not None:  # a snapshot of the small groups, for their entropy
            self.queue[self.snapshots % self.queue.shape[0]].copy_(w1[self.queue_index])
            self.snapshots += 1
        u = w1 - w0
        self._add(slot, slice(_R["uu"], _R["ug"] + 1), torch.stack([u * u, u * w0, u * g]))
        self.buffer[slot, _R["s1s1"]:_R["lag"] + 1].copy_(self.noise)
        if adam is not None:
            root = torch.cat([(v.detach().float() / bc).sqrt().reshape(-1) for v, bc, _ in adam])
            eps = torch.cat([torch.full((v.numel(),), e, dtype=torch.float32, device=root.device)
                             for v, _, e in adam])
            mean_square = self.mean_square if self.mean_square is not None \
                else torch.full_like(root, float("nan"))
            self._add(slot, slice(_R["csum"], _R["g2v"] + 1),
                      torch.stack([root, mean_square / (root + eps) ** 2]))

    def take(self, logs: int):
        """The first ``logs`` slots on the host (logs, RAW, groups): the flush's one sync."""
        # flush point: the one device-to-host copy (a copy on the CPU too: the slots are reused)
        return self.buffer[:logs].to("cpu", copy=True).numpy()

    def entropies(self, groups, logs: int, columns: int) -> dict:
        """Sphere and total entropy (eq. 26-28) of each small group's snapshots, on the flush's
        last log once the queue is full (NaN elsewhere); ``groups``: (column, slice of the
        queue). Host syncs: a flush point."""
        out = {k: np.full((logs, columns), np.nan) for k in ("entropy_sphere", "entropy")}
        if self.queue is not None and self.snapshots >= self.queue.shape[0]:
            for k, part in groups:
                sample = self.queue[:, part]  # (N, d_g)
                s = float(sphere_entropy(sample))
                radius = float(sample.double().norm(dim=1).mean())
                out["entropy_sphere"][-1, k] = s
                out["entropy"][-1, k] = float(total_entropy(s, radius, sample.shape[1]))
        return {k: v.reshape(-1) for k, v in out.items()}
