"""Device-side sums that the monitor takes around ``optimizer.step()``: no host sync until a flush.

Every quantity is a sum over a group's coordinates, so one ``index_add_`` over the flattened
parameters serves every group at once, and any union of groups (the union of the scale-invariant
groups) is a sum of columns, formed on the host after the flush. At a log step t, with w0 the
weights before the step, w1 after it, u = w1 - w0 and g the mini-batch gradient:

    RAW = (r0sq = w0.w0, gw = g.w0, gg = g.g, uu = u.u, uw = u.w0,
           s1s1 = |sum_k g_k|^2, s2 = sum_k |g_k|^2, n = K, csum = sum sqrt(v_hat))

over the K steps of the last closed noise window (``noise_window``, the estimate of
:mod:`thermosgd.nn._monitor_theory`). Angles are formed from u, never from a cosine of w0 and
w1 (a float32 cosine loses angles below ~3e-4 rad). ``csum`` is AdamW's preconditioner summed
over the group: v_hat = exp_avg_sq / (1 - beta2^step).
"""

from __future__ import annotations

import numpy as np
import torch

from thermosgd.entropy import sphere_entropy
from thermosgd.theory import total_entropy

__all__ = ["RAW", "DeviceStats"]

RAW = ("r0sq", "gw", "gg", "uu", "uw", "s1s1", "s2", "n", "csum")
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
        self.noise = torch.full((3, groups), float("nan"), dtype=torch.float64,
                                device=device)  # last closed window: s1s1, s2, n
        self.sum1 = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.sum2 = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.window = noise_window
        self.counted = 0  # steps in the open noise window
        self._zeros = {}
        self._w0 = None
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
        """One step's gradient into the open noise window (two foreach calls, no sync)."""
        grads = [g if g.dtype == torch.float32 else g.float() for g in self._grads()]
        torch._foreach_add_(self.sum1, grads)
        torch._foreach_addcmul_(self.sum2, grads, grads)
        self.counted += 1

    def close_window(self) -> None:
        """Close the noise window into ``self.noise`` once it has ``noise_window`` steps."""
        if self.counted < max(self.window, 2):
            return
        s1, s2 = self._flat(self.sum1), self._flat(self.sum2)
        self.noise[:2].zero_().index_add_(1, self.index, torch.stack([s1 * s1, s2]).double())
        self.noise[2].fill_(float(self.counted))
        torch._foreach_zero_(self.sum1)
        torch._foreach_zero_(self.sum2)
        self.counted = 0

    def before(self, slot: int) -> None:
        """At a log step, before the update: |w0|^2, g.w0, |g|^2; keeps w0."""
        w0, g = self._flat(self.params), self._flat(self._grads())
        self._w0 = w0
        self._add(slot, slice(_R["r0sq"], _R["gg"] + 1), torch.stack([w0 * w0, g * w0, g * g]))

    def after(self, slot: int, adam: list | None) -> None:
        """At a log step, after the update: u.u, u.w0, the noise window, AdamW's sqrt(v_hat).

        ``adam``: per parameter (exp_avg_sq, bias correction 1 - beta2^step), or None.
        """
        w0, self._w0 = self._w0, None
        w1 = self._flat(self.params)
        if self.queue is not None:  # a snapshot of the small groups, for their entropy
            self.queue[self.snapshots % self.queue.shape[0]].copy_(w1[self.queue_index])
            self.snapshots += 1
        u = w1 - w0
        self._add(slot, slice(_R["uu"], _R["uw"] + 1), torch.stack([u * u, u * w0]))
        self.buffer[slot, _R["s1s1"]:_R["n"] + 1].copy_(self.noise)
        if adam is not None:
            root = torch.cat([(v.detach().float() / bc).sqrt().reshape(-1) for v, bc in adam])
            self._add(slot, slice(_R["csum"], _R["csum"] + 1), root[None])

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
