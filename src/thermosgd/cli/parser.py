"""The command line's parser: every subcommand and option, with its default and choices.

Building it imports neither torch nor numba, so ``thermosgd --help`` and ``--version`` answer
at once.
"""

from __future__ import annotations

import argparse

from thermosgd._version import __version__

_EPILOG = "Docs and figures: see README.md. The paper's equations are cited in every docstring."


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse's own prints the whole usage first); its
    subcommands' parsers are of this class too (``add_subparsers`` takes the parent's)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the "
                     "options)\n")


def _add_isotropic_options(parser, *, defaults):
    g = parser.add_argument_group("simulation length and logging (paper defaults)")
    g.add_argument("--dim", type=int, default=defaults["dim"], help="d, number of weights (>= 2)")
    g.add_argument("--sigma", type=float, default=defaults["sigma"], help="sigma, noise scale")
    g.add_argument("--iterations", type=int, default=defaults["iterations"])
    g.add_argument("--log-every", type=int, default=defaults["log_every"])
    g.add_argument("--stationary-logs", type=int, default=defaults["stationary_logs"],
                   help="stationary means over the last this-many logs")
    g.add_argument("--queue-size", type=int, default=defaults["queue_size"],
                   help="N, weight snapshots in the entropy queue")
    g.add_argument("--queue-every", type=int, default=defaults["queue_every"])
    g.add_argument("--entropy-every", type=int, default=defaults["entropy_every"])
    g.add_argument("--entropy-average", type=int, default=defaults["entropy_average"],
                   help="stationary entropy = mean of the last this-many evaluations")


def _add_wait(parser):
    parser.add_argument("--wait", action="store_true",
                        help="if another process is writing --out, wait for it to finish "
                             "instead of stopping (default: stop with its pid and host)")


def _add_optimizer_options(parser, *, grid=False, default="sgd"):
    """The optimizer options; ``default`` None lets a sweep definition's own optimizer stand."""
    from thermosgd.theory.optimizers import OPTIMIZERS

    g = parser.add_argument_group("optimizer (torch.optim semantics; section 7 of the paper)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=default,
                   help="sgd (the paper), momentum (heavy ball, weight decay inside the buffer), "
                        "nesterov, or adamw (decoupled weight decay; fixed-lr only) (default "
                        "sgd)")
    g.add_argument("--momentum", type=float, default=None, nargs="+" if grid else None,
                   help="beta in [0, 1) for momentum and nesterov (nesterov: > 0), beta1 for "
                        "adamw (default 0.9; not for sgd)" + (
                            "; several values run a grid over beta" if grid else ""))
    g.add_argument("--beta2", type=float, default=None,
                   help="adamw's beta2 in (0, 1) (default 0.999; adamw only)")
    g.add_argument("--eps", type=float, default=None,
                   help="adamw's eps, added to sqrt(v_hat) (default 1e-8; adamw only)")


def _optimizer(args):
    """The Optimizer the options name, and the beta grid (several --momentum values, else ());
    ValueError (exit 2) with the allowed values."""
    from thermosgd.theory.optimizers import make_optimizer

    betas = args.momentum if isinstance(args.momentum, list) else None
    first = betas[0] if betas else args.momentum
    optimizer = make_optimizer(args.optimizer, momentum=first, beta2=args.beta2, eps=args.eps)
    return optimizer, tuple(betas) if betas and len(betas) > 1 else ()


