"""Device-side sums that the monitor takes around ``optimizer.step()``: no host sync until a flush.

Every quantity is a sum over a group's coordinates, and every group is a set of whole rows (dim
0) of parameters, so each sum is formed per parameter as row sums of an elementwise product
(float32 products, float32 row sums, then rows added into their device column in float64 by a
tiny per-row index) and any union of groups (the union of the scale-invariant groups) is a sum
of columns, formed on the host after the flush. At a log step t, with w0 the weights before the
step, w1 after it, u = w1 - w0 and g the mini-batch gradient:

    RAW = (r0sq = w0.w0, gw = g.w0, gg = g.g, uu = u.u, uw = u.w0, ug = u.g,
           s1s1 = |sum_k g_k|^2, s2 = sum_k |g_k|^2, n = K, lag = sum_k g_k.g_(k-1),
           csum = sum sqrt(v_hat), g2v = sum_i (s2_i / K) / (sqrt(v_hat_i) + eps)^2,
           gvw = sum_i g_i w0_i / (sqrt(v_hat_i) + eps))

over the K consecutive steps of the last closed noise window (``noise_window``, the estimates of
:mod:`thermosgd.monitor.predictions`). Angles are formed from u, never from a cosine of w0 and
w1 (a float32 cosine loses angles below ~3e-4 rad). ``csum``, ``g2v`` and ``gvw`` are AdamW's:
its preconditioner summed over the group, the window's mean squared gradient per coordinate in
units of the preconditioner actually applied, v_hat = exp_avg_sq / (1 - beta2^step), and the
gradient's push along w0 as the step applies it (zero for a scale-invariant group).

Memory. Per coordinate the sums keep only the window's sum of gradients (``sum1``: |sum_k g_k|^2
needs it whole) and the last gradient (``prev``: for the lag-1 product, and for u.g, since an
optimizer may change ``.grad`` inside ``step()``, as SGD's foreach Nesterov step without
weight decay does); |g_k|^2 and g_k.g_(k-1) are reduced to row sums at every step. At a log
step that closes a window (every >= noise_window) ``sum1`` has just been reduced and holds w0
across the update: 2x the weights (float32), plus temporaries made a block of rows at a time
(at most 1/16 of the weights, or one small parameter whole). A log inside an open window
(every < noise_window) keeps w0 in a third buffer. An adaptive optimizer (AdamW) adds the
per-coordinate sum of g_k^2 (``sum2``: the weights of ``g2v``; its row sums give the window's
|g_k|^2) and, when logs fall inside windows, the closed window's mean apart: 3x the weights at
every >= noise_window, 5x below.

Kernel launches: products and row sums run one parameter (or block of rows) at a time, two
small kernels per parameter and sum: about 4P per accumulated step and 11P per log (AdamW: 2P
and 20P), P parameters; buffer updates are ``torch._foreach`` calls. No full-model temporary.
"""

from __future__ import annotations

import numpy as np
import torch

from thermosgd.entropy import sphere_entropy
from thermosgd.theory import total_entropy

__all__ = ["RAW", "DeviceStats"]

RAW = ("r0sq", "gw", "gg", "uu", "uw", "ug", "s1s1", "s2", "n", "lag", "csum", "g2v", "gvw")
_R = {name: k for k, name in enumerate(RAW)}


