"""Command line: ``thermosgd simulate``, ``reproduce isotropic``, ``train``, ``sweep list|run|
status``, ``collect``, ``analyze``, ``plot`` and ``report``.

Bad input exits with status 2 and one line saying what to change; nothing is written. The
parser (every option, its default and its choices) is in :mod:`thermosgd.cli.parser`; this
module turns parsed options into one library call each.
"""

from __future__ import annotations

from thermosgd.cli.parser import _optimizer, _optimizer_options, build_parser

__all__ = ["build_parser", "main"]


class _RunsFailed(RuntimeError):
    """A sweep that ran, but some runs raised: the summary goes to stderr, exit status 1."""


def _sweep_summary(out, results) -> str:
    """What a sweep run did; raises _RunsFailed naming each failed run and why."""
    from thermosgd.sweeps.local import describe_results, failed_runs

    text = describe_results(out, results)
    failed = failed_runs(results)
    if failed:
        raise _RunsFailed(f"{text}\nthermosgd: error: {len(failed)} of {len(results)} runs "
                          "failed (the reasons above, and in `thermosgd sweep status`); fix the "
                          "cause and run the same command again to retry them")
    return text


def _prepare(args):
    """Validate everything the command needs; return the job to run. Raises ValueError.
    Each command imports what it needs only: one that reads or refuses results answers without
    importing torch."""
    progress = not getattr(args, "no_progress", True)
    if args.command in ("analyze", "plot", "report"):
        return _prepare_results(args)
    if args.command in ("sweep", "collect"):
        return _prepare_sweep(args, progress)
    if args.command == "train":
        return _prepare_train(args, progress)
    from thermosgd.isotropic import IsotropicConfig
    from thermosgd.results import io as _io
    from thermosgd.reproduce import KIND, isotropic_configs, run_isotropic

    optimizer, momenta = _optimizer(args)
    if args.command == "simulate":
        configs = [IsotropicConfig(
            protocol=args.protocol, learning_rates=args.lr, weight_decays=args.wd,
            radii=args.radius, seeds=args.seeds, dim=args.dim, sigma=args.sigma,
            iterations=args.iterations, log_every=args.log_every,
            stationary_logs=args.stationary_logs, queue_size=args.queue_size,
            queue_every=args.queue_every, entropy_every=args.entropy_every,
            entropy_average=args.entropy_average, optimizer=optimizer, momenta=momenta)]
        scale = "custom"
    else:
        configs, scale = isotropic_configs(args.scale, optimizer=optimizer), args.scale
    _io.check_output_dir(args.out, KIND)

    def job():
        run_isotropic(args.out, scale, configs=configs, progress=progress, wait=args.wait)
        return f"wrote {args.out}/report.md"

    return job


_TRAIN_FIELDS = ("samples_per_class", "image_size", "label_noise", "batch_size", "init_seed",
                 "head_seed", "bn_eps", "queue_every", "log_every", "log_linear_until",
                 "log_points", "stationary_logs", "measure_passes", "chart", "measurement")
_SWEEP_TRAIN_FIELDS = ("chart", "measurement", "stationary_logs")  # sweep run's overrides


def _prepare_train(args, progress):
    """One configuration: a run directory. Several (--lr, --wd or --radius, --seed with more
    than one value): a sweep directory, trained as one batch."""
    from thermosgd import sweeps
    from thermosgd.nn import config as nn_config

    _check_run_options(args)
    optimizer, momenta = _optimizer_options(args)
    size = (len(args.lr) * len(args.wd or args.radius or [None]) * len(args.seed)
            * len(momenta or [None]))
    if size == 1:
        from thermosgd.nn import training as trainer

        config = nn_config.TrainConfig(
            protocol=args.protocol, model=args.model, width=args.width, dataset=args.dataset,
            data=args.data, learning_rate=args.lr[0],
            weight_decay=args.wd[0] if args.wd else None,
            radius=args.radius[0] if args.radius else None, seed=args.seed[0],
            iterations=args.iterations, queue_size=args.queue_size, device=args.device,
            **{name: getattr(args, name) for name in _TRAIN_FIELDS}, **optimizer)
        trainer.prepare(config, args.out, checkpoint=True)
        from thermosgd.nn.data import load_data

        data = load_data(config, nn_config.resolve_device(config.device))

        def job():
            result = trainer.train(config, args.out, dataset=data, progress=progress,
                                   checkpoint_every=args.checkpoint_every, wait=args.wait)
            if result.summary["status"] == "diverged":
                why = f" ({result.summary['reason']})" if result.summary.get("reason") else ""
                return (f"diverged at iteration {result.summary['diverged_at']}{why}; wrote "
                        f"{args.out}")
            return f"finished {result.summary['iterations_done']} iterations; wrote {args.out}"
        return job
    from pathlib import Path

    spec = sweeps.sweep_from_options(
        name=Path(args.out).name, protocol=args.protocol, model=args.model, width=args.width,
        dataset=args.dataset, iterations=args.iterations, queue_size=args.queue_size,
        learning_rates=args.lr, weight_decays=args.wd, radii=args.radius, seeds=args.seed,
        momenta=momenta, train={name: getattr(args, name) for name in _TRAIN_FIELDS
                                if getattr(args, name) is not None} | optimizer,
        where="the command line")
    return _local_sweep_job(args, spec, progress, max_batch=args.max_batch or spec.size)


