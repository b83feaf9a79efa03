"""What is measured at a log point of a network run (section 6, appendices F and G).

Every quantity refers to the scale-invariant weights w (flattened, d of them) and to their
direction w_bar = w / ||w||. Gradients are taken at w and rescaled to the unit sphere with P1,
grad L(w_bar) = ||w|| grad L(w), so norms and covariances are those of eq. 3 and 119-121.

Tr Sigma without extra gradients
--------------------------------
The paper's code draws 4000 extra mini-batch gradients at every log point to estimate
Tr Sigma_w_bar = E||grad L_B(w_bar) - grad L(w_bar)||^2. We take one pass over the training set
cut into K = floor(n / B) disjoint mini-batches of size B (a fresh random permutation per pass).
The same pass gives the full-train-set loss and accuracy and the full gradient, so the covariance
costs nothing beyond them. For batches drawn without replacement from n samples, with
g_hat = mean_k g_k,

    E sum_k ||g_k - g_hat||^2 = (K - 1) n / (n - 1) * E||g_B - grad L||^2,

where g_B is a training batch (B samples drawn with replacement). Hence the unbiased estimate
Tr Sigma = (n - 1) / n * sum_k ||g_k - g_hat||^2 / (K - 1), and
||grad L||^2 = ||g_hat||^2 - Tr Sigma / K * (n - K B) / (n - 1). For CIFAR (K = 390) the relative
standard error is a few per cent; it is reported per log point (``trace_cov_se``) by a
delete-a-group jackknife over 8 groups of batches. More passes (``passes``) shrink it.
BatchNorm makes a batch's gradient depend on its other members; the formulas treat a batch
gradient as a mean of per-sample terms, which is the approximation behind eq. 3 itself.

The paper's conventions (``measurement="paper"``)
-------------------------------------------------
:func:`paper_gradient_statistics` reproduces what the paper's published code measures, so that
a run can be compared with its numbers: the full-train-set loss and gradient from the train set
in order, in BatchNorm batches of 1024 (batch statistics of 1024 samples, not of the B = 128
that SGD sees: on digits U reads about 1 % lower); Tr Sigma from Q = N extra batches of B drawn
with replacement, around that full gradient; both rescaled to the unit sphere with the mean
radius of the entropy queue rather than the log point's ||w||; and a log schedule truncated to
integers rather than rounded (:func:`log_schedule`). One of its CIFAR-100 notebooks averages the
last 60 logs: ``stationary_logs=60``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from thermosgd import theory
from thermosgd.entropy import sphere_entropy
from thermosgd.results.schema import METRIC_COLUMNS

__all__ = [
    "batched_evaluate",
    "batched_gradient_statistics",
    "evaluate",
    "gradient_statistics",
    "log_row",
    "log_schedule",
    "measure_seed",
    "optimizer_columns",
    "paper_gradient_statistics",
    "queue_entropy",
    "state_columns",
]


_JACKKNIFE_GROUPS = 8
PAPER_FULL_BATCH = 1024  # the paper code's BatchNorm batches for the full-train-set pass


def log_schedule(iterations: int, *, every: int = 200, linear_until: int = 10_000,
                 log_points: int = 150, truncate: bool = False) -> np.ndarray:
    """Iterations at which metrics are logged (appendix F).

    Every ``every`` iterations up to ``linear_until`` (50 logs at the paper's defaults), then
    ``log_points`` log-spaced iterations up to ``iterations`` (rounded, or truncated to integers
    as the paper's code does when ``truncate``; duplicates merge). The last entry is always
    ``iterations``.
    """
    if iterations < 1 or every < 1 or log_points < 0 or linear_until < 0:
        raise ValueError("iterations and every must be >= 1, linear_until and log_points >= 0")
    linear = np.arange(every, min(linear_until, iterations) + 1, every)
    start = max(linear_until, 1)
    tail = np.empty(0, dtype=np.int64)
    if iterations > start and log_points > 0:
        spaced = np.geomspace(start, iterations, log_points + 1)[1:]
        tail = (np.floor(spaced) if truncate else np.round(spaced)).astype(np.int64)
    points = np.unique(np.concatenate([linear, tail, [iterations]]).astype(np.int64))
    return points[(points >= 1) & (points <= iterations)]


def _flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def gradient_statistics(model, params, x, y, *, batch_size: int, passes: int,
                        generator: torch.Generator) -> dict:
    """Full-train-set loss, accuracy, ||grad L(w_bar)||^2 and Tr Sigma_w_bar (module docstring).

    ``model`` is in training mode (batch statistics, the loss SGD minimizes); its BatchNorm
    running statistics are restored afterwards so the measurement does not touch the run.
    ``params``: the scale-invariant parameters. Returns floats (one host sync, at the end).
    """
    saved = {name: b.clone() for name, b in model.named_buffers()}

    def batch_gradients(idx):  # (1, B) -> (1, d), (1,), (1,)
        logits = model(x[idx[0]])
        loss = F.cross_entropy(logits, y[idx[0]])
        correct = (logits.argmax(1) == y[idx[0]]).sum()
        return _flat_grad(loss, params)[None], loss.detach()[None], correct[None]

    r2 = sum(p.detach().square().sum() for p in params)[None]  # ||w||^2, (1,)
    d = sum(p.numel() for p in params)
    try:
        return batched_gradient_statistics(batch_gradients, r2, n=x.shape[0], d=d,
                                           batch_size=batch_size, passes=passes,
                                           generators=[generator])[0]
    finally:
        for name, b in model.named_buffers():
            b.copy_(saved[name])


def batched_gradient_statistics(batch_gradients, r2, *, n: int, d: int, batch_size: int,
                                passes: int, generators: list) -> list[dict]:
    """:func:`gradient_statistics` for G configurations at once.

    ``batch_gradients(idx)`` takes batch indices (G, B) (one batch per configuration) and returns
    the gradients at w (G, d), the losses (G,) and the numbers of correct predictions (G,);
    ``r2`` (G,) holds ||w||^2; ``generators`` one per configuration, for its permutations.
    Returns one dict of floats per configuration (one host sync, at the end).
    """
    k = n // batch_size
    if k < 2:
        raise ValueError(f"the training set has {n} samples: need at least two batches of "
                         f"{batch_size} to estimate Tr Sigma; use a smaller batch size")
    groups = min(_JACKKNIFE_GROUPS, k)
    g_count, device = len(generators), r2.device
    loss_sum = torch.zeros(g_count, dtype=torch.float64, device=device)
    correct = torch.zeros(g_count, dtype=torch.int64, device=device)
    counts = torch.bincount(torch.arange(k) % groups, minlength=groups).to(device, torch.float64)
    traces, grads2, variances = [], [], []
    for _ in range(passes):
        order = torch.stack([torch.randperm(n, generator=gen, device=device)[: k * batch_size]
                             for gen in generators]).view(g_count, k, batch_size)  # (G, K, B)
        s = torch.zeros(g_count, groups, d, dtype=torch.float64, device=device)  # sums of g_k
        q = torch.zeros(g_count, groups, dtype=torch.float64, device=device)  # of ||g_k||^2
        for i in range(k):
            g, loss, right = batch_gradients(order[:, i])
            g = g.double()
            s[:, i % groups] += g
            q[:, i % groups] += g.square().sum(1)
            loss_sum += loss.double()
            correct += right
        total_s, total_q = s.sum(1), q.sum(1)
        trace, grad2 = _pass_estimates(total_s, total_q, float(k), n, batch_size)
        drop = torch.stack([_pass_estimates(total_s - s[:, j], total_q - q[:, j],
                                            float(k) - counts[j], n, batch_size)[0]
                            for j in range(groups)])  # (M, G)
        traces.append(trace)
        grads2.append(grad2)
        variances.append(_jackknife_variance(drop) if groups >= 2
                         else torch.full_like(trace, math.nan))
    r2 = r2.double()
    table = torch.stack([  # (G, 6), one host sync for all of it
        loss_sum / (passes * k), correct.double() / (passes * k * batch_size),
        r2 * torch.stack(grads2).mean(0), r2 * torch.stack(traces).mean(0),
        r2 * torch.stack(variances).sum(0).sqrt() / passes, r2.sqrt()], dim=1).cpu()
    keys = ("train_loss", "train_acc", "full_grad_norm2", "trace_cov", "trace_cov_se", "radius")
    return [dict(zip(keys, row)) for row in table.tolist()]


def paper_gradient_statistics(batch_gradients, r2, queue_r2, *, n: int, d: int,
                              batch_size: int, draws: int, generators: list,
                              full_batch: int = PAPER_FULL_BATCH) -> list[dict]:
    """The paper code's log-point measurement for G configurations (module docstring).

    L(w) = sum_c n_c L_c / n and grad L(w) = sum_c n_c grad L_c / n over the train set in order,
    in chunks c of ``full_batch`` samples (BatchNorm in training mode on each chunk);
    Tr Sigma_w = 1/Q sum_q ||g_q - grad L(w)||^2 over Q = ``draws`` extra batches of
    ``batch_size`` drawn with replacement (one generator per configuration); then on the unit
    sphere (P1, eq. 3) with ``queue_r2`` (G,), the squared mean radius of the entropy queue:
    ||grad L(w_bar)||^2 = queue_r2 ||grad L(w)||^2, Tr Sigma_w_bar = queue_r2 Tr Sigma_w.
    ``batch_gradients`` as in :func:`batched_gradient_statistics`, for batches (G, b) of any
    size b; ``r2`` (G,): ||w||^2, reported as the radius. ``trace_cov_se`` is the standard
    error of the mean over the Q draws. One dict of floats per configuration (one host sync).
    """
    if draws < 2:
        raise ValueError(f"the paper's Tr Sigma needs at least 2 extra batches, got {draws}")
    g_count, device = len(generators), r2.device
    grad = torch.zeros(g_count, d, dtype=torch.float64, device=device)  # (G, d)
    loss = torch.zeros(g_count, dtype=torch.float64, device=device)  # (G,)
    correct = torch.zeros(g_count, dtype=torch.int64, device=device)  # (G,)
    for start in range(0, n, full_batch):
        idx = torch.arange(start, min(start + full_batch, n), device=device)
        g, chunk_loss, right = batch_gradients(idx.expand(g_count, -1))  # (G, d), (G,), (G,)
        weight = idx.numel() / n  # chunks are weighted by their size: the last one is short
        grad += weight * g.double()
        loss += weight * chunk_loss.double()
        correct += right
    spread = torch.zeros(g_count, dtype=torch.float64, device=device)  # sum of ||g_q - grad||^2
    spread2 = torch.zeros_like(spread)  # and of its squares, for the standard error
    for _ in range(draws):
        idx = torch.stack([torch.randint(0, n, (batch_size,), generator=gen, device=device)
                           for gen in generators])  # (G, B), with replacement
        term = (batch_gradients(idx)[0].double() - grad).square().sum(1)  # (G,)
        spread += term
        spread2 += term.square()
    mean = spread / draws
    se = ((spread2 / draws - mean.square()).clamp(min=0.0) * draws / (draws - 1) / draws).sqrt()
    scale = queue_r2.double()
    table = torch.stack([  # (G, 6), one host sync for all of it
        loss, correct.double() / n, scale * grad.square().sum(1), scale * mean, scale * se,
        r2.double().sqrt()], dim=1).cpu()
    keys = ("train_loss", "train_acc", "full_grad_norm2", "trace_cov", "trace_cov_se", "radius")
    return [dict(zip(keys, row)) for row in table.tolist()]


def _pass_estimates(s, q, k, n, b):
    """(Tr Sigma, ||grad L||^2) at w from K batch gradients with sum s (..., d) and sum of
    squares q (...,); leading axes are configurations."""
    mean2 = s.square().sum(-1) / k**2
    spread = q - k * mean2  # sum_k ||g_k - g_hat||^2
    trace = (n - 1) / n * spread / (k - 1)
    grad2 = torch.clamp(mean2 - trace / k * (n - k * b) / (n - 1), min=0.0)
    return trace, grad2


def _jackknife_variance(estimates):
    """Delete-a-group jackknife variance; ``estimates`` (M, ...) with the groups first."""
    m = estimates.shape[0]
    return (m - 1) / m * (estimates - estimates.mean(0)).square().sum(0)


@torch.no_grad()
def evaluate(model, x, y, *, batch_size: int = 1000) -> tuple[float, float]:
    """Test loss and accuracy in evaluation mode (BatchNorm running statistics), then back to
    training mode. One host sync."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    model.train()
    loss, correct = torch.stack([loss, correct.double()]).cpu().tolist()  # log point: one sync
    return loss / x.shape[0], correct / x.shape[0]


@torch.no_grad()
def batched_evaluate(logits_of, x, y, count: int, *, batch_size: int = 1000) -> list[tuple]:
    """:func:`evaluate` for G configurations at once: ``logits_of(xb)`` returns (G, b, classes)
    for a test batch xb, with BatchNorm already in evaluation mode. One host sync."""
    loss = torch.zeros(count, dtype=torch.float64, device=x.device)  # (G,)
    correct = torch.zeros(count, dtype=torch.int64, device=x.device)  # (G,)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = logits_of(xb)  # (G, b, classes)
        loss += F.cross_entropy(logits.transpose(1, 2), yb.expand(count, -1),
                                reduction="none").sum(1).double()
        correct += (logits.argmax(-1) == yb).sum(1)
    table = torch.stack([loss / x.shape[0], correct.double() / x.shape[0]],
                        dim=1).cpu()  # (G, 2); log point: one sync
    return [tuple(row) for row in table.tolist()]


def queue_entropy(queue: torch.Tensor) -> tuple[float, float]:
    """Sphere entropy of the directions in the queue (eq. 26-27) and the total entropy
    S = S_sphere + (d - 1) log r with r the queue's mean norm (eq. 28)."""
    d = queue.shape[1]
    s_sphere = float(sphere_entropy(queue))  # log point: host syncs
    mean_norm = float(queue.double().norm(dim=1).mean())
    return s_sphere, float(theory.total_entropy(s_sphere, mean_norm, d))


def state_columns(protocol, d: int, *, radius, trace_cov, full_grad_norm2, stoch_grad_norm2,
                  lambda_eff) -> dict:
    """sigma^2, T, p, V and the predicted radius (SDE and appendix G) at one log point.

    sigma^2 = Tr Sigma / (d - 1) (eq. 4); T from the protocol (eq. 5, 13, 19); p = lambda, or the
    measured lambda_eff on the sphere (eq. 83); V = r^2 / 2 with the measured r.

    ``radius_theory`` is the SDE radius from the log point's Tr Sigma (eq. 12, 20, 119 right).
    The appendix-G radius needs E||grad L_B(w_bar)||^2 = Tr Sigma + E||grad L(w_bar)||^2
    (eq. 117): ``radius_theory_corrected`` takes it from the running mean over every training
    step since the previous log (``stoch_grad_norm2``), and ``radius_theory_corrected_logpoint``
    from the log point's own Tr Sigma + ||grad L||^2. Where training is bursty (loss spikes,
    the periodic regime of appendix H) the expectation is dominated by rare steps that the single
    log-point sample misses, and only the running mean estimates it well. On the sphere the
    radius is fixed; the same three predictions are made for lambda_eff (eq. 121).
    """
    sigma2 = trace_cov / (d - 1)
    sphere = protocol.name == "fixed-sphere"
    rate, other = float(protocol.rate), float(protocol.weight_decay_or_radius)
    cols = {
        "sigma2": sigma2,
        "temperature": float(protocol.temperature(sigma2, d)),
        "pressure": lambda_eff if sphere else other,
        "volume": float(theory.volume(radius)),
        "radius_theory": float(protocol.stationary_radius(sigma2, d)),
    }
    if sphere:
        # lambda_eff_discr = eta_eff / (2 r^2) * E||grad L_B(w_bar)||^2, i.e. Tr Sigma -> that
        leff = theory.effective_pressure_from_trace
        cols |= {"radius_theory_corrected": other, "radius_theory_corrected_logpoint": other,
                 "lambda_eff_theory": float(leff(rate, other, trace_cov)),
                 "lambda_eff_theory_corrected": float(leff(rate, other, stoch_grad_norm2)),
                 "lambda_eff_theory_corrected_logpoint": float(
                     leff(rate, other, trace_cov + full_grad_norm2))}
        return cols
    # r*_discr is r*_SDE with Tr Sigma replaced by Tr Sigma + E||grad L||^2 (eq. 119-120)
    cols |= {"radius_theory_corrected": float(theory.stationary_radius_from_trace(
                 protocol.name, rate, other, stoch_grad_norm2)),
             "radius_theory_corrected_logpoint": float(theory.stationary_radius_from_trace(
                 protocol.name, rate, other, trace_cov + full_grad_norm2)),
             "lambda_eff_theory": math.nan, "lambda_eff_theory_corrected": math.nan,
             "lambda_eff_theory_corrected_logpoint": math.nan}
    return cols


def optimizer_columns(protocol, optimizer, d: int, *, radius, trace_cov, full_grad_norm2,
                      stoch_grad_norm2, angular_update, preconditioner=None) -> dict:
    """The optimizer's theory at one log point (``thermosgd.theory.optimizers``).

    Always: the measured angle per step and its equilibrium prediction (heavy ball
    sqrt(2 eta lambda / (1 + beta)), Wan et al. 2021; AdamW Kosson et al. 2024), with the
    per-step eta (eta_eff r^2 at fixed ELR, r measured); the fixed sphere has no prediction
    here. For momentum and AdamW also T, p and the three radii of :func:`state_columns` with
    eta -> eta' and lambda -> lambda': the SDE radius from Tr Sigma, the discrete-step ones
    from Q = Tr Sigma + w ||grad L||^2 (w: ``theory.discrete_gradient_weight``, 1 = appendix G,
    (1 - beta) / (1 + beta) for heavy ball and AdamW, Nesterov's at the log point's share
    rho = ||grad L||^2 / Tr Sigma), taken from the running mean of
    ||grad L_B(w_bar)||^2 less (1 - w) ||grad L||^2 of the log point, and from the log point's
    Tr Sigma + w ||grad L||^2.
    AdamW's T and p use the measured preconditioner c = mean sqrt(v_hat) + eps
    (``preconditioner``); its radius assumes the noise spread over the coordinates.
    """
    from thermosgd.theory import optimizers as opt_theory

    rate, other = float(protocol.rate), float(protocol.weight_decay_or_radius)
    cols = {"angular_update": angular_update, "angular_update_theory": math.nan,
            "preconditioner": math.nan if preconditioner is None else float(preconditioner)}
    if protocol.name == "fixed-sphere":
        return cols
    eta = rate if protocol.name == "fixed-lr" else rate * radius**2  # per-step eta
    share = full_grad_norm2 / trace_cov if trace_cov > 0 else 0.0  # rho, this log point's
    cols["angular_update_theory"] = float(opt_theory.optimizer_angular_update(
        optimizer, eta, other, max(share, 0.0)))
    if optimizer.name == "sgd":
        return cols  # the protocol's own columns (state_columns) stay as they were
    sigma2 = trace_cov / (d - 1)
    if protocol.name == "fixed-lr":
        def predicted(q):
            return float(opt_theory.optimizer_radius_fixed_lr(optimizer, rate, other, q, d))
    else:
        def predicted(q):
            return float(opt_theory.optimizer_radius_fixed_elr(optimizer, rate, other, q))
    weight = float(opt_theory.discrete_gradient_weight(optimizer, max(share, 0.0)))
    c = preconditioner
    if optimizer.adaptive:
        c = c if c is not None else float(opt_theory.adamw_preconditioner(
            trace_cov, radius, d, optimizer.eps))
        temperature = opt_theory.optimizer_temperature(optimizer, eta, radius, sigma2, c)
    elif protocol.name == "fixed-lr":  # eq. 20 with eta -> eta / (1 - beta), as for SGD
        temperature = opt_theory.optimizer_temperature_fixed_lr(optimizer, rate, other, sigma2, d)
    else:  # eta_eff' sigma^2 / 2 (eq. 11 with eta_eff -> eta_eff / (1 - beta))
        temperature = opt_theory.optimizer_temperature(optimizer, eta, radius, sigma2)
    return cols | {
        "temperature": float(temperature),
        "pressure": float(opt_theory.optimizer_pressure(optimizer, other, c)),
        "radius_theory": predicted(trace_cov),
        "radius_theory_corrected": predicted(stoch_grad_norm2 - (1 - weight) * full_grad_norm2),
        "radius_theory_corrected_logpoint": predicted(trace_cov + weight * full_grad_norm2),
        # appendix G's SGD form, Tr Sigma + ||grad L||^2 from the running mean, for comparison
        "radius_theory_corrected_sgd_form": predicted(stoch_grad_norm2)}


def measure_seed(seed: int, iteration: int) -> int:
    """Seed of the measurement pass's permutation at a log point: its own stream, so measuring
    never perturbs the mini-batch stream."""
    return int(np.random.SeedSequence((seed, iteration, 1)).generate_state(1)[0])


def log_row(protocol, d: int, iteration: int, stats: dict, test: tuple, window: dict,
            entropies: tuple, raw_entropies: tuple = (math.nan, math.nan), *, optimizer=None,
            preconditioner=None) -> dict:
    """One metrics row: ``schema.METRIC_COLUMNS`` first, then the extras.

    ``stats``: :func:`gradient_statistics`'s dict; ``test``: (loss, accuracy); ``window``: the
    window means of ``accumulate.WindowSums``; ``entropies`` and ``raw_entropies``: (sphere,
    total) in the aligned and in the paper's raw chart (eq. 26-28; NaN where not recorded);
    ``optimizer``: the run's ``theory.optimizers.Optimizer`` (None: plain SGD), whose theory
    replaces the protocol's (:func:`optimizer_columns`); ``preconditioner``: AdamW's c."""
    row = {"iteration": iteration, **stats, "test_loss": test[0], "test_acc": test[1], **window,
           "entropy_sphere": entropies[0], "entropy": entropies[1],
           "entropy_sphere_raw": raw_entropies[0], "entropy_raw": raw_entropies[1]}
    row |= state_columns(
        protocol, d, radius=stats["radius"], trace_cov=stats["trace_cov"],
        full_grad_norm2=stats["full_grad_norm2"], stoch_grad_norm2=window["stoch_grad_norm2"],
        lambda_eff=window["lambda_eff"])
    if optimizer is not None or "angular_update" in window:
        from thermosgd.theory.optimizers import Optimizer

        row |= optimizer_columns(
            protocol, optimizer or Optimizer(), d, radius=stats["radius"],
            trace_cov=stats["trace_cov"], full_grad_norm2=stats["full_grad_norm2"],
            stoch_grad_norm2=window["stoch_grad_norm2"],
            angular_update=window.get("angular_update", math.nan), preconditioner=preconditioner)
    first = list(METRIC_COLUMNS)
    return {k: row[k] for k in first} | {k: v for k, v in row.items() if k not in first}
