"""The monitor's columns: which sums the device keeps, and which rows the host forms from them.

The device keeps one column of sums (:mod:`thermosgd.monitor.stats`) per

* scale-invariant group (a channel, a GroupNorm group, a whole layer: :mod:`.groups`);
* weight matrix (a parameter with two or more dimensions) outside every such group: not
  scale-invariant, it gets rows of its own, with the rotational-equilibrium prediction of its
  optimizer as an approximation (the gradient is not orthogonal to it, P2 does not hold, so the
  norm balance of eq. 19 holds only up to the radial force E[g . w]);
* ``other``: every remaining trained element (biases, norm gains), summed, never predicted.

Every sum adds over coordinates, so a union of columns is the sum of their columns and the host
forms two more kinds of row after a flush, exactly: one per layer split into several groups (the
union of a layer's channels is scale-invariant too), and ``all``, the union of every
scale-invariant group (the paper's w). Each row has a ``level``:

=========  ====================================================================================
level      the row
=========  ====================================================================================
group      a scale-invariant group that is a part of a layer (``conv1.weight[3]``)
layer      a whole weight: its one group, the sum of its groups, or a matrix that is not
           scale-invariant (``scale_invariant`` False, approximate prediction)
other      the remaining trained elements
all        the union of the scale-invariant groups
=========  ====================================================================================

Hyperparameters are per element, so the device keeps a column per (row, optimizer parameter
group): a group whose weights decay and whose bias does not (the usual recipe: no weight decay on
biases and norm gains) is two device columns summed on the host. A row shows the d-weighted mean
learning rate and the norm-weighted weight decay lambda = sum_k lambda_k |w_k|^2 / |w|^2, the
rate at which decay shrinks |w|^2, which is what enters the norm balance (eq. 19); it is
predicted while its parameter groups agree on the optimizer and the learning rate (a row whose
parts move at different rates has no single equilibrium). With one decay rate this is exact;
with several, heavy ball's and Nesterov's correction for the decay their buffer carries
(:mod:`thermosgd.monitor.predictions`) uses the same mean, an O(eta' lambda) approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LEVELS", "OTHER", "UNION", "Layout", "layout"]

LEVELS = ("group", "layer", "other", "all")
UNION, OTHER = "all", "other"


@dataclass(frozen=True)
class Layout:
    """Rows of the monitor, device columns first. Arrays have one entry per row."""

    names: list[str]  # the rows' ``group``
    layers: list[str]  # the weight each row belongs to ("other", "all" for those rows)
    levels: list[str]  # LEVELS
    scale_invariant: np.ndarray  # (C,) bool
    d: np.ndarray  # (C,) elements per row
    share: np.ndarray  # (C, P) fraction of a row's elements in each parameter group
    stored: int  # columns summed on the device
    members: tuple  # per row, the device columns it sums
    column_group: np.ndarray  # (stored,) the optimizer parameter group of each device column
    groups: int  # scale-invariant groups (the first rows)
    matrices: tuple  # parameter names with rows of their own (not scale-invariant)

    def expand(self, table: np.ndarray, n_index: int) -> np.ndarray:
        """(logs, RAW, stored) device sums -> (logs, RAW, rows); the sum at ``n_index`` (the
        noise window's length) is the same in every column and is copied, not added."""
        out = self._sum(table)
        first = [m[0] if m else 0 for m in self.members]
        out[:, n_index] = table[:, n_index][:, first]
        return out

    def _sum(self, x: np.ndarray) -> np.ndarray:
        """(..., stored) -> (..., rows): each row the sum of its device columns (NaN for none)."""
        out = np.full(x.shape[:-1] + (len(self.members),), np.nan)
        single = [k for k, m in enumerate(self.members) if len(m) == 1]
        out[..., single] = x[..., [self.members[k][0] for k in single]]
        for k, m in enumerate(self.members):
            if len(m) > 1:
                out[..., k] = x[..., list(m)].sum(-1)
        return out

    def hyperparameters(self, hyper: list, r0sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per log and row, the d-weighted mean learning rate and the norm-weighted weight
        decay; ``hyper`` a list over logs of [(lr, wd) per parameter group], ``r0sq`` (logs,
        stored) the device columns' |w|^2. Each (logs, C)."""
        h = np.asarray(hyper, dtype=float)  # (logs, P, 2)
        decay = h[:, self.column_group, 1]  # (logs, stored)
        with np.errstate(divide="ignore", invalid="ignore"):
            wd = self._sum(decay * r0sq) / self._sum(r0sq)
        uniform = np.all(decay == decay[:, :1], axis=1, keepdims=True) if decay.size else True
        # one decay rate everywhere, or a row without weights (all zero): its rate as given
        wd = np.where(np.isfinite(wd) | ~uniform, wd, h[:, :1, 1])
        return h[:, :, 0] @ self.share.T, wd

    def prediction_blocks(self, hyper: list, theories: list) -> list[tuple[list[int], object]]:
        """[(rows, theory optimizer or None)]: rows predicted with one parameter group's
        optimizer (``other`` never; a row over several groups only while they agree on the
        optimizer and the learning rate)."""
        h = np.asarray(hyper, dtype=float)  # (logs, P, 2)
        blocks: dict[int | None, list[int]] = {}
        for row in range(len(self.names)):
            used = np.flatnonzero(self.share[row] > 0)
            key = None
            if self.levels[row] != "other" and len(used):
                first = used[0]
                same = all(theories[k] is not None and theories[first] is not None
                           and theories[k].to_dict() == theories[first].to_dict()
                           and np.array_equal(h[:, k, 0], h[:, first, 0]) for k in used[1:])
                key = int(first) if theories[first] is not None and same else None
            blocks.setdefault(key, []).append(row)
        return [(rows, None if k is None else theories[k]) for k, rows in blocks.items()]


def _row_counts(p: torch.Tensor) -> int:
    return p.shape[0] if p.dim() and p.shape[0] else 1


def layout(groups, params, names, param_group, param_groups: int):
    """The rows for scale-invariant ``groups`` of the trained ``params`` (named ``names``, in
    optimizer parameter groups ``param_group``). Returns (Layout, per parameter an int64 tensor
    mapping each of its rows (dim 0; one for a scalar) to its device column)."""
    index = {n: k for k, n in enumerate(names)}
    rows = [torch.full((_row_counts(p),), -1, dtype=torch.int64) for p in params]
    for gid, g in enumerate(groups):
        for name in g.params:
            rows[index[name]][list(g.rows)] = gid
    si = len(groups)
    matrices = [k for k, (p, r) in enumerate(zip(params, rows))
                if p.dim() >= 2 and bool((r < 0).all())]
    for j, k in enumerate(matrices):
        rows[k][:] = si + j
    has_other = any(bool((r < 0).any()) for r in rows)
    base = si + len(matrices) + int(has_other)  # rows kept on the device, before the split
    for r in rows:
        r[r < 0] = base - 1
    # one device column per (row, parameter group), in row order
    pairs = sorted({(int(b), k) for r, k in zip(rows, param_group) for b in r.unique()})
    column = {pair: j for j, pair in enumerate(pairs)}
    rows = [torch.tensor([column[(int(b), k)] for b in r], dtype=torch.int64)
            for r, k in zip(rows, param_group)]
    members = [[] for _ in range(base)]
    for j, (b, _) in enumerate(pairs):
        members[b].append(j)
    counts = np.zeros((len(pairs), param_groups))  # elements of each column per group
    for p, r, k in zip(params, rows, param_group):
        np.add.at(counts[:, k], r.numpy(), max(p.numel(), 1) // r.numel())
    per_layer: dict[str, list[int]] = {}
    for gid, g in enumerate(groups):
        per_layer.setdefault(g.layer, []).append(gid)
    split = {layer: ids for layer, ids in per_layer.items() if len(ids) > 1}
    members += [[j for b in ids for j in members[b]] for ids in split.values()]
    members.append([j for b in range(si) for j in members[b]])
    counts = np.stack([counts[m].sum(0) for m in members])  # (rows, P)
    d = counts.sum(1)
    share = np.divide(counts, d[:, None], out=np.zeros_like(counts), where=d[:, None] > 0)
    matrix_names = [names[k] for k in matrices]
    other = [OTHER] if has_other else []
    out = Layout(
        names=[g.name for g in groups] + matrix_names + other + list(split) + [UNION],
        layers=[g.layer for g in groups] + matrix_names + other + list(split) + [UNION],
        levels=(["group" if g.layer in split else "layer" for g in groups]
                + ["layer"] * len(matrices) + ["other"] * has_other
                + ["layer"] * len(split) + ["all"]),
        scale_invariant=np.array([True] * si + [False] * (len(matrices) + has_other)
                                 + [True] * len(split) + [si > 0]),
        d=d, share=share, stored=len(pairs), members=tuple(tuple(m) for m in members),
        column_group=np.array([k for _, k in pairs], dtype=np.int64), groups=si,
        matrices=tuple(matrix_names))
    return out, rows