def build_parser() -> argparse.ArgumentParser:
    from dataclasses import fields

    from thermosgd.isotropic import IsotropicConfig

    defaults = {f.name: f.default for f in fields(IsotropicConfig) if f.name != "protocol"}
    parser = _Parser(
        prog="thermosgd", description="Thermodynamics of SGD on scale-invariant networks.",
        epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"thermosgd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate", help="run the isotropic noise model (eq. 24) on one custom grid",
        description="Noisy GD on L(w) = 1 + mu^T w/|w| for every combination of the given "
                    "rates, weight decays (or radii) and seeds, in one batched run.")
    sim.add_argument("--protocol", required=True, choices=["fixed-lr", "fixed-elr", "fixed-sphere"])
    sim.add_argument("--lr", type=float, nargs="+", required=True,
                     help="eta (fixed-lr) or eta_eff (fixed-elr, fixed-sphere)")
    sim.add_argument("--wd", type=float, nargs="+", default=[], help="lambda (fixed-lr, fixed-elr)")
    sim.add_argument("--radius", type=float, nargs="+", default=[], help="r (fixed-sphere)")
    sim.add_argument("--seeds", type=int, nargs="+", default=[0])
    sim.add_argument("--out", required=True, help="output directory (new, empty or a previous run)")
    sim.add_argument("--no-progress", action="store_true")
    _add_wait(sim)
    _add_isotropic_options(sim, defaults=defaults)
    _add_optimizer_options(sim, grid=True)

    rep = sub.add_parser("reproduce", help="reproduce a part of the paper")
    rep_sub = rep.add_subparsers(dest="what", required=True)
    iso = rep_sub.add_parser(
        "isotropic", help="Figures 1, 3, 4 and checks V1-V4 for all three protocols",
        description="Simulate the isotropic model for all three protocols on the paper's grids "
                    "and write stationary tables, checks.json, figures and report.md. With "
                    "--optimizer the same grids run under that optimizer (adamw: fixed LR only, "
                    "its step does not scale with |w|^2), checked against its own theory.")
    iso.add_argument("--out", required=True, help="output directory")
    iso.add_argument("--scale", choices=["quick", "paper"], default="quick",
                     help="quick: ~1 minute on 2 cores; paper: 17x17 grids, 2e6 steps (default quick)")
    iso.add_argument("--no-progress", action="store_true")
    _add_wait(iso)
    _add_optimizer_options(iso)
    _add_train_parser(sub)
    _add_sweep_parsers(sub)
    _complete_help(parser)
    return parser