class DeviceStats:
    """Sums for ``params`` whose rows belong to device columns: ``rows[j]`` (int64, one entry per
    row of ``params[j]`` along dim 0, one for a scalar) holds each row's column in
    0..``columns``-1.

    ``capacity``: log steps held on the device between two flushes; ``noise_window``: steps
    per gradient-noise estimate; ``every``: steps between logs (below ``noise_window`` logs fall
    inside open windows); ``adaptive``: keep what AdamW's sums need.
    ``before()`` of a log step follows ``accumulate()`` of the same step.
    """

    # temporaries are made a block of rows at a time: at most 1/16 of the weights, and at least
    # this many elements, so a small model's parameters stay whole (fewer kernels)
    block_elements = 1 << 18

    def __init__(self, params: list[torch.Tensor], rows: list[torch.Tensor], columns: int, *,
                 capacity: int, noise_window: int, every: int, adaptive: bool = False):
        self.params = params
        device = params[0].device
        self.counts = [int(r.numel()) for r in rows]  # rows per parameter
        self.widths = [p.numel() // c for p, c in zip(params, self.counts)]  # weights per row
        ends = np.cumsum(self.counts)
        self.spans = [slice(int(e) - c, int(e)) for c, e in zip(self.counts, ends)]
        self.row_column = torch.cat([r.reshape(-1) for r in rows]).to(device)  # (rows,)
        self._row_columns = [r.reshape(-1).clone() for r in rows]  # host copies, for snapshots
        n_rows = int(ends[-1])
        self.buffer = torch.full((capacity, len(RAW), columns), float("nan"), dtype=torch.float64,
                                 device=device)  # (logs, RAW, columns)
        self.noise = torch.full((4, columns), float("nan"), dtype=torch.float64,
                                device=device)  # last closed window: s1s1, s2, n, lag
        self.sum1 = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.prev = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.sum2 = [torch.zeros_like(p, dtype=torch.float32) for p in params] if adaptive \
            else None
        self.window_rows = torch.zeros(2, n_rows, dtype=torch.float64,
                                       device=device)  # open window's |g_k|^2, g_k.g_(k-1)
        self._rows = torch.zeros(3, n_rows, dtype=torch.float32, device=device)  # scratch
        self._gg = torch.zeros(n_rows, dtype=torch.float32, device=device)  # this step's |g|^2
        # per parameter: its (rows, weights per row) and its slice of each row-sum vector
        self._shapes = list(zip(self.counts, self.widths))
        block = max(self.block_elements, sum(p.numel() for p in params) // 16)
        self._blocks = []  # per parameter, its blocks of rows
        for c, w in self._shapes:
            n = max(1, block // max(w, 1))  # rows per block
            self._blocks.append([slice(a, a + n) for a in range(0, c, n)])
        self._out = [[r[s] for s in self.spans] for r in self._rows]
        self._gg_out = [self._gg[s] for s in self.spans]
        self.inside = every < noise_window  # logs fall inside open windows
        self.mean_square = None  # the closed window's sum2 / K per coordinate, for AdamW
        self._mean_square = self._spare_w0 = None  # their own buffers, made when first needed
        self.window = noise_window
        self.counted = 0  # steps in the open noise window
        self._zeros = {}
        self._w0 = None
        self.queue, self._snapshot, self.snapshots = None, [], 0

    # ---- helpers -----------------------------------------------------------------------------

    def _grads(self) -> list[torch.Tensor]:
        # called at every step of a noise window: kept to one pass over the parameters
        zeros = self._zeros
        grads = [p.grad if p.grad is not None
                 else zeros.setdefault(k, torch.zeros_like(p))  # a frozen or unused parameter
                 for k, p in enumerate(self.params)]
        return [g if g.dtype == torch.float32 else g.float() for g in grads]

    def _row_sum(self, j: int, values: torch.Tensor, out: list[torch.Tensor]) -> None:
        """Row sums of parameter j's ``values`` into ``out[j]`` (float32; the sum is cascaded
        on the CPU and a tree on the GPU: rounding does not grow with the row's length)."""
        torch.sum(values.reshape(self._shapes[j]), 1, out=out[j])

    def _row_dot(self, j: int, x: torch.Tensor, y: torch.Tensor, out: list[torch.Tensor]) -> None:
        """Row sums of parameter j's ``x * y`` into ``out[j]``, a block of rows at a time."""
        blocks = self._blocks[j]
        if len(blocks) == 1:
            self._row_sum(j, x * y, out)
            return
        x, y = x.reshape(self._shapes[j]), y.reshape(self._shapes[j])
        for rows in blocks:
            torch.sum(x[rows] * y[rows], 1, out=out[j][rows])

    def _into(self, target: torch.Tensor, rows: torch.Tensor) -> None:
        """Rows (k, rows) added into their columns of ``target`` (k, columns), in float64."""
        target.zero_().index_add_(1, self.row_column, rows.double())

    def _w0_buffer(self) -> list[torch.Tensor]:
        """Where w0 waits for the update: ``sum1`` once the window is closed, else a buffer."""
        if self.counted == 0:
            return self.sum1
        if self._spare_w0 is None:
            self._spare_w0 = [torch.empty_like(s) for s in self.sum1]
        return self._spare_w0

    # ---- the hooks' work -----------------------------------------------------------------------

    @torch.no_grad()
    def accumulate(self) -> None:
        """One step's gradient into the open noise window (no sync).

        Besides sum g and sum |g|^2 it keeps sum g_k . g_(k-1) over consecutive steps: the lag-1
        autocovariance separates the full-batch gradient from the noise (see
        :mod:`thermosgd.monitor.predictions`)."""
        grads = self._grads()
        first = self.counted == 0
        gg, lag = self._gg_out, self._out[0]
        for j, (g, prev) in enumerate(zip(grads, self.prev)):
            if self.sum2 is None:  # else the window's |g_k|^2 come from sum2 at its close
                self._row_dot(j, g, g, gg)
            if not first:
                self._row_dot(j, g, prev, lag)
        if first:  # the window opens: its buffers start from this step (sum1 may hold w0)
            self.window_rows.zero_()
            torch._foreach_copy_(self.sum1, grads)
            if self.sum2 is not None:
                if self.mean_square is self.sum2:
                    self.mean_square = None
                torch._foreach_copy_(self.sum2, grads)
                torch._foreach_mul_(self.sum2, grads)
        else:
            self.window_rows[1].add_(self._rows[0])
            torch._foreach_add_(self.sum1, grads)
            if self.sum2 is not None:
                torch._foreach_addcmul_(self.sum2, grads, grads)
        if self.sum2 is None:
            self.window_rows[0].add_(self._gg)
        torch._foreach_copy_(self.prev, grads)
        self.counted += 1

    @torch.no_grad()
    def close_window(self, keep_mean_square: bool = False) -> None:
        """Close the noise window into ``self.noise`` once it has ``noise_window`` steps;
        ``keep_mean_square``: keep sum2 / K per coordinate for AdamW's weighted sums."""
        if self.counted < max(self.window, 2):
            return
        torch._foreach_mul_(self.sum1, self.sum1)  # sum1 is free once reduced: squared in place
        s1s1, s2 = self._rows[0], self._rows[1]
        for j, s in enumerate(self.sum1):
            self._row_sum(j, s, self._out[0])
            if self.sum2 is not None:
                self._row_sum(j, self.sum2[j], self._out[1])
        if self.sum2 is not None:
            self.window_rows[0].copy_(s2)
        # (4, rows): s1s1, s2, n (filled below), lag
        self._into(self.noise, torch.stack([s1s1.double(), self.window_rows[0],
                                            torch.zeros_like(self.window_rows[0]),
                                            self.window_rows[1]]))
        self.noise[2].fill_(float(self.counted))
        if keep_mean_square and self.sum2 is not None:
            if self.inside:  # later logs of the next window still read this one's mean
                if self._mean_square is None:
                    self._mean_square = [torch.empty_like(s) for s in self.sum2]
                torch._foreach_copy_(self._mean_square, self.sum2)
                self.mean_square = self._mean_square
            else:
                self.mean_square = self.sum2
            torch._foreach_mul_(self.mean_square, 1.0 / self.counted)
        self.counted = 0

    @torch.no_grad()
    def before(self, slot: int) -> None:
        """At a log step, before the update: |w0|^2, g.w0, |g|^2; keeps w0."""
        w0 = self._w0_buffer()
        torch._foreach_copy_(w0, [p.detach() for p in self.params])
        out = self._out
        for j, (w, g) in enumerate(zip(w0, self.prev)):  # prev: this step's gradient
            self._row_dot(j, w, w, out[0])
            self._row_dot(j, g, w, out[1])
            if self.sum2 is not None:  # else accumulate() has summed it
                self._row_dot(j, g, g, out[2])
        if self.sum2 is None:
            self._rows[2].copy_(self._gg)
        self._into(self.buffer[slot, _R["r0sq"]:_R["gg"] + 1], self._rows)
        self._w0 = w0

    @torch.no_grad()
    def after(self, slot: int, adam: list | None) -> None:
        """At a log step, after the update: u.u, u.w0, u.g, the noise window, AdamW's sums.

        ``adam``: per parameter (exp_avg_sq, bias correction 1 - beta2^step, eps), or None.
        """
        w0, self._w0 = self._w0, None
        out = self._out
        for j, (p, w, g) in enumerate(zip(self.params, w0, self.prev)):
            p, w, g = (t.reshape(self._shapes[j]) for t in (p, w, g))
            for rows in self._blocks[j]:
                u = p[rows] - w[rows]  # float32 (w is), exact while w1 and w0 are close
                torch.sum(u * u, 1, out=out[0][j][rows])
                torch.sum(u * w[rows], 1, out=out[1][j][rows])
                torch.sum(u * g[rows], 1, out=out[2][j][rows])
        self._into(self.buffer[slot, _R["uu"]:_R["ug"] + 1], self._rows)
        self.buffer[slot, _R["s1s1"]:_R["lag"] + 1].copy_(self.noise)
        if self.queue is not None:  # a snapshot of the small groups, for their entropy
            self._keep_snapshot()
        if adam is not None:
            self._adam_sums(slot, adam, w0)

    def _adam_sums(self, slot: int, adam: list, w0: list) -> None:
        """csum = sum sqrt(v_hat), g2v = sum mean_square / (sqrt(v_hat) + eps)^2 and
        gvw = sum g w0 / (sqrt(v_hat) + eps)."""
        out, mean_square = self._out, self.mean_square
        for j, (v, correction, eps) in enumerate(adam):
            v = v.reshape(self._shapes[j])
            w, g = (t.reshape(self._shapes[j]) for t in (w0[j], self.prev[j]))
            for rows in self._blocks[j]:
                root = v[rows].float().div(correction).sqrt_()  # new: v is not touched
                torch.sum(root, 1, out=out[0][j][rows])
                root.add_(eps)
                torch.sum(g[rows] * w[rows] / root, 1, out=out[2][j][rows])
                if mean_square is not None:
                    weight = mean_square[j].reshape(self._shapes[j])[rows]
                    torch.sum(weight / root.square_(), 1, out=out[1][j][rows])
        if mean_square is None:  # no closed window yet
            self._rows[1].fill_(float("nan"))
        self._into(self.buffer[slot, _R["csum"]:_R["gvw"] + 1], self._rows)

    def take(self, logs: int):
        """The first ``logs`` slots on the host (logs, RAW, columns): the flush's one sync."""
        # flush point: the one device-to-host copy (a copy on the CPU too: the slots are reused)
        return self.buffer[:logs].to("cpu", copy=True).numpy()

    # ---- entropy snapshots -------------------------------------------------------------------

    def keep_snapshots(self, size: int, columns: list[int]) -> list[tuple[int, torch.Tensor]]:
        """Keep the last ``size`` log-step snapshots of the weights of ``columns`` (N, E).

        Returns (column, positions of its weights in a snapshot) for each column that has
        weights, in the weights' flat order (parameter, row, element)."""
        device = self.row_column.device
        wanted = torch.tensor(columns, dtype=torch.int64)
        positions = {c: [] for c in columns}
        start = 0
        for j, (p, row_column) in enumerate(zip(self.params, self._row_columns)):
            picked = torch.nonzero(torch.isin(row_column, wanted)).reshape(-1)  # (k,) rows
            if not len(picked):
                continue
            width = self.widths[j]
            for k, row in enumerate(picked.tolist()):
                first = start + k * width
                positions[int(row_column[row])].append(torch.arange(first, first + width))
            self._snapshot.append((j, picked.to(device), slice(start, start + len(picked) * width)))
            start += len(picked) * width
        self.queue = torch.zeros(size, start, dtype=torch.float32, device=device)
        return [(c, torch.cat(positions[c])) for c in columns if positions[c]]

    def _keep_snapshot(self) -> None:
        row = self.queue[self.snapshots % self.queue.shape[0]]
        for j, picked, part in self._snapshot:
            w1 = self.params[j].detach().reshape(self.counts[j], self.widths[j])
            row[part].view(len(picked), -1).copy_(w1.index_select(0, picked))
        self.snapshots += 1

    def entropies(self, groups, logs: int, columns: int) -> dict:
        """Sphere and total entropy (eq. 26-28) of each small group's snapshots, on the flush's
        last log once the queue is full (NaN elsewhere); ``groups``: (column, positions in the
        queue) from :meth:`keep_snapshots`. Host syncs: a flush point."""
        out = {k: np.full((logs, columns), np.nan) for k in ("entropy_sphere", "entropy")}
        if self.queue is not None and self.snapshots >= self.queue.shape[0]:
            for k, part in groups:
                sample = self.queue[:, part.to(self.queue.device)]  # (N, d_g)
                s = float(sphere_entropy(sample))
                radius = float(sample.double().norm(dim=1).mean())
                out["entropy_sphere"][-1, k] = s
                out["entropy"][-1, k] = float(total_entropy(s, radius, sample.shape[1]))
        return {k: v.reshape(-1) for k, v in out.items()}
