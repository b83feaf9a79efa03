"""How far the paper code's measurement conventions move thermosgd's numbers, on a digits sweep.

Input: a finished network sweep written with both entropy charts (``thermosgd sweep run
convnet-digits-fixed-lr --out DIR``). Two parts:

1. At the last log point of every finished run (its checkpoint: weights, BatchNorm buffers,
   entropy queue), each convention of the paper's code on its own, against thermosgd's default
   on the same network state:
   - BatchNorm batches of 1024 for the full-train-set loss U and ||grad L||^2 (ours: 128);
   - Tr Sigma from Q = N extra with-replacement batch-128 gradients around that full gradient
     (ours: one or more passes of disjoint batches, unbiased), rescaled by ||w||^2 as ours;
   - rescaling to the unit sphere by the squared mean radius of the entropy queue (ours: the
     log point's ||w||^2): a factor on Tr Sigma and ||grad L||^2;
   - all of them together, as ``measurement="paper"`` does;
   and what each does to sigma^2 = Tr Sigma / (d - 1) and the SDE radius r* (eq. 20).
2. Table 4 (eq. 108-110) fitted on the stationary entropies in each chart (aligned, raw) and
   over the last 30 or 60 logs (one of the paper's CIFAR-100 notebooks averages 60).

3. With ``--paper-sweep DIR``, the same grid trained again with ``--measurement paper``: the
   training is the same (the measurement draws from its own generators and leaves BatchNorm's
   buffers as it found them; checked by comparing ||w|| at the log points both schedules share),
   so the two sweeps differ only in what is measured and when. Per run, the stationary means of
   U, sigma^2, the measured and the SDE r* in each mode over the last 30 and 60 logs, and Table 4
   fitted on each sweep's stationary entropies in each chart: every convention together,
   including the truncated log schedule.

Also the cost of the raw chart at a log point, as a ratio to the aligned one and to the whole
log-point measurement, timed in the same process.

Usage: python benchmarks/bench_conventions.py SWEEP_DIR [--paper-sweep DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch

from thermosgd.analysis import fits
from thermosgd.nn import measure
from thermosgd.nn.config import TrainConfig
from thermosgd.nn.data import load_data
from thermosgd.nn.engine import Engine


def _state(config: TrainConfig, run: Path, data) -> Engine:
    engine = Engine([config], data, device="cpu")
    engine.load([run])
    nan = {"stoch_grad_norm2": math.nan, "batch_loss": math.nan, "lambda_eff": math.nan}
    engine.windows = [nan]
    return engine


def conventions_at(engine: Engine) -> dict:
    """Every convention's numbers at the engine's state (one configuration)."""
    cfg, d = engine.configs[0], engine.d
    n = engine.data.train_x.shape[0]
    saved = {k: t.clone() for k, t in engine.buffers.items()}
    r2 = engine._norms2()
    gen = [torch.Generator().manual_seed(measure.measure_seed(cfg.seed, engine.iteration))]
    ours = measure.batched_gradient_statistics(
        engine._measure_gradients(saved), r2, n=n, d=d, batch_size=cfg.batch_size,
        passes=cfg.measure_passes, generators=gen)[0]
    paper_w = measure.paper_gradient_statistics(  # rescaled by ||w||^2, as ours
        engine._measure_gradients(saved), r2, r2, n=n, d=d, batch_size=cfg.batch_size,
        draws=cfg.queue_size, generators=gen)[0]
    for k, t in engine.buffers.items():
        t.copy_(saved[k])
    queue_r2 = float(engine.queue.mean_norms(engine.iteration)[0]) ** 2
    factor = queue_r2 / float(r2[0])
    protocol = cfg.make_protocol()

    def derived(trace):
        sigma2 = trace / (d - 1)
        return sigma2, float(protocol.stationary_radius(sigma2, d))

    out = {"U_ours": ours["train_loss"], "U_bn1024": paper_w["train_loss"],
           "grad2_ours": ours["full_grad_norm2"], "grad2_bn1024": paper_w["full_grad_norm2"],
           "trace_ours": ours["trace_cov"], "trace_ours_se": ours["trace_cov_se"],
           "trace_q": paper_w["trace_cov"], "trace_q_se": paper_w["trace_cov_se"],
           "queue_factor": factor, "radius": ours["radius"]}
    out["trace_paper"] = paper_w["trace_cov"] * factor
    for name in ("ours", "q", "paper"):
        out[f"sigma2_{name}"], out[f"rstar_{name}"] = derived(out[f"trace_{name}"])
    out["rstar_rescale_only"] = derived(out["trace_ours"] * factor)[1]
    return out


def q_excess(engine: Engine, draws: int, passes: int = 0) -> dict:
    """Where the paper's Tr Sigma sits above ours: with Q batch gradients g_q drawn as the
    paper's code draws them, 1/Q sum ||g_q - c||^2 = (their sample spread about their own mean
    g_bar) + ||g_bar - c||^2 exactly, for any centre c. The paper's code takes c = the full
    gradient with BatchNorm batches of 1024; the batch-128 gradients average to g_bar, not to
    it. Returns both parts (times ||w||^2, as the traces are reported) and, with ``passes``,
    ours from that many passes on a generator of its own (every run of a sweep measures at
    the same iterations with the same seed, so the two-pass estimates of a sweep share one
    draw of their batches: a reference with many passes tells a shared fluctuation from a
    bias)."""
    cfg, d = engine.configs[0], engine.d
    n = engine.data.train_x.shape[0]
    saved = {k: t.clone() for k, t in engine.buffers.items()}
    r2 = float(engine._norms2()[0])
    batch_gradients = engine._measure_gradients(saved)
    full = torch.zeros(d, dtype=torch.float64)
    for start in range(0, n, measure.PAPER_FULL_BATCH):
        idx = torch.arange(start, min(start + measure.PAPER_FULL_BATCH, n))
        full += idx.numel() / n * batch_gradients(idx[None])[0][0].double()
    gen = torch.Generator().manual_seed(measure.measure_seed(cfg.seed, engine.iteration) + 1)
    total, squares = torch.zeros(d, dtype=torch.float64), 0.0
    for _ in range(draws):
        g = batch_gradients(torch.randint(0, n, (1, cfg.batch_size), generator=gen))[0][0]
        g = g.double()
        total += g
        squares += float(g.square().sum())
    mean = total / draws
    spread = (squares - draws * float(mean.square().sum())) / (draws - 1)  # unbiased
    offset = float((mean - full).square().sum())
    out = {"trace_sample": r2 * spread, "offset": r2 * offset,
           "trace_about_bn1024": r2 * (spread * (draws - 1) / draws + offset), "draws": draws}
    if passes:
        ours = measure.batched_gradient_statistics(
            batch_gradients, engine._norms2(), n=n, d=d, batch_size=cfg.batch_size,
            passes=passes, generators=[torch.Generator().manual_seed(gen.initial_seed() + 1)])[0]
        out |= {"trace_ours_many": ours["trace_cov"], "trace_ours_many_se": ours["trace_cov_se"],
                "passes": passes}
    for k, t in engine.buffers.items():
        t.copy_(saved[k])
    return out


def chart_cost(engine: Engine, repeat: int = 3) -> dict:
    """Seconds of the aligned and raw entropies of the queue (best of ``repeat``) and of a whole
    log point with both charts (once)."""
    times = {}
    for label, fn, count in (
            ("aligned", lambda: engine.queue.entropies(engine.iteration), repeat),
            ("raw", lambda: engine.queue.entropies(engine.iteration, align=False), repeat),
            ("log_point", engine.measure, 1)):
        best = math.inf
        for _ in range(count):
            tick = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - tick)
        times[label] = best
    return times


def table4_variants(metrics: pd.DataFrame, table: pd.DataFrame, protocol: str, d: int) -> dict:
    """Table 4 on each chart, over the last 30 and 60 logs of every finished run."""
    out = {}
    finished = table[table["status"] == "finished"]["run"]
    for logs in (30, 60):
        tails = (metrics[metrics["run"].isin(finished)].groupby("run").tail(logs)
                 .groupby("run")[["learning_rate", "weight_decay", "entropy", "entropy_raw"]]
                 .mean())
        for column in ("entropy", "entropy_raw"):
            fit = fits.table4(tails["learning_rate"], tails["weight_decay"], tails[column],
                              protocol=protocol, d=d, bootstrap=0)
            out[f"{column}_last{logs}"] = {k: v for k, v in fit.items()
                                           if k not in ("coefficients", "ci95")}
    return out


def stationary_windows(metrics: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Mean over finished runs of the ratio (last 60 logs) / (last 30 logs) of U, sigma^2, r*,
    and how many of the last logs carry an entropy (the queue must be full first)."""
    finished = metrics[metrics["run"].isin(table.loc[table["status"] == "finished", "run"])]
    by_run = finished.groupby("run")
    cols = ["train_loss", "sigma2", "radius", "radius_theory"]
    ratio = by_run.tail(60).groupby("run")[cols].mean() / by_run.tail(30).groupby("run")[cols].mean()
    return {"last60/last30": {c: {"mean": float(ratio[c].mean()), "min": float(ratio[c].min()),
                                  "max": float(ratio[c].max())} for c in cols},
            "logs_with_entropy": int(by_run["entropy"].count().min())}


