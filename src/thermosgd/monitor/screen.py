"""The screen: which blocks of a weight's rows may be scale-invariant, from one backward pass.

Every trained weight of dim >= 2 that no structural rule names (of a module the pass called,
embeddings aside) is screened by a backward pass per random projection r of the outputs (two,
each output tensor divided by its norm): g . w summed over a block P of rows (and their bias)
is d(r . f(alpha w_P)) / d log alpha at alpha = 1, the block's radial derivative, zero for a
scale-invariant block (P2: grad L . w = 0). One backward pass gives it for every partition of
every layer's rows. A partition passes when the radial derivatives of its blocks, added in
quadrature (the forward test scales blocks by independent factors), stay below
SCREEN_TOLERANCE and below SCREEN_RATIO of a yardstick: for the rows alone, their tangential
derivatives (measured: at most 2e-3 of them for invariant rows, 0.06 and more for rows that
are not); for coarser blocks, the rows' own radial derivatives, which an invariant block
cancels (to 1e-5 and below measured) and a layer that is not invariant sums to 0.17-0.6 of
their size. The ratio keeps out a layer the output barely depends on (a residual branch behind
a layer scale of 1e-6), whose derivatives are all small. Partitions are tried finest first:
each row; each row with its bias; blocks of d rows for each divisor d (heads), without and
with the bias; the whole layer, without and with the bias. A layer whose rows are
scale-invariant in two kinds at once (a fused qkv projection: q's and k's heads, not v's) has
no partition that passes: the structural rule names those.

The tolerances. The radial derivative is per unit log alpha of outputs divided by their norms,
the forward test's measure (:data:`thermosgd.monitor.scaling.TOLERANCE`, 1e-2) to first order;
at alpha = 1 it carries the whole eps / sigma^2 of the normalizations, twice the forward test's
share at alpha >= 2: SCREEN_TOLERANCE is three times TOLERANCE.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from thermosgd.monitor.groups import _tensors

__all__ = ["screen"]

SCREEN_TOLERANCE = 3e-2  # largest radial derivative of a proposed partition, per unit log alpha
SCREEN_RATIO = 0.02  # largest radial derivative of a partition against its yardstick
PROJECTIONS = 2  # random projections of the outputs differentiated
_SEED = 20261209


def screen(probe, layers, rounds: int) -> dict[str, list]:
    """{weight: [(blocks, with its bias), ...]}: the partitions of each layer's rows that
    pass the screen, finest first, at most ``rounds``; ``probe`` runs the pass
    (:class:`thermosgd.monitor.scaling._Probe`)."""
    names = [n for pair in layers for n in pair if n]
    tensors = [probe.params[n] for n in names]
    out = [t for t in _tensors(probe.run(grad=True)) if t.is_floating_point()]
    probe.repeat(out)
    out = [t for t in out if t.requires_grad]
    if not out or probe.note:
        return {}
    gen = torch.Generator().manual_seed(_SEED)
    radial = {n: [] for n in names}
    squares = {n: [] for n in names}
    for k in range(PROJECTIONS):
        loss = sum((torch.randn(t.shape, generator=gen).to(t) * t).sum()
                   / t.detach().norm().clamp_min(1e-30) for t in out)
        grads = torch.autograd.grad(loss, tensors, retain_graph=k + 1 < PROJECTIONS,
                                    allow_unused=True)
        probe.backward += 1
        for n, p, g in zip(names, tensors, grads):
            g = torch.zeros_like(p) if g is None else g.double()
            radial[n].append((g * p.detach().double()).reshape(p.shape[0], -1).sum(1))
            squares[n].append(g.pow(2).reshape(p.shape[0], -1).sum(1))
    stats = {}  # host copies, once: (K, rows) radial, (K, rows) |g|^2, (rows,) |w|^2
    for n, p in zip(names, tensors):
        stats[n] = (torch.stack(radial[n]).cpu().numpy(), torch.stack(squares[n]).cpu().numpy(),
                    p.detach().double().pow(2).reshape(p.shape[0], -1).sum(1).cpu().numpy())
    options = {w: _ladder(stats[w], stats[b] if b else None, rounds) for w, b in layers}
    return {w: o for w, o in options.items() if o}


def _ladder(weight, bias, rounds: int) -> list:
    """The partitions of a layer's rows whose radial derivative passes, finest first."""
    rows = weight[2].shape[0]
    out, yardstick = [], None
    for d in (d for d in range(1, rows + 1) if rows % d == 0):
        for with_bias in (False, True) if bias is not None else (False,):
            a, g2, w2 = weight if not with_bias else (x + y for x, y in zip(weight, bias))
            s = a.reshape(len(a), rows // d, d).sum(-1)  # (K, blocks)
            g2 = g2.reshape(len(a), rows // d, d).sum(-1)
            w2 = w2.reshape(rows // d, d).sum(-1)
            radial = math.sqrt(float(np.mean((s**2).sum(-1))))
            if yardstick is None:  # the rows alone: against their tangential derivatives
                yardstick = math.sqrt(float(np.mean(np.clip(g2 * w2 - s**2, 0, None).sum(-1))))
            # a block without gradient (a channel no input reaches) adds nothing: its
            # layer's other blocks decide, and a layer without any gradient has no yardstick
            if radial < min(SCREEN_TOLERANCE, SCREEN_RATIO * yardstick):
                out.append(([tuple(range(j, j + d)) for j in range(0, rows, d)], with_bias))
                if len(out) == rounds:
                    return out
            if d == 1 and not with_bias:  # coarser blocks: against the rows' radial ones
                yardstick = radial
    return out
