"""Stationary predictions against the full-batch share rho: a bowl on the sphere.

The toy is scale-invariant and exact: w in R^d, w_bar = w / |w|, L(w) = 1/2 sum_(i>=2) h_i
w_bar_i^2 (minimum at e_1, curvature h_i on the unit sphere), mini-batch gradient
g = P_w (H w_bar + s * eps) / |w| with P_w = I - w_bar w_bar^T and eps ~ N(0, I), so g.w = 0
exactly and, on the unit sphere, Tr Sigma = sum_i s_i^2 (1 - w_bar_i^2) and
||grad L(w_bar)||^2 = |P H w_bar|^2 are known at every step. The curvature sets the full-batch
share rho = E||grad L||^2 / Tr Sigma (about eta' h / 2 on the sphere); C chains are the rows of
one (C, d) parameter stepped by a real ``torch.optim`` optimizer (SGD and AdamW act elementwise,
so rows are independent chains). Measured at stationarity: r* = sqrt(E|w|^2), the rms angle per
step sqrt(E|u|^2 / E|w|^2), Tr Sigma, E||grad L||^2, and for AdamW the per-coordinate noise
s_i^2, squared full-batch gradient F_i and preconditioner (sqrt(v_hat_i) + eps)^2 (raw units).
They are set against the thermosgd predictions, old (rho-blind) and new (rho-aware).

Usage:
  python benchmarks/bench_rho.py [--quick] [--out DIR] [--monitor] [--only sgd,nesterov]
      [--figure PNG]
prints one Markdown table per optimizer, draws benchmarks/figures/rho_predictions.png and, with
--out, writes OUT/rho_results.json. --monitor also
runs the toy under thermosgd.Monitor and sets its stationary estimates against the toy's truth.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from thermosgd import theory
from thermosgd.results.io import provenance
from thermosgd.theory import make_optimizer

BETA = 0.9  # heavy-ball / Nesterov momentum and AdamW's beta1
FIGURE = Path(__file__).parent / "figures" / "rho_predictions.png"


def torch_factory(name: str, learning_rate: float, weight_decay: float):
    """params -> the torch optimizer the theory's ``name`` stands for (torch's semantics)."""
    if name == "adamw":
        return lambda params: torch.optim.AdamW(params, lr=learning_rate, betas=(BETA, 0.999),
                                                eps=1e-8, weight_decay=weight_decay)
    beta = 0.0 if name == "sgd" else BETA
    return lambda params: torch.optim.SGD(params, lr=learning_rate, momentum=beta,
                                          nesterov=name == "nesterov", weight_decay=weight_decay)


def theory_optimizer(name: str):
    return make_optimizer(name) if name == "sgd" else make_optimizer(name, momentum=BETA)


@dataclass(frozen=True)
class Bowl:
    """One toy and its run lengths."""

    curvature: tuple  # h_i on the unit sphere, (d,), h_1 = 0 (the minimum direction)
    noise: tuple  # s_i, (d,): per-coordinate noise scale before the projection P_w
    chains: int = 128  # C independent chains, the rows of one parameter
    burn_in: int = 1000  # steps discarded (>= 5 relaxation times of the norm)
    steps: int = 4000  # steps averaged (>= 20 relaxation times)
    radius0: float = 1.0  # starting |w| (the predicted r*, to shorten the burn-in)
    rotated: bool = False  # the bowl's axes turned by a fixed random rotation (AdamW sees it)
    seed: int = 0

    @property
    def d(self) -> int:
        return len(self.curvature)


class BowlModule(torch.nn.Module):
    """Holds the (C, d) weights, so that thermosgd.Monitor can name them ("w": one group a row)."""

    def __init__(self, w0: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w0)


def simulate(bowl: Bowl, make_torch_optimizer, *, monitor=None) -> dict:
    """Run the chains; time and chain averages at stationarity.

    ``make_torch_optimizer``: params -> torch optimizer; ``monitor``: (module, optimizer) ->
    thermosgd.Monitor (closed here), or None. Returns per-chain means (C,) of |w|^2, |u|^2,
    Tr Sigma and ||grad L(w_bar)||^2, and for AdamW per-chain, per-coordinate means (C, d) of
    s_i^2, F_i (raw, at the actual |w|), sqrt(v_hat_i) + eps and its square.
    """
    gen = torch.Generator().manual_seed(bowl.seed)
    h = torch.tensor(bowl.curvature, dtype=torch.float64)  # (d,)
    s = torch.tensor(bowl.noise, dtype=torch.float64)  # (d,)
    # H = Q diag(h) Q^T; the noise stays on the coordinates, as a mini-batch's would
    rot = torch.eye(bowl.d, dtype=torch.float64)
    if bowl.rotated:
        rot = torch.linalg.qr(torch.randn(bowl.d, bowl.d, generator=gen, dtype=torch.float64))[0]
    w0 = torch.zeros(bowl.chains, bowl.d, dtype=torch.float64)
    w0[:, 0] = 1.0
    w0[:, 1:] = 1e-3 * torch.randn(bowl.chains, bowl.d - 1, generator=gen, dtype=torch.float64)
    w0 = w0 @ rot.T
    w0 *= bowl.radius0 / w0.norm(dim=1, keepdim=True)
    module = BowlModule(w0)
    p = module.w
    opt = make_torch_optimizer([p])
    adam = isinstance(opt, torch.optim.AdamW)
    mon = monitor(module, opt) if monitor is not None else None
    sums = {k: torch.zeros(bowl.chains, dtype=torch.float64)
            for k in ("r2", "r2_late", "u2", "tr", "f")}
    if adam:
        sums |= {k: torch.zeros(bowl.chains, bowl.d, dtype=torch.float64)
                 for k in ("s2_i", "f_i", "root_i", "v_i")}
    s2 = s * s  # (d,)
    try:
        for t in range(bowl.burn_in + bowl.steps):
            w = p.detach().clone()  # (C, d)
            r2 = (w * w).sum(1, keepdim=True)  # (C, 1)
            wb = w / r2.sqrt()
            hw = (wb @ rot * h) @ rot.T if bowl.rotated else h * wb  # H w_bar
            grad_unit = hw - (wb * hw).sum(1, keepdim=True) * wb  # P H w_bar, (C, d)
            noise = s * torch.randn(bowl.chains, bowl.d, generator=gen, dtype=torch.float64)
            noise -= (wb * noise).sum(1, keepdim=True) * wb
            p.grad = (grad_unit + noise) / r2.sqrt()
            opt.step()
            if t < bowl.burn_in:
                continue
            u = p.detach() - w
            wb2s2 = (wb * wb * s2).sum(1, keepdim=True)  # (C, 1)
            sums["r2"] += r2[:, 0]
            if t >= bowl.burn_in + bowl.steps // 2:  # the second half, for the drift
                sums["r2_late"] += 2 * r2[:, 0]
            sums["u2"] += (u * u).sum(1)
            sums["tr"] += s2.sum() - wb2s2[:, 0]
            sums["f"] += (grad_unit * grad_unit).sum(1)
            if adam:
                # the variance of (P_w (s * eps))_i: s_i^2 - 2 w_i^2 s_i^2 + w_i^2 sum_j w_j^2 s_j^2
                sums["s2_i"] += (s2 - 2 * wb * wb * s2 + wb * wb * wb2s2) / r2
                sums["f_i"] += grad_unit * grad_unit / r2
                state = opt.state[p]
                correction = 1.0 - opt.param_groups[0]["betas"][1] ** float(state["step"])
                root = (state["exp_avg_sq"] / correction).sqrt() + opt.param_groups[0]["eps"]
                sums["root_i"] += root
                sums["v_i"] += root * root
    finally:
        if mon is not None:
            mon.close()
    return {k: (v / bowl.steps).numpy() for k, v in sums.items()}


# ---- designing the curvature for a target rho ----------------------------------------------

def _mode_share(name, eta_h):
    """rho = F / s^2 of one mode at step eta h (NaN beyond the stable range)."""
    mode = "momentum" if name == "adamw" else name
    eta_h = np.asarray(eta_h, float)
    return theory.mode_moments(mode, 0.0 if name == "sgd" else BETA, eta_h)[1]


def design(name, learning_rate, weight_decay, d, rho, profile, noise):
    """(curvature (d,), predicted r*) such that the single-mode theory gives share ``rho``.

    Each tangent direction i >= 2 is a mode at step eta_unit h_i, with eta_unit the step on the
    unit sphere (eta / r^2; AdamW heavy ball at eta (1 - beta1) / (sqrt(v) r^2)); the scale of
    ``profile`` (d - 1,) is found by bisection on the noise-weighted mean share.
    """
    opt = theory_optimizer(name)
    s2 = np.asarray(noise, float)[1:] ** 2  # (d - 1,): near e_1 the tangent noise
    tr = s2.sum()
    w = float(theory.discrete_gradient_weight(opt, full_grad_share=rho))
    if name == "adamw":
        r2 = learning_rate * d * (1 + w * rho) / ((1 + rho) * 2 * weight_decay)
        root = np.sqrt(s2 * (1 + rho) / r2)  # raw sqrt(v_i)
        eta_unit = learning_rate * (1 - BETA) / (root * r2)  # (d - 1,)
    else:
        r2 = np.sqrt(learning_rate * theory.time_scale(opt) * tr * (1 + w * rho)
                     / (2 * weight_decay))
        eta_unit = np.full_like(s2, learning_rate / r2)
    if rho == 0:
        return np.zeros(d), float(np.sqrt(r2))
    profile = np.asarray(profile, float)

    def share(log_scale):
        f = _mode_share(name, eta_unit * profile * np.exp(log_scale))
        return np.inf if not np.all(np.isfinite(f)) else float((s2 * f).sum() / tr)

    lo, hi = np.log(1e-8 / (eta_unit * profile).max()), np.log(4.0 / (eta_unit * profile).max())
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if share(mid) < rho else (lo, mid)
    return np.concatenate([[0.0], profile * np.exp(lo)]), float(np.sqrt(r2))


# ---- predictions ------------------------------------------------------------------------------

def _err(pred, meas):
    return float(pred / meas - 1.0)


def predict(name, learning_rate, weight_decay, d, m: dict) -> dict:
    """Old and new r*, rms angle and Z from the measured statistics ``m`` (library functions)."""
    opt = theory_optimizer(name)
    eta, lam = learning_rate, weight_decay
    tr, f = float(m["tr"].mean()), float(m["f"].mean())
    rho = f / tr
    r = float(np.sqrt(m["r2"].mean()))
    volume = r * r / 2
    out = {"rho": rho, "trace_cov": tr, "full_grad_norm2": f, "r_meas": r,
           "angle_meas": float(np.sqrt(m["u2"].mean() / m["r2"].mean())),
           # r* of the second half of the window over the whole window's: 1 at stationarity
           "drift": float(np.sqrt(m["r2_late"].mean() / m["r2"].mean()))}
    # standard errors from the spread over independent chains (delta method for the ratios)
    c = len(m["r2"])
    out["r_se"] = float(0.5 * m["r2"].std() / np.sqrt(c) / m["r2"].mean())
    ratio = m["u2"].mean() / m["r2"].mean()
    out["angle_se"] = float(0.5 * (m["u2"] - ratio * m["r2"]).std() / np.sqrt(c)
                            / m["u2"].mean())
    out["angle_old"] = float(theory.optimizer_angular_update(opt, eta, lam))
    out["angle_new"] = float(theory.optimizer_angular_update(opt, eta, lam, full_grad_share=rho))
    if name == "adamw":
        w = float(theory.discrete_gradient_weight(opt, full_grad_share=rho))
        # v_i is (sqrt(v_hat) + eps)^2 already: the docstring's eps is added to sqrt(v), so 0 here
        d_eff = theory.adamw_effective_dimension(m["s2_i"], m["f_i"], m["v_i"], beta1=BETA,
                                                 eps=0.0)  # (C,): one per chain
        raw = (m["s2_i"] + w * m["f_i"]).sum(1)  # (C,)
        out["d_eff"] = float(d_eff.mean())
        out["r_new"] = float(np.sqrt(np.mean(theory.adamw_radius_from_statistics(
            eta, lam, d_eff) ** 2)))
        old = make_optimizer("adamw", momentum=BETA, eps=0.0)
        out["r_old"] = float(theory.optimizer_radius_fixed_lr(old, eta, lam, tr, d))
        c_eff = float(theory.adamw_effective_preconditioner(raw.mean(), d_eff.mean()))
        t_new = (eta / c_eff) * raw.mean() / (2 * (d - 1))
        out["z_new"] = float(theory.compressibility(lam * c_eff, volume, t_new, d))
        c_old = float(m["root_i"].mean())  # mean sqrt(v_hat) + eps
        t_old = eta * (tr / (d - 1)) / (2 * r * r * c_old)
        out["z_old"] = float(theory.compressibility(lam * c_old, volume, t_old, d))
    else:
        w_new = float(theory.discrete_gradient_weight(opt, full_grad_share=rho))
        w_old = (1 - BETA) / (1 + BETA) if name == "momentum" else 1.0
        rate = eta * theory.time_scale(opt)
        for label, w in (("old", w_old), ("new", w_new)):
            out[f"r_{label}"] = float(theory.optimizer_radius_fixed_lr(
                opt, eta, lam, trace_cov=tr, d=d, full_grad_norm2=w * f))
            temperature = rate * (tr + w * f) / (2 * r * r * (d - 1))
            out[f"z_{label}"] = float(theory.compressibility(lam, volume, temperature, d))
        out["weight_new"] = w_new
    for key in ("r", "angle"):
        for label in ("old", "new"):
            out[f"{key}_{label}_err"] = _err(out[f"{key}_{label}"], out[f"{key}_meas"])
    return out


# ---- the grid ---------------------------------------------------------------------------------

RATES = {  # (eta, lambda): eta' lambda = 2e-3 (base) and 1e-2 (hot); AdamW eta lambda the same
    "sgd": {"base": (0.1, 0.02), "hot": (0.5, 0.02)},
    "momentum": {"base": (0.01, 0.02), "hot": (0.05, 0.02)},
    "nesterov": {"base": (0.01, 0.02), "hot": (0.05, 0.02)},
    "adamw": {"base": (0.01, 0.2), "hot": (0.05, 0.2)},
}


def cases(name: str) -> list[dict]:
    """The toys of one optimizer: d x rho (uniform h, isotropic noise), a decade of h, the hot
    setting, and for AdamW noise spread over 25x. AdamW's bowls are rotated (see
    :func:`make_bowl`); three axis-aligned ones show why."""
    rotated = name == "adamw"
    base = dict(case="base", rates="base", h="uniform", s="iso", rotated=rotated)
    out = [base | dict(d=d, rho=r) for d in (10, 50, 100) for r in (0.0, 0.1, 0.3, 0.6, 1.0, 2.0)]
    out += [base | dict(d=50, rho=r, case="h-decade", h="decade") for r in (0.3, 1.0)]
    out += [base | dict(d=50, rho=r, case="hot", rates="hot") for r in (0.0, 0.6)]
    if name == "adamw":
        out += [base | dict(d=50, rho=r, case="s-25x", s="spread") for r in (0.0, 0.3, 1.0)]
        out += [base | dict(d=50, rho=r, case="axis", rotated=False) for r in (0.0, 0.3, 1.0)]
    return out


def make_bowl(name: str, spec: dict, quick: bool):
    """The toy of one case and its (eta, lambda). AdamW is not rotation-invariant: with the
    minimum on a coordinate axis that one coordinate is the radius, its gradient (second order
    in the angle, of one sign) is divided by a sqrt(v) 100x below the others', and its
    normalized step keeps pushing |w| out (measured: r* 3-4x the prediction and still growing
    after 12000 steps). A rotated bowl spreads the radius over every coordinate, as a
    network's weights do."""
    eta, lam = RATES[name][spec["rates"]]
    d = spec["d"]
    noise = np.ones(d)
    if spec["s"] == "spread":  # 25x between the quietest and the noisiest coordinate, shuffled
        noise = np.random.default_rng(1).permutation(np.geomspace(0.2, 5.0, d))
        noise /= np.sqrt(np.mean(noise**2))
    profile = np.ones(d - 1) if spec["h"] == "uniform" else np.geomspace(1.0, 10.0, d - 1)
    curvature, r0 = design(name, eta, lam, d, spec["rho"], profile, noise)
    # the norm relaxes at 4 eta' lambda (SGD, momentum) or 2 eta lambda (AdamW) per step, and
    # AdamW's v_hat has a memory of 1 / (1 - beta2) = 1000 steps
    rate = 2 * eta * lam if name == "adamw" else 4 * eta * lam * theory.time_scale(
        theory_optimizer(name))
    tau = 1.0 / rate
    burn = 5 * tau + (3000 if name == "adamw" else 0)
    steps = 20 * tau if quick else 40 * tau
    bowl = Bowl(tuple(curvature), tuple(noise), chains=64 if quick else 128,
                burn_in=int(burn), steps=int(steps), radius0=r0, rotated=spec["rotated"],
                seed=spec["d"] + 7)
    return bowl, eta, lam