def _check_run_options(args):
    if args.max_batch is not None and args.max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
    if not args.checkpoint_every >= 0:
        raise ValueError(f"--checkpoint-every must be >= 0 seconds, got {args.checkpoint_every}")


def _local_sweep_job(args, spec, progress, *, max_batch):
    """Check everything and load the data (bad input exits 2, nothing written); the job trains."""
    from thermosgd import sweeps

    data = sweeps.check_local(spec, args.out, data=args.data, scale=getattr(args, "scale", 1.0),
                              device=args.device, max_batch=max_batch)

    def job():
        results = sweeps.run_local(spec, args.out, dataset=data, scale=getattr(args, "scale", 1.0),
                                   device=args.device, max_batch=max_batch, progress=progress,
                                   checkpoint_every=args.checkpoint_every,
                                   mechanism=args.mechanism, workers=getattr(args, "workers", None))
        return _sweep_summary(args.out, results)
    return job


def _prepare_sweep(args, progress):
    from thermosgd import sweeps

    if args.command == "collect":
        sweeps.read_sweep_dir(args.dir)

        def collect_job():
            _, table = sweeps.collect(args.dir)
            return f"wrote {args.dir}/metrics.parquet and {args.dir}/stationary.csv " \
                   f"({len(table)} configurations)"
        return collect_job
    if args.sweep_command == "list":
        return sweeps.describe_presets
    if args.sweep_command == "status":
        sweeps.read_sweep_dir(args.dir)
        return lambda: sweeps.describe_status(args.dir)
    optimizer, momenta = _optimizer_options(args)
    spec = sweeps.sweep_from_options(
        args.spec, protocol=args.protocol, model=args.model, width=args.width,
        dataset=args.dataset, iterations=args.iterations, queue_size=args.queue_size,
        learning_rates=args.lr, weight_decays=args.wd, radii=args.radius, seeds=args.seeds,
        momenta=momenta, train={name: getattr(args, name) for name in _SWEEP_TRAIN_FIELDS
                                if getattr(args, name) is not None} | optimizer or None)
    _check_run_options(args)
    options = {"data": args.data, "scale": args.scale, "max_batch": args.max_batch,
               "progress": progress, "checkpoint_every": args.checkpoint_every,
               "mechanism": args.mechanism}
    if args.executor == "ray":
        from thermosgd.sweeps.ray import check_address, run_ray

        if args.address is not None:
            check_address(args.address)
        sweeps.plan(spec, args.out, data=args.data, scale=args.scale, device="cpu", max_batch=1)

        def ray_job():
            return _sweep_summary(args.out, run_ray(
                spec, args.out, address=args.address, cpus_per_task=args.cpus_per_task,
                **options))
        return ray_job
    if args.address is not None:
        raise ValueError("--address is for --executor ray")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    return _local_sweep_job(args, spec, progress, max_batch=args.max_batch)


def _prepare_results(args):
    """analyze, plot, report: DIR is a sweep, an isotropic output or a folder of them. The
    analysis runs here, so that bad input exits 2 before anything is written."""
    from thermosgd.results.locate import locate

    locate(args.dir)  # not a result: refused before the analysis stack is imported
    from thermosgd.report import build as results  # analyse, plot, report any result

    bootstrap = getattr(args, "bootstrap", 0)
    analysed = results.analyse(args.dir, bootstrap=0 if args.command == "plot" else bootstrap,
                               out=args.out)
    if args.command == "plot":
        return lambda: "wrote " + ", ".join(
            str(p) for p in results.plot(args.dir, analysed=analysed))
    if args.command == "report":
        def report_job():
            page, summary = results.report(args.dir, analysed=analysed, out=args.out)
            return f"wrote {page} and {summary}"
        return report_job

    def analyze_job():
        written = results.write_analyses(args.dir, analysed, out=args.out)
        return "\n".join(results.summary_lines(analysed) +
                         ["wrote " + ", ".join(str(p) for p in written)])
    return analyze_job


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        job = _prepare(args)
        message = job()
    except ValueError as err:  # bad input, found before anything is written (or at start-up)
        parser.exit(2, f"thermosgd: error: {err}\n")
    except OSError as err:  # an unwritable destination; files are written atomically
        from thermosgd.results.io import describe_os_error

        parser.exit(2, f"thermosgd: error: {describe_os_error(err)}\n")
    except _RunsFailed as err:  # the sweep ran; some of its runs did not
        parser.exit(1, f"{err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "thermosgd: interrupted; run the same command again to resume from "
                         "the last checkpoint\n")
    print(message)
    return 0