def _complete_help(parser) -> None:
    """Every option's help says its default and its choices (argparse's own formatter would
    repeat the defaults that the texts already give in words)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _complete_help(child)
            continue
        if action.help == argparse.SUPPRESS or action.dest in ("help", "version"):
            continue
        text = action.help or action.dest.replace("_", " ")
        if action.choices and not all(str(c) in text for c in action.choices):
            text += f" (one of {', '.join(map(str, action.choices))})"
        if action.option_strings and "default" not in text:
            if action.required:
                text += " (required)"
            elif isinstance(action, argparse._StoreTrueAction):
                text += " (default: off)"
            elif action.default in (None, []):
                text += " (default: none)"
            else:
                value = action.default
                shown = " ".join(map(str, value)) if isinstance(value, list) else value
                text += f" (default {shown})"
        action.help = text.replace("%", "%%") if "%(" not in text else text


def _add_sweep_parsers(sub):
    sw = sub.add_parser("sweep", help="the paper's grids and your own: list, run, status")
    sw_sub = sw.add_subparsers(dest="sweep_command", required=True)
    sw_sub.add_parser("list", help="the presets (appendix F, Table 3; appendix H; CPU scale)")
    run = sw_sub.add_parser(
        "run", help="train every configuration of a preset or grid; resumable",
        description="Train a sweep into --out: one run directory per configuration under "
                    "runs/. Running it again skips finished runs and resumes interrupted ones "
                    "from their checkpoints. A grid comes from a preset, a TOML file, or the "
                    "options below (which also override a preset's).")
    run.add_argument("spec", nargs="?", default=None,
                     help="preset name (`thermosgd sweep list`) or a .toml file; leave out to "
                          "give the grid with --protocol, --lr and --wd or --radius")
    run.add_argument("--out", required=True, help="the sweep directory (new, or this sweep's)")
    run.add_argument("--data", default=None, help="CIFAR archive or folder (not for digits)")
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument("--address", default=None,
                     help="Ray cluster (host:port, ray://host:port or auto); default: start a "
                          "local Ray instance")
    run.add_argument("--scale", type=float, default=1.0,
                     help="multiply run lengths (iterations, log and snapshot spacing) by F, "
                          "e.g. 0.01 for a trial run (default 1)")
    run.add_argument("--max-batch", type=int, default=None,
                     help="configurations per group (default: 1 on CPU; on a GPU as many as fit "
                          "8 GiB of entropy queues)")
    run.add_argument("--mechanism", choices=("auto", "loop", "vmap"), default="auto")
    run.add_argument("--device", default="auto", help="local executor: cpu, cuda, cuda:N, auto")
    run.add_argument("--workers", type=int, default=None,
                     help="local executor on a CPU: processes training at once, one thread "
                          "each (default: one per usable core)")
    run.add_argument("--cpus-per-task", type=int, default=1, help="Ray tasks on CPU nodes")
    run.add_argument("--checkpoint-every", type=float, default=600.0,
                     help="seconds between checkpoints, taken at log points (default 600)")
    run.add_argument("--no-progress", action="store_true")
    grid = run.add_argument_group("a custom grid, or overrides of the preset's")
    grid.add_argument("--protocol", choices=("fixed-lr", "fixed-elr", "fixed-sphere"))
    grid.add_argument("--model", choices=("convnet", "resnet18"))
    grid.add_argument("--width", type=int)
    grid.add_argument("--dataset", choices=("cifar10", "cifar100", "digits"))
    grid.add_argument("--iterations", type=int)
    grid.add_argument("--queue-size", type=int)
    grid.add_argument("--lr", type=float, nargs="+", help="eta or eta_eff values")
    grid.add_argument("--wd", type=float, nargs="+", help="lambda values")
    grid.add_argument("--radius", type=float, nargs="+", help="r values (fixed-sphere)")
    grid.add_argument("--seeds", type=int, nargs="+")
    _add_convention_options(grid, {})
    grid.add_argument("--stationary-logs", type=int,
                      help="stationary means over the last this-many logs (the paper: 30; one "
                           "of its CIFAR-100 notebooks: 60)")
    _add_optimizer_options(run, grid=True, default=None)
    st = sw_sub.add_parser("status", help="finished, running, diverged, pending counts")
    st.add_argument("dir", help="a sweep directory")
    co = sub.add_parser("collect", help="one metrics.parquet and stationary.csv for a sweep",
                        description="Write DIR/metrics.parquet (every log of every run) and "
                                    "DIR/stationary.csv (one row per configuration).")
    co.add_argument("dir", help="a sweep directory")
    where = (" DIR is a sweep (`thermosgd sweep run --out`), an isotropic output (`thermosgd "
             "reproduce isotropic --out`) or a folder of them.")
    for name, text, description, bootstrap in (
            ("analyze", "stationary tables, V1-V4, V3 Table 4, appendix H flags",
             ("Write DIR/analysis.json (every check's numbers per protocol, with what was run) "
              "and DIR/analysis_table.csv (the stationary tables in the schema's columns, a "
              "`result` column first). A folder: each result's files, and its own pair with an "
              "index of the results." + where), True),
            ("plot", "figures (paper Figures 1-10, 12, 13)",
             ("The figures each result's columns allow, PNG and PDF: a sweep's "
              "DIR/figures/{stationary,radius_theories,learning_curves}, an isotropic output's "
              "DIR/<protocol>/figure (Figures 1, 3, 4)." + where),
             False),
            ("report", "one self-contained HTML report and a Markdown summary",
             ("Write DIR/report.html (figures embedded) and DIR/report.md: how many checks "
              "pass, then per protocol the headline figure, every judged check with its value, "
              "interval, the paper's value and tolerance, the other figures, and the reported "
              "numbers folded away." + where), True)):
        reader = sub.add_parser(name, help=text, description=description)
        reader.add_argument("dir", help="a sweep, an isotropic output, or a folder of them")
        reader.add_argument("--out", default=None,
                            help="write the files here, laid out as under DIR, instead of "
                                 "into DIR (for results you cannot or should not write to; "
                                 "default: DIR)")
        if bootstrap:
            reader.add_argument("--bootstrap", type=int, default=1000,
                                help="bootstrap resamples for the fit's intervals (0: none)")


def _optimizer_options(args) -> tuple[dict, tuple | None]:
    """The optimizer's TrainConfig fields from the command line, and the momenta axis (None for
    one value or none)."""
    momenta = args.momentum or []
    fields = {"optimizer": args.optimizer, "beta2": args.beta2, "eps": args.eps,
              "momentum": momenta[0] if len(momenta) == 1 else None}
    return ({k: v for k, v in fields.items() if v is not None},
            tuple(momenta) if len(momenta) > 1 else None)


def _add_train_parser(sub):
    from dataclasses import fields

    from thermosgd.nn.config import TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)}
    tr = sub.add_parser(
        "train", help="train one scale-invariant network under one protocol, measuring T, p, V, S",
        description="Train a scale-invariant ConvNet or ResNet-18 under fixed LR, fixed ELR or "
                    "a fixed sphere and log every thermodynamic quantity (section 6). Writes "
                    "config.json, metrics.parquet, summary.json and checkpoint.pt to --out; the "
                    "same command resumes a killed run.")
    tr.add_argument("--model", default=d["model"], help="convnet or resnet18 (default convnet)")
    tr.add_argument("--width", type=int, default=None,
                    help="k, width multiplier (default: the paper's, convnet 8, resnet18 4)")
    tr.add_argument("--dataset", default=d["dataset"], help="cifar10, cifar100 or digits")
    tr.add_argument("--data", default=None,
                    help="path of cifar-10-python.tar.gz / cifar-100-python.tar.gz or its folder")
    tr.add_argument("--samples-per-class", type=int, default=None, help="seeded training subset")
    tr.add_argument("--image-size", type=int, default=None, help="resize inputs (>= 8 px)")
    tr.add_argument("--label-noise", type=float, default=0.0,
                    help="fraction of train labels replaced by uniformly drawn classes (default "
                         "0; not in the paper: keeps an easy task from interpolating)")
    tr.add_argument("--protocol", required=True, help="fixed-lr, fixed-elr or fixed-sphere")
    tr.add_argument("--lr", type=float, nargs="+", required=True,
                    help="eta (fixed-lr) or eta_eff (fixed-elr, fixed-sphere); several values "
                         "(with several --wd, --radius or --seed) train their grid as a batch")
    tr.add_argument("--wd", type=float, nargs="+", default=None,
                    help="lambda (fixed-lr, fixed-elr)")
    tr.add_argument("--radius", type=float, nargs="+", default=None, help="r (fixed-sphere)")
    tr.add_argument("--seed", type=int, nargs="+", default=[0], help="mini-batch stream(s)")
    tr.add_argument("--out", required=True,
                    help="run directory (new, empty, or this run's); for a grid, the directory "
                         "that holds one run directory per configuration")
    tr.add_argument("--max-batch", type=int, default=None,
                    help="most configurations trained at once by the batched engine (default all)")
    tr.add_argument("--mechanism", choices=("auto", "loop", "vmap"), default="auto",
                    help="how the batched engine computes G gradients: a loop (fastest on CPU, "
                         "bitwise the single run) or torch.func.vmap (for GPUs); auto picks")
    g = tr.add_argument_group("length, seeds and measurement (paper defaults)")
    for name, kind, text in (
            ("iterations", int, "SGD steps"), ("batch_size", int, "B"),
            ("init_seed", int, "initial weights"),
            ("head_seed", int, "frozen head"), ("bn_eps", float, "BatchNorm eps"),
            ("queue_size", int, "N, snapshots for the entropy"),
            ("queue_every", int, "iterations between snapshots"),
            ("log_every", int, "log spacing up to --log-linear-until"),
            ("log_linear_until", int, "then --log-points log-spaced logs"),
            ("log_points", int, "log-spaced logs after the linear part"),
            ("stationary_logs", int, "stationary means over the last this-many logs"),
            ("measure_passes", int, "train-set passes per log for loss, gradient, Tr Sigma")):
        g.add_argument("--" + name.replace("_", "-"), type=kind, default=d[name],
                       help=f"{text} (default {d[name]})")
    _add_convention_options(g, d)
    _add_optimizer_options(tr, grid=True, default=None)
    tr.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:N or auto (default)")
    tr.add_argument("--checkpoint-every", type=float, default=600.0,
                    help="seconds between checkpoints, taken at log points (default 600)")
    tr.add_argument("--no-progress", action="store_true")
    _add_wait(tr)


def _add_convention_options(group, defaults):
    """--chart and --measurement; TrainConfig checks the values (one line, exit 2)."""
    group.add_argument("--chart", default=defaults.get("chart"),
                       help="entropy chart(s) recorded at each log point: both, aligned "
                            "(thermosgd's estimator) or raw (the paper's chart) (default both)")
    group.add_argument("--measurement", default=defaults.get("measurement"),
                       help="log-point conventions: thermosgd (one pass of disjoint batches) or "
                            "paper (BatchNorm batches of 1024, Q = N extra batches for Tr Sigma, "
                            "queue-radius rescaling, truncated log schedule) (default thermosgd)")