def run_optimizer(name: str, quick: bool) -> list[dict]:
    rows = []
    for spec in cases(name):
        bowl, eta, lam = make_bowl(name, spec, quick)
        t0 = time.perf_counter()
        m = simulate(bowl, torch_factory(name, eta, lam))
        row = {"optimizer": name, **spec, "rho_target": spec["rho"], "eta": eta, "lambda": lam,
               "chains": bowl.chains, "burn_in": bowl.burn_in, "steps": bowl.steps}
        row |= predict(name, eta, lam, bowl.d, m)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"  {name} d={row['d']} {row['case']} rho={row['rho']:.3f} "
              f"r {row['r_new_err']:+.2%} angle {row['angle_new_err']:+.2%} "
              f"({row['seconds']} s)", flush=True)
    return rows


def mode_check(steps=20000, chains=256) -> list[dict]:
    """mode_moments against a one-mode torch.optim simulation: g = h x + xi, no weight decay."""
    rows = []
    eta = 0.1
    for name in ("momentum", "nesterov"):
        for eta_h in (0.05, 0.3, 1.0):
            gen = torch.Generator().manual_seed(int(eta_h * 100))
            x = torch.nn.Parameter(torch.zeros(chains, 1, dtype=torch.float64))
            opt = torch_factory(name, eta, 0.0)([x])
            acc = np.zeros(3)
            for t in range(steps + 500):
                x0 = x.detach().clone()
                g = eta_h / eta * x0 + torch.randn(chains, 1, generator=gen, dtype=torch.float64)
                x.grad = g
                opt.step()
                if t >= 500:
                    u = x.detach() - x0
                    # (u^2, F, -u g) summed over chains; host read once per step is fine here
                    acc += [float((u * u).sum()), float(((eta_h / eta * x0) ** 2).sum()),
                            float(-(u * g).sum())]
            acc /= steps * chains
            sim = (acc[0] / eta**2, acc[1], acc[2] / eta)
            th = [float(v) for v in theory.mode_moments(name, BETA, eta_h)]
            rows.append({"optimizer": name, "eta_h": eta_h, "sim": sim, "theory": th})
    return rows