STATIONARY = ["train_loss", "sigma2", "radius", "radius_theory"]
TABLE4_KEYS = ("r2", "(a1-a2)/R", "(2a3-a5)/R", "(2a4-a5)/R", "centre/R", "max_rel_error")


def _finished(sweep: Path):
    from thermosgd import sweeps

    metrics, table = sweeps.gather(sweep)
    done = table.loc[table["status"] == "finished", "run"]
    return metrics[metrics["run"].isin(done)], table, sweeps.read_sweep_dir(sweep)[0]


def compare_sweeps(ours_dir: Path, paper_dir: Path) -> dict:
    """The same grid measured thermosgd's way and the paper code's way (module docstring, 3)."""
    ours, table, spec = _finished(ours_dir)
    paper, _, _ = _finished(paper_dir)
    runs = sorted(set(ours["run"]) & set(paper["run"]))
    shared = ours.merge(paper, on=["run", "iteration"], suffixes=("", "_paper"))
    shared = shared[shared["run"].isin(runs)]
    same_training = float((shared["radius_paper"] / shared["radius"] - 1).abs().max())
    out = {"runs": len(runs), "shared_log_points": len(shared),
           "max_rel_diff_radius_at_shared_logs": same_training,
           "log_points": {"ours": int(ours.groupby("run").size().median()),
                          "paper": int(paper.groupby("run").size().median())}}
    d = int(table["d"].dropna().iloc[0])
    for logs in (30, 60):
        means = {name: frame[frame["run"].isin(runs)].groupby("run").tail(logs).groupby("run")
                 [STATIONARY + ["learning_rate", "weight_decay", "entropy", "entropy_raw"]].mean()
                 for name, frame in (("ours", ours), ("paper", paper))}
        ratio = means["paper"][STATIONARY] / means["ours"][STATIONARY] - 1
        out[f"last{logs}"] = {c: {"mean": float(ratio[c].mean()), "min": float(ratio[c].min()),
                                  "max": float(ratio[c].max())} for c in STATIONARY}
        if len(runs) >= fits.MIN_FIT_POINTS:
            for name, m in means.items():
                for column in ("entropy", "entropy_raw"):
                    fit = fits.table4(m["learning_rate"], m["weight_decay"], m[column],
                                      protocol=spec.protocol, d=d, bootstrap=0)
                    out[f"last{logs}"][f"table4_{column}_{name}"] = {
                        k: fit[k] for k in TABLE4_KEYS if k in fit}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--paper-sweep", type=Path, default=None,
                        help="the same grid trained with --measurement paper")
    parser.add_argument("--q-excess", type=int, default=0, metavar="Q",
                        help="also split the paper's Tr Sigma with Q draws (see q_excess)")
    parser.add_argument("--reference-passes", type=int, default=0, metavar="P",
                        help="with --q-excess: also our estimate from P passes")
    parser.add_argument("--only-compare", action="store_true",
                        help="with --paper-sweep: skip the per-state conventions (part 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    parser.add_argument("--runs", type=int, default=None, help="at most this many states")
    args = parser.parse_args()
    from thermosgd import sweeps

    compared = None
    if args.paper_sweep is not None:
        compared = compare_sweeps(args.sweep, args.paper_sweep)
        print(json.dumps(compared, indent=1), flush=True)
        if args.only_compare:
            if args.out:
                args.out.write_text(json.dumps(compared, indent=1))
            return

    spec, scale = sweeps.read_sweep_dir(args.sweep)
    metrics, table = sweeps.gather(args.sweep)
    configs = {sweeps.run_name(c): c for c in spec.configs(scale=scale, device="cpu")}
    data = load_data(next(iter(configs.values())), torch.device("cpu"))
    rows, cost = [], None
    for name in table.loc[table["status"] == "finished", "run"][: args.runs]:
        engine = _state(configs[name], sweeps.run_dir(args.sweep, name), data)
        row = {"run": name} | conventions_at(engine)
        if args.q_excess:
            row |= {f"q_{k}": v for k, v in q_excess(engine, args.q_excess, args.reference_passes).items()}
        rows.append(row)
        if cost is None:
            cost = chart_cost(engine)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)
    states = pd.DataFrame(rows)
    ratios = {
        "U bn1024/ours": states["U_bn1024"] / states["U_ours"],
        "grad2 bn1024/ours": states["grad2_bn1024"] / states["grad2_ours"],
        "trace Q/ours": states["trace_q"] / states["trace_ours"],
        "queue rescale factor": states["queue_factor"],
        "sigma2 paper/ours": states["sigma2_paper"] / states["sigma2_ours"],
        "r* Q/ours": states["rstar_q"] / states["rstar_ours"],
        "r* rescale/ours": states["rstar_rescale_only"] / states["rstar_ours"],
        "r* paper/ours": states["rstar_paper"] / states["rstar_ours"],
        "trace_ours rel. se": states["trace_ours_se"] / states["trace_ours"],
        "trace_q rel. se": states["trace_q_se"] / states["trace_q"],
    }
    summary = {k: {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
               for k, v in ratios.items()}
    d = int(table["d"].dropna().iloc[0])
    enough = (table["status"] == "finished").sum() >= fits.MIN_FIT_POINTS
    variants = table4_variants(metrics, table, spec.protocol, d) if enough else {}
    report = {"runs": len(states), "d": d, "ratios": summary, "table4": variants,
              "windows": stationary_windows(metrics, table), "chart_seconds": cost}
    print(json.dumps(report, indent=1))
    if args.out:
        extra = {} if compared is None else {"paper_sweep": compared}
        args.out.write_text(json.dumps({"states": rows} | report | extra, indent=1))


if __name__ == "__main__":
    main()
