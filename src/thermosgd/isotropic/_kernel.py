"""The compiled loop of the isotropic simulator: noisy GD of eq. 24 for a block of grid points."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from thermosgd.isotropic import _rng

_LANES = 16  # grid points advanced together per thread, laid out for SIMD (see _advance)
OPTIMIZER_CODES = {"sgd": 0, "momentum": 1, "nesterov": 2, "adamw": 3}  # ``opt`` of _advance


@nb.njit(parallel=True, cache=True)
def _advance(w, state, alive, mu, code, rate, decay_or_radius, sigma, start, stop, log_every,
             queue_every, loss_log, radius_log, leff_log, queue, zx, zr, opt, hyper, cuts, buf,
             sq, angle_log, precond_log):  # pragma: no cover
    """Run steps start+1..stop for every grid point; fills logs and the snapshot ring buffer.

    w (G, d), state (G, 4) uint64, alive (G,) bool; code: 0 sphere, 1 fixed ELR, 2 fixed LR
    (``Protocol.code``); rate (G,) eta or eta_eff; decay_or_radius (G,) lambda or r; logs (G, n_logs);
    queue (G, Q, d). The arithmetic mirrors ``Protocol.step`` exactly (tested).

    The optimizer (``OPTIMIZER_CODES``): opt 0 plain SGD (the paper), 1 heavy ball, 2 Nesterov,
    3 AdamW (fixed LR only), with torch.optim's arithmetic. hyper (G, 4): beta (or beta1), beta2,
    Adam's eps, and eta / eta' (eq. 83's rate on the sphere under momentum, see
    ``theory.sphere_pressure_rate``); cuts (G, 2) int64: the steps from which 1 - beta1^t and
    1 - beta2^t round to 1 (bias correction then costs nothing); buf (G, d) the momentum buffer
    or Adam's m, sq (G, d) Adam's v (unused arrays may be (G, 0)). angle_log (G, n_logs): the
    angle of the step that ends at each log, 2 asin(|u_(t+1) - u_t| / 2) (an acos of the cosine
    loses angles below ~1e-8 rad in float64); precond_log: AdamW's mean sqrt(v_hat) + eps.

    One point's step is a chain of dependent operations (norm, sqrt, divide, update) that
    leaves the core mostly idle, so each thread advances a block of _LANES points with the lane
    axis last: the loops over lanes compile to SIMD instructions (~1.5x faster at d = 3), the
    noise generator's too (``_rng.normal_lanes``: only the ziggurat's rare rejections run one
    lane at a time). Lanes past the end of the grid repeat lane 0 and are never written back.
    """
    n_points, d = w.shape
    q_size = queue.shape[1]
    n_blocks = (n_points + _LANES - 1) // _LANES
    for b in nb.prange(n_blocks):
        lo = b * _LANES
        m = min(n_points, lo + _LANES) - lo
        x = np.empty((d, _LANES))  # (d, P)
        st = np.empty((4, _LANES), np.uint64)  # one xoshiro256** state per lane
        eta = np.empty(_LANES)
        snd = np.empty(_LANES)
        for p in range(_LANES):
            src = lo + p if p < m else lo
            for i in range(d):
                x[i, p] = w[src, i]
            for j in range(4):
                st[j, p] = state[src, j]
            eta[p], snd[p] = rate[src], decay_or_radius[src]
        live = alive[lo:lo + m].copy()
        nb_buf = buf.shape[1] > 0
        nb_sq = sq.shape[1] > 0
        mom = np.zeros((d if nb_buf else 0, _LANES))  # (d, P) momentum buffer or Adam's m
        sec = np.zeros((d if nb_sq else 0, _LANES))  # (d, P) Adam's v
        beta = np.empty(_LANES)
        beta2 = np.empty(_LANES)
        aeps = np.empty(_LANES)
        prate = np.empty(_LANES)
        cut1 = np.empty(_LANES, np.int64)
        cut2 = np.empty(_LANES, np.int64)
        for p in range(_LANES):
            src = lo + p if p < m else lo
            if nb_buf:
                for i in range(d):
                    mom[i, p] = buf[src, i]
            if nb_sq:
                for i in range(d):
                    sec[i, p] = sq[src, i]
            beta[p], beta2[p], aeps[p], prate[p] = (hyper[src, 0], hyper[src, 1], hyper[src, 2],
                                                    hyper[src, 3])
            cut1[p], cut2[p] = cuts[src, 0], cuts[src, 1]
        prev = np.empty((d, _LANES))  # (d, P) weights before the step that ends at a log
        bc1 = np.ones(_LANES)  # Adam's 1 - beta1^t
        sb2 = np.ones(_LANES)  # Adam's sqrt(1 - beta2^t)
        step = start
        eps = np.empty((d, _LANES))
        draws = np.empty(_LANES, np.uint64)  # scratch of the noise generator
        r2 = np.empty(_LANES)
        mw = np.empty(_LANES)
        ew = np.empty(_LANES)
        inv = np.empty(_LANES)
        lr = np.empty(_LANES)
        decay = np.empty(_LANES)
        v2 = np.empty(_LANES)
        leff_sum = np.zeros(_LANES)
        # countdowns instead of k % n: an integer division per step costs as much as the physics
        to_log = log_every - start % log_every
        to_queue = queue_every - start % queue_every
        log_slot = start // log_every
        queue_slot = (start // queue_every) % q_size
        for _ in range(stop - start):
            step += 1
            if to_log == 1:  # this step ends at a log: keep where it starts, for the angle
                for i in range(d):
                    for p in range(_LANES):
                        prev[i, p] = x[i, p]
            for i in range(d):
                _rng.normal_lanes(st, eps[i], draws, zx, zr)
            for p in range(_LANES):
                r2[p] = 0.0
                mw[p] = 0.0
                ew[p] = 0.0
            for i in range(d):
                for p in range(_LANES):
                    r2[p] += x[i, p] * x[i, p]
                    mw[p] += mu[i] * x[i, p]
                    ew[p] += eps[i, p] * x[i, p]
            for p in range(_LANES):
                inv[p] = 1.0 / math.sqrt(r2[p])
                mw[p] *= inv[p]  # mu . w_bar
                ew[p] *= inv[p]  # eps . w_bar
            # grad_i = [(mu - (mu.w_bar) w_bar) + sigma (eps - (eps.w_bar) w_bar)] / r  (eq. 24)
            if opt != 0:
                _optimizer_step(x, mu, eps, mom, sec, inv, mw, ew, r2, eta, snd, lr, decay,
                                v2, leff_sum, beta, beta2, aeps, prate, cut1, cut2, bc1, sb2,
                                sigma, code, opt, step)
            elif code == 0:  # fixed sphere, eta = eta_eff r^2 (eq. 2), projected back to radius r
                for p in range(_LANES):
                    lr[p] = eta[p] * snd[p] * snd[p]
                    v2[p] = 0.0
                for i in range(d):
                    for p in range(_LANES):
                        wb = x[i, p] * inv[p]
                        gi = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
                        x[i, p] = x[i, p] - lr[p] * gi
                        v2[p] += x[i, p] * x[i, p]
                for p in range(_LANES):
                    vn = math.sqrt(v2[p])
                    r = r2[p] * inv[p]
                    leff_sum[p] += (vn - r) / (lr[p] * r)  # eq. 83
                    v2[p] = snd[p] / vn
                for i in range(d):
                    for p in range(_LANES):
                        x[i, p] *= v2[p]
            else:  # fixed ELR (eq. 8, eta = eta_eff r^2) or fixed LR (eq. 15)
                for p in range(_LANES):
                    lr[p] = eta[p] * r2[p] if code == 1 else eta[p]
                    decay[p] = 1.0 - lr[p] * snd[p]
                for i in range(d):
                    for p in range(_LANES):
                        wb = x[i, p] * inv[p]
                        gi = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
                        x[i, p] = decay[p] * x[i, p] - lr[p] * gi
            to_log -= 1
            if to_log == 0:
                to_log = log_every
                for p in range(m):
                    if not live[p]:
                        continue
                    rr = 0.0
                    mm = 0.0
                    for i in range(d):
                        rr += x[i, p] * x[i, p]
                        mm += mu[i] * x[i, p]
                    rr = math.sqrt(rr)
                    if not (rr > 0.0 and rr < 1e150):  # NaN, inf or collapsed: diverged
                        live[p] = False
                        continue
                    loss_log[lo + p, log_slot] = 1.0 + mm / rr
                    radius_log[lo + p, log_slot] = rr
                    rp = 0.0
                    for i in range(d):
                        rp += prev[i, p] * prev[i, p]
                    rp = math.sqrt(rp)
                    chord = 0.0
                    for i in range(d):
                        c = x[i, p] / rr - prev[i, p] / rp
                        chord += c * c
                    angle_log[lo + p, log_slot] = 2.0 * math.asin(min(1.0, 0.5 * math.sqrt(chord)))
                    if opt == 3:  # AdamW's preconditioner c = mean_i sqrt(v_hat_i) + eps
                        c = 0.0
                        for i in range(d):
                            c += math.sqrt(sec[i, p]) / sb2[p]
                        precond_log[lo + p, log_slot] = c / d + aeps[p]
                    if code == 0:
                        leff_log[lo + p, log_slot] = leff_sum[p] / log_every
                for p in range(_LANES):
                    leff_sum[p] = 0.0
                log_slot += 1
            to_queue -= 1
            if to_queue == 0:
                to_queue = queue_every
                for p in range(m):
                    for i in range(d):
                        queue[lo + p, queue_slot, i] = x[i, p]
                queue_slot += 1
                if queue_slot == q_size:
                    queue_slot = 0
        for p in range(m):
            for i in range(d):
                w[lo + p, i] = x[i, p]
            for j in range(4):
                state[lo + p, j] = st[j, p]
            if nb_buf:
                for i in range(d):
                    buf[lo + p, i] = mom[i, p]
            if nb_sq:
                for i in range(d):
                    sq[lo + p, i] = sec[i, p]
        alive[lo:lo + m] = live


@nb.njit(inline="always")
def _optimizer_step(x, mu, eps, mom, sec, inv, mw, ew, r2, eta, snd, lr, decay, v2,
                    leff_sum, beta, beta2, aeps, prate, cut1, cut2, bc1, sb2, sigma, code, opt,
                    step):  # pragma: no cover
    """One step of heavy ball (opt 1), Nesterov (2) or AdamW (3) for a block of lanes, in
    torch.optim's order of operations: the gradient g of eq. 24 (plus lambda w inside the
    buffer for SGD's weight decay), then

    momentum  b = beta b + (g + lambda w); s = b (heavy ball) or (g + lambda w) + beta b (Nesterov);
              w -= eta s, or on the sphere w = r unit(w - eta s) with eq. 83's growth over eta' r
    AdamW     w *= 1 - eta lambda; m += (1 - beta1) (g - m); v = beta2 v + (1 - beta2) g^2;
              w -= eta / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Each is one pass over (i, lane) that computes g and updates the state in registers, as the
    SGD step does: a separate gradient pass through memory cost ~1.3x.
    """
    d, lanes = x.shape
    if opt == 3:  # AdamW, fixed LR: eta per step, decoupled decay
        for p in range(lanes):
            # 1 - beta^t is exactly 1 in float64 from the cut on (beta^t < 2^-54)
            bc1[p] = 1.0 - beta[p] ** step if step < cut1[p] else 1.0
            sb2[p] = math.sqrt(1.0 - beta2[p] ** step) if step < cut2[p] else 1.0
            decay[p] = 1.0 - eta[p] * snd[p]
            lr[p] = eta[p] / bc1[p]
            v2[p] = 1.0 / sb2[p]
        for i in range(d):
            for p in range(lanes):
                wb = x[i, p] * inv[p]
                g = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
                m = mom[i, p] + (1.0 - beta[p]) * (g - mom[i, p])
                v = beta2[p] * sec[i, p] + (1.0 - beta2[p]) * g * g
                mom[i, p] = m
                sec[i, p] = v
                x[i, p] = decay[p] * x[i, p] - lr[p] * m / (math.sqrt(v) * v2[p] + aeps[p])
        return
    nesterov = 1.0 if opt == 2 else 0.0  # s = heavy b + nesterov (g + beta b), exactly one
    heavy = 1.0 - nesterov
    if code == 0:  # fixed sphere, eta = eta_eff r^2, no weight decay
        for p in range(lanes):
            lr[p] = eta[p] * snd[p] * snd[p]
            v2[p] = 0.0
        for i in range(d):
            for p in range(lanes):
                wb = x[i, p] * inv[p]
                g = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
                b = beta[p] * mom[i, p] + g
                mom[i, p] = b
                x[i, p] = x[i, p] - lr[p] * (heavy * b + nesterov * (g + beta[p] * b))
                v2[p] += x[i, p] * x[i, p]
        for p in range(lanes):
            vn = math.sqrt(v2[p])
            r = r2[p] * inv[p]
            leff_sum[p] += (vn - r) / (lr[p] * r) * prate[p]  # eq. 83 over eta' (theory doc)
            v2[p] = snd[p] / vn
        for i in range(d):
            for p in range(lanes):
                x[i, p] *= v2[p]
        return
    for p in range(lanes):  # fixed ELR (eta = eta_eff r^2) or fixed LR
        lr[p] = eta[p] * r2[p] if code == 1 else eta[p]
    for i in range(d):
        for p in range(lanes):
            wb = x[i, p] * inv[p]
            g = ((mu[i] - mw[p] * wb) + sigma * (eps[i, p] - ew[p] * wb)) * inv[p]
            g += snd[p] * x[i, p]  # weight decay inside the buffer (torch SGD)
            b = beta[p] * mom[i, p] + g
            mom[i, p] = b
            x[i, p] = x[i, p] - lr[p] * (heavy * b + nesterov * (g + beta[p] * b))