# ---- output -----------------------------------------------------------------------------------

def markdown(rows: list[dict], name: str) -> str:
    head = ("| d | case | rho | r* meas | r* old (err) | r* new (err) | angle meas | "
            "angle old (err) | angle new (err) | Z old | Z new | drift |")
    lines = [f"**{name}**", "", head, "|" + "---|" * 12]
    for r in rows:
        if r["optimizer"] != name:
            continue
        lines.append(
            f"| {r['d']} | {r['case']} | {r['rho']:.3f} | {r['r_meas']:.4g} | "
            f"{r['r_old']:.4g} ({r['r_old_err']:+.1%}) | "
            f"{r['r_new']:.4g} ({r['r_new_err']:+.1%}) | "
            f"{r['angle_meas']:.4g} | {r['angle_old']:.4g} ({r['angle_old_err']:+.1%}) | "
            f"{r['angle_new']:.4g} ({r['angle_new_err']:+.1%}) | {r['z_old']:.3f} | "
            f"{r['z_new']:.3f} | {r['drift'] - 1:+.1%} |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in RATES if any(r["optimizer"] == n for r in rows)]
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6.4), squeeze=False,
                             sharey="row")
    colors = {10: "tab:blue", 50: "tab:orange", 100: "tab:green"}
    for j, name in enumerate(names):
        for i, key in enumerate(("r", "angle")):
            ax = axes[i, j]
            for d, color in colors.items():
                sel = sorted((r for r in rows if r["optimizer"] == name and r["d"] == d
                              and r["case"] == "base"), key=lambda r: r["rho"])
                if not sel:
                    continue
                rho = [r["rho"] for r in sel]
                ax.plot(rho, [r[f"{key}_new"] / r[f"{key}_meas"] for r in sel], "-o", ms=3,
                        color=color, label=f"d={d} new")
                ax.plot(rho, [r[f"{key}_old"] / r[f"{key}_meas"] for r in sel], "--x", ms=3,
                        color=color, label=f"d={d} old")
            ax.axhline(1.0, color="k", lw=0.6)
            ax.set_xlabel("rho = E||grad L||^2 / Tr Sigma")
            bowl = " (rotated bowl)" if name == "adamw" else ""
            ax.set_title(f"{name}{bowl}: {'r*' if key == 'r' else 'rms angle'}", fontsize=10)
        axes[0, j].set_ylim(0.8, 1.6)
        axes[1, j].set_ylim(0.7, 1.1)
    axes[0, 0].set_ylabel("predicted r* / measured")
    axes[1, 0].set_ylabel("predicted angle / measured")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def monitor_check(names, quick: bool) -> list[dict]:
    """The toy under thermosgd.Monitor: its stationary estimates (median over chains, last half
    of the logs) against the toy's truth."""
    import thermosgd
    from thermosgd.results.monitordir import read_metrics
    rows = []
    for name in names:
        for rho in (0.0, 0.3, 1.0):
            spec = dict(d=50, rho=rho, case="monitor", rates="base", h="uniform", s="iso",
                        rotated=name == "adamw")
            bowl, eta, lam = make_bowl(name, spec, quick)
            bowl = replace(bowl, chains=32)
            with tempfile.TemporaryDirectory() as tmp:
                def attach(module, opt):
                    return thermosgd.Monitor(module, opt, out=Path(tmp) / "mon",
                                             groups={"w": "channel"}, every=10, noise_window=5)
                m = simulate(bowl, torch_factory(name, eta, lam), monitor=attach)
                table = read_metrics(Path(tmp) / "mon")
            truth = predict(name, eta, lam, bowl.d, m)
            table = table[table["group"].str.startswith("w[")]
            late = table[table["step"] > bowl.burn_in + bowl.steps / 2]
            med = late.groupby("group")[["norm", "radius_theory_corrected", "angular_update",
                                         "angular_update_theory", "trace_cov",
                                         "full_grad_norm2"]].mean().median()
            rows.append({"optimizer": name, "rho": truth["rho"], **{k: float(v) for k, v in
                                                                   med.items()},
                         "truth": {k: truth[k] for k in ("r_meas", "r_new", "angle_meas",
                                                         "angle_new", "trace_cov",
                                                         "full_grad_norm2")}})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 chains, 20 relaxation times")
    parser.add_argument("--out", help="directory for rho_results.json")
    parser.add_argument("--figure", default=str(FIGURE), help="where to draw the figure")
    parser.add_argument("--monitor", action="store_true", help="also run under thermosgd.Monitor")
    parser.add_argument("--only", default=",".join(RATES), help="comma-separated optimizers")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a shared 2-core machine; the chains are one small tensor anyway
    names = [n for n in args.only.split(",") if n]
    t0 = time.perf_counter()
    modes = mode_check(steps=5000 if args.quick else 20000)
    print("\n| optimizer | eta h | E u^2/eta^2 sim / theory | F sim / theory | E[-ug]/eta sim / "
          "theory |\n|---|---|---|---|---|")
    for r in modes:
        print(f"| {r['optimizer']} | {r['eta_h']} | " + " | ".join(
            f"{s:.4g} / {t:.4g}" for s, t in zip(r["sim"], r["theory"])) + " |")
    rows = []
    for name in names:
        rows += run_optimizer(name, args.quick)
    for name in names:
        print("\n" + markdown(rows, name))
    figure(rows, Path(args.figure))
    print(f"\nfigure: {args.figure}")
    record = {"config": {"quick": args.quick, "optimizers": names, "rates": RATES},
              "machine": f"{platform.processor() or platform.machine()}, torch "
                         f"{torch.__version__}, 1 thread",
              "seconds": round(time.perf_counter() - t0, 1), "modes": modes, "rows": rows,
              **provenance()}
    if args.monitor:
        record["monitor"] = monitor_check(names, args.quick)
        print("\n| optimizer | rho | monitor norm / toy r* | monitor r* corrected / toy new "
              "r* | monitor angle / toy angle | monitor angle theory / toy new angle | "
              "monitor Tr Sigma / toy | monitor ||grad L||^2 / toy |\n" + "|---" * 8 + "|")
        for r in record["monitor"]:
            t = r["truth"]
            pairs = [("norm", "r_meas"), ("radius_theory_corrected", "r_new"),
                     ("angular_update", "angle_meas"), ("angular_update_theory", "angle_new"),
                     ("trace_cov", "trace_cov"), ("full_grad_norm2", "full_grad_norm2")]
            print(f"| {r['optimizer']} | {r['rho']:.3f} | " + " | ".join(
                f"{r[a]:.4g} / {t[b]:.4g}" for a, b in pairs) + " |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "rho_results.json").write_text(json.dumps(record, indent=1,
                                                                    default=float))
    return record


if __name__ == "__main__":
    main()
