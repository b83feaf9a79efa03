"""Heavy-ball and Nesterov momentum and AdamW on G stacked weight vectors, as torch.optim does.

A protocol (``thermosgd.protocols``) sets the per-step learning rate: eta (fixed LR) or
eta_eff ||w||^2 (fixed ELR, eq. 8); the optimizer turns the mini-batch gradient g into the step.
With torch.optim's semantics (``SGD(momentum, nesterov, weight_decay)``,
``AdamW(betas, eps, weight_decay)``), for weights w (G, d) and per-configuration (G, 1)
hyperparameters:

* momentum:  p = g + lambda w;  b <- beta b + p (b = p at the first step);  w <- w - eta b
* nesterov:  p and b as above;  w <- w - eta (p + beta b)
* adamw:     w <- w (1 - eta lambda);  m <- m + (1 - beta1) (g - m);
             v <- beta2 v + (1 - beta2) g^2;  t <- t + 1;
             w <- w - eta / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Weight decay sits inside the momentum buffer (torch's SGD) and is decoupled for AdamW. The
theory of the stationary state these reach is ``thermosgd.theory.optimizers``. Plain SGD has no
state and is not handled here: the engine keeps the protocol's own update for it.

The state (buffers (G, d), AdamW's step count) lives on the training device, one row per
configuration, and is checkpointed with the weights.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BatchedOptimizer", "preconditioner"]


def _column(values, like: torch.Tensor) -> torch.Tensor:
    """(G,) floats as a (G, 1) tensor of ``like``'s dtype and device, made once (no per-step
    host copies)."""
    return torch.as_tensor(np.asarray(values, dtype=float), dtype=like.dtype,
                           device=like.device)[:, None]


class BatchedOptimizer:
    """The optimizer state of G configurations sharing one optimizer kind.

    ``records``: one ``thermosgd.theory.optimizers.Optimizer`` per configuration (the same
    name, possibly different momenta); ``protocols``: their protocols (fixed LR or fixed ELR),
    whose learning rate and weight decay the step takes; ``weights`` (G, d) gives shape, dtype
    and device.
    """

    def __init__(self, records, protocols, weights: torch.Tensor):
        names = {r.name for r in records}
        if len(names) != 1 or "sgd" in names:
            raise ValueError("one optimizer kind per batch, and not plain SGD")
        self.name = names.pop()
        self.kind = protocols[0].name
        if self.kind not in ("fixed-lr", "fixed-elr"):
            raise ValueError(f"the {self.kind} protocol has no optimizer with a state")
        self.lr = _column([p.rate for p in protocols], weights)  # (G, 1) eta or eta_eff
        self.wd = _column([p.weight_decay for p in protocols], weights)  # (G, 1) lambda
        self.beta = _column([r.momentum for r in records], weights)  # (G, 1) beta or beta1
        self.beta2 = _column([r.beta2 for r in records], weights)  # (G, 1)
        self.eps = _column([r.eps for r in records], weights)  # (G, 1)
        self.steps = 0  # optimizer steps taken (AdamW's t); every row resumes from one step
        if self.name == "adamw":
            self.state = {"exp_avg": torch.zeros_like(weights),  # (G, d) m
                          "exp_avg_sq": torch.zeros_like(weights)}  # (G, d) v
        else:
            self.state = {"momentum_buffer": torch.zeros_like(weights)}  # (G, d) b

    def _rate(self, w: torch.Tensor) -> torch.Tensor:
        """The per-step learning rate (G, 1): eta, or eta_eff ||w||^2 (fixed ELR, eq. 8)."""
        if self.kind == "fixed-elr":
            return self.lr * w.square().sum(1, keepdim=True)
        return self.lr

    def step(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The weights after one step from ``w`` with mini-batch gradient ``g`` (both (G, d));
        updates the state in place. Device work only: no host sync."""
        eta = self._rate(w)  # (G, 1)
        self.steps += 1
        if self.name == "adamw":
            m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
            m.lerp_(g, 1 - self.beta)
            v.mul_(self.beta2).addcmul_(g, g * (1 - self.beta2))
            # bias corrections from the (G, 1) betas on the device: the step count is a Python
            # int, so nothing is read back
            first = 1 - self.beta ** self.steps  # (G, 1)
            second = (1 - self.beta2 ** self.steps).sqrt()  # (G, 1)
            denom = (v.sqrt() / second).add_(self.eps)
            return w * (1 - eta * self.wd) - (eta / first) * (m / denom)
        p = g + self.wd * w  # weight decay inside the buffer (torch's SGD)
        b = self.state["momentum_buffer"]
        if self.steps == 1:
            b.copy_(p)  # torch starts the buffer at the first step's p, not at beta * 0 + p
        else:
            b.mul_(self.beta).add_(p)
        direction = p + self.beta * b if self.name == "nesterov" else b
        return w - eta * direction

    def select(self, rows: torch.Tensor) -> None:
        """Keep configurations ``rows`` (indices into the G axis), as the engine's retire."""
        for key in ("lr", "wd", "beta", "beta2", "eps"):
            setattr(self, key, getattr(self, key).index_select(0, rows))
        self.state = {k: t.index_select(0, rows) for k, t in self.state.items()}

    def row_state(self, j: int) -> dict:
        """Configuration j's state for its checkpoint (host copies: a log point)."""
        return {"name": self.name, "steps": self.steps,
                **{k: t[j].detach().cpu() for k, t in self.state.items()}}

    def load_row(self, j: int, record: dict) -> None:
        """Restore configuration j from :meth:`row_state`'s record."""
        if record.get("name") != self.name:
            raise ValueError(f"the checkpoint holds {record.get('name')!r} state, the run "
                             f"trains with {self.name!r}")
        self.steps = int(record["steps"])
        with torch.no_grad():
            for k, t in self.state.items():
                t[j].copy_(record[k])

    def preconditioner(self) -> torch.Tensor | None:
        """AdamW's c = mean over coordinates of sqrt(v_hat) + eps, per configuration (G,); None
        for momentum. It is the factor by which AdamW divides the gradient, so T and p are those
        of SGD at eta / c and lambda c (``thermosgd.theory.optimizers``)."""
        if self.name != "adamw" or self.steps == 0:
            return None
        return preconditioner(self.state["exp_avg_sq"], self.beta2[:, 0], self.eps[:, 0],
                              self.steps)


def preconditioner(exp_avg_sq: torch.Tensor, beta2, eps, steps: int) -> torch.Tensor:
    """mean_i sqrt(v_i / (1 - beta2^t)) + eps over the last axis of ``exp_avg_sq`` (G, d)."""
    beta2 = torch.as_tensor(beta2, dtype=torch.float64, device=exp_avg_sq.device)
    eps = torch.as_tensor(eps, dtype=torch.float64, device=exp_avg_sq.device)
    v_hat = exp_avg_sq.double() / (1 - beta2 ** steps)[..., None]
    return v_hat.sqrt().mean(-1) + eps
