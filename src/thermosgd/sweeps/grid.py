"""Sweep grids: the paper's presets (appendix F, Table 3), TOML files and command-line grids.

A sweep is one protocol on one architecture and dataset over a grid of learning rates (eta for
fixed LR, eta_eff for fixed ELR and the fixed sphere) times weight decays lambda (or the sphere's
radii r), times seeds.
For example ResNet-18 k=4 on CIFAR-10 has 19 LRs 10^(-3+n/6) x 5 WDs 10^(-3+n/2) = 95 fixed-LR
runs.
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before Python 3.11
    import tomli as tomllib

__all__ = ["PRESETS", "Sweep", "describe_presets", "load_sweep", "sweep_from_dict",
           "sweep_from_options"]


def _log_grid(start: float, step: float, count: int) -> tuple[float, ...]:
    """10^(start + n step), n = 0..count-1 (Table 3's grids)."""
    return tuple(float(10 ** (start + n * step)) for n in range(count))


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """One protocol, architecture and dataset over learning rates x (weight decays or sphere
    radii) x seeds. Fixed LR and fixed ELR take ``weight_decays``, the fixed sphere ``radii``."""

    name: str  # preset name, the TOML file's stem, or the output folder's name
    protocol: str  # "fixed-lr", "fixed-elr" or "fixed-sphere"
    model: str  # "convnet" or "resnet18"
    width: int  # k, width multiplier
    dataset: str  # "cifar10", "cifar100" or "digits"
    iterations: int  # SGD steps per run
    queue_size: int  # N, weight snapshots for the entropy
    learning_rates: tuple[float, ...]  # eta (fixed LR) or eta_eff (fixed ELR, fixed sphere)
    weight_decays: tuple[float, ...] = ()  # lambda, the pressure (fixed LR, fixed ELR)
    radii: tuple[float, ...] = ()  # r, the sphere's radius (fixed sphere)
    seeds: tuple[int, ...] = (0,)  # mini-batch streams
    momenta: tuple[float, ...] = ()  # beta (or AdamW's beta1) as a grid axis; () = train's
    train: dict = field(default_factory=dict)  # any other TrainConfig field, e.g. log_every
    description: str = ""

    def __post_init__(self):
        for axis in ("learning_rates", "weight_decays", "radii", "seeds", "momenta"):
            object.__setattr__(self, axis, tuple(getattr(self, axis)))
        if len(set(self.momenta)) != len(self.momenta):
            raise ValueError(f"sweep {self.name!r}: the momenta grid repeats a value")
        sphere = self.protocol == "fixed-sphere"
        own, other = ("radii", "weight_decays") if sphere else ("weight_decays", "radii")
        if getattr(self, other):
            raise ValueError(f"sweep {self.name!r}: {self.protocol} takes {own}, not {other}")
        for axis in ("learning_rates", own, "seeds"):
            values = getattr(self, axis)
            if not values:
                raise ValueError(f"sweep {self.name!r}: the {axis} grid is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"sweep {self.name!r}: the {axis} grid repeats a value")
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63
                   for s in self.seeds):  # torch's generators take int64 seeds
            raise ValueError(f"sweep {self.name!r}: seeds must be integers in [0, 2^63), got "
                             f"{list(self.seeds)}")
        from thermosgd.nn.config import TrainConfig

        allowed = {f.name for f in fields(TrainConfig)} - set(_OWN_FIELDS)
        unknown = set(self.train) - allowed
        if unknown:
            raise ValueError(f"sweep {self.name!r}: unknown training option(s) "
                             f"{', '.join(sorted(unknown))}; choose from {', '.join(sorted(allowed))}")
        for rate in self.learning_rates:  # every grid value goes through TrainConfig's checks
            for value in self.weight_decays_or_radii:
                for beta in self._momenta:
                    self._config(rate, value, self.seeds[0], data=None, scale=1.0, device="cpu",
                                 check_data=False, momentum=beta)

    @classmethod
    def from_dict(cls, record: dict) -> "Sweep":
        """A definition as :meth:`to_dict` writes it; thermosgd 0.1's spelling (``rates`` and
        ``seconds`` for the two axes) is read too."""
        record = dict(record)
        if "rates" in record:  # schema 0.1
            record["learning_rates"] = record.pop("rates")
            key = "radii" if record.get("protocol") == "fixed-sphere" else "weight_decays"
            record[key] = record.pop("seconds")
        return cls(**record)

    @property
    def weight_decays_or_radii(self) -> tuple[float, ...]:
        """The grid's other axis: the weight decays, or the sphere's radii."""
        return self.radii if self.protocol == "fixed-sphere" else self.weight_decays

    @property
    def _momenta(self) -> tuple:
        """The momentum axis, or (None,): the training options' momentum (or none)."""
        return self.momenta or (None,)

    @property
    def size(self) -> int:
        return (len(self.learning_rates) * len(self.weight_decays_or_radii) * len(self.seeds)
                * len(self._momenta))

    def configs(self, *, data: str | None = None, scale: float = 1.0, device: str = "auto"):
        """The grid's TrainConfigs, momenta outermost, then learning rates. ``scale`` multiplies the run
        length: the iterations, the linear log spacing and the snapshot spacing (the shape of the
        log schedule and the queue are kept), for trial runs."""
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"--scale must be positive, got {scale}")
        return [self._config(r, s, seed, data=data, scale=scale, device=device, momentum=beta)
                for beta in self._momenta for r in self.learning_rates
                for s in self.weight_decays_or_radii for seed in self.seeds]

    def check_scale(self, scale: float) -> None:
        """Refuse a ``scale`` (ValueError) below which a log interval, or the whole run, would
        shrink under one iteration: the clamped schedule would no longer be the sweep's, shrunk,
        and every run would be a few steps long."""
        from thermosgd.nn.config import TrainConfig

        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"--scale must be positive, got {scale}")
        log_every = self.train.get("log_every",
                                   TrainConfig.__dataclass_fields__["log_every"].default)
        shortest = min(log_every, self.iterations)  # iterations per log, or the whole run
        if scale * shortest < 1 - 1e-9:
            raise ValueError(f"--scale {scale:g} leaves less than one iteration per log "
                             f"({shortest} iterations x scale); the smallest scale for sweep "
                             f"{self.name!r} is {1 / shortest:.3g}")

    def _config(self, rate, value, seed, *, data, scale, device, check_data=True,
                momentum=None):
        from thermosgd.nn.config import TrainConfig

        base = TrainConfig(protocol="fixed-lr", learning_rate=1.0, weight_decay=1.0)
        opts = dict(self.train) | {"iterations": self.iterations}

        def scaled(name, low):
            value = opts.get(name, getattr(base, name))
            if scale == 1 or isinstance(value, bool) or not isinstance(value, numbers.Integral):
                return value  # as given: TrainConfig names a wrong type or a count below 1
            return max(low, round(value * scale))

        opts.update(iterations=scaled("iterations", 1),
                    log_every=scaled("log_every", 1), queue_every=scaled("queue_every", 1),
                    log_linear_until=scaled("log_linear_until", 0))
        if momentum is not None:
            opts["momentum"] = momentum
        if self.dataset != "digits" and not check_data:
            data = data or "unchecked"  # grid checks only; the real path comes at run time
        key = "radius" if self.protocol == "fixed-sphere" else "weight_decay"
        try:
            return TrainConfig(protocol=self.protocol, model=self.model, width=self.width,
                               dataset=self.dataset, data=data, queue_size=self.queue_size,
                               learning_rate=float(rate), seed=int(seed), device=device,
                               **{key: float(value)}, **opts)
        except ValueError as err:
            where = "" if momentum is None else f", momentum {momentum:g}"
            raise ValueError(f"sweep {self.name!r}, grid point ({rate:g}, {value:g}{where}): "
                             f"{err}") from None

    def to_dict(self) -> dict:
        return asdict(self)



_OWN_FIELDS = ("protocol", "model", "width", "dataset", "data", "iterations", "queue_size",
               "learning_rate", "weight_decay", "radius", "seed", "device")

def _other_axis(protocol: str) -> str:
    return "radii" if protocol == "fixed-sphere" else "weight_decays"


def _presets() -> dict[str, Sweep]:
    """Appendix F, Table 3: four setups x three protocols; appendix H; small CPU grids."""
    elr = {"resnet18": _log_grid(-4, 1 / 6, 14), "convnet": _log_grid(-4, 1 / 6, 13)}
    lr = {"resnet18": _log_grid(-3, 1 / 6, 19), "convnet": _log_grid(-3, 1 / 6, 13)}
    radii = tuple(2.0 ** (-2 + n) for n in range(5))
    setups = {  # name: model, k, dataset, iterations, N, WD grid
        "resnet18-cifar10": ("resnet18", 4, "cifar10", 10**6, 1000, _log_grid(-3, 1 / 2, 5)),
        "resnet18-cifar100": ("resnet18", 4, "cifar100", 2 * 10**6, 1000,
                              _log_grid(-3, 1 / 2, 5)),
        "convnet-cifar10": ("convnet", 8, "cifar10", 2 * 10**6, 4000, _log_grid(-3, 1 / 4, 9)),
        "convnet-cifar100": ("convnet", 16, "cifar100", 2 * 10**6, 4000,
                             _log_grid(-2, 1 / 4, 9)),
    }
    presets = {}
    for setup, (model, k, dataset, iterations, n, wds) in setups.items():
        common = {"model": model, "width": k, "dataset": dataset, "iterations": iterations,
                  "queue_size": n}
        for protocol, rates, others in (("fixed-lr", lr[model], wds),
                                         ("fixed-elr", elr[model], wds),
                                         ("fixed-sphere", elr[model], radii)):
            name = f"{setup}-{protocol}"
            presets[name] = Sweep(name=name, protocol=protocol, learning_rates=rates,
                                  **{_other_axis(protocol): others},
                                  description=f"paper, appendix F (Table 3): {setup}, {protocol}",
                                  **common)
    presets["resnet18x32-cifar10-overparam"] = Sweep(
        name="resnet18x32-cifar10-overparam", protocol="fixed-elr", model="resnet18", width=32,
        dataset="cifar10", iterations=10**6, queue_size=500,
        learning_rates=_log_grid(-4, 1 / 2, 5), weight_decays=(1e-3,), description="paper, appendix H (Figure 13): k=32, lambda=1e-3; the "
        "paper says 'several ELRs' without values, these five are ours")
    # CPU scale, not from the paper. On clean digits the ConvNet interpolates (loss -> 0, the
    # radius shrinks: appendix H's convergence regime), and from ||w|| = 1 fixed ELR diverges
    # within ~10 steps for eta_eff >= 0.02 at k = 8. With k = 4 and 30 % of the train labels
    # redrawn the network cannot fit the set, and all three protocols become stationary.
    cpu = {"model": "convnet", "width": 4, "dataset": "digits", "iterations": 6000,
           "queue_size": 200, "train": {"log_every": 200, "log_linear_until": 2000,
                                        "log_points": 60, "measure_passes": 2,
                                        "label_noise": 0.3}}
    elr_digits = (0.004, 0.006, 0.009, 0.0135, 0.02)
    for protocol, rates, others in (("fixed-lr", (0.2, 0.4, 0.8, 1.6, 3.2), (0.004, 0.008, 0.016)),
                                     ("fixed-elr", elr_digits, (0.003, 0.01, 0.03)),
                                     ("fixed-sphere", elr_digits, (1.0, 2.0, 4.0))):
        name = f"convnet-digits-{protocol}"
        presets[name] = Sweep(name=name, protocol=protocol, learning_rates=rates,
                              **{_other_axis(protocol): others}, description="CPU scale, not from the paper: scikit-learn's digits "
                              "with 30 % label noise, ConvNet k=4, 5 x 3 grid, 6000 steps", **cpu)
    return presets



PRESETS = _presets()

def load_sweep(spec: str) -> Sweep:
    """A preset's name or a TOML file (see README): name, protocol, model, width, dataset,
    iterations, queue_size, learning_rates, weight_decays or radii, seeds, [train]."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix != ".toml":
        raise ValueError(f"unknown preset {spec!r}; `thermosgd sweep list` shows them, or give a "
                         ".toml file")
    if not path.is_file():
        raise ValueError(f"sweep file {path} does not exist")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:  # TOML is UTF-8 by its specification
        raise ValueError(f"sweep file {path} is not UTF-8 text (byte {err.start}: "
                         f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep file {path} is not valid TOML: {err}") from None
    return sweep_from_dict(table, default_name=path.stem, where=str(path))


def sweep_from_dict(table: dict, *, default_name: str = "custom", where: str = "grid") -> Sweep:
    table = dict(table)
    protocol = table.pop("protocol", None)
    if protocol is None:
        raise ValueError(f"{where}: give protocol = \"fixed-lr\", \"fixed-elr\" or \"fixed-sphere\"")
    other_key = "radii" if protocol == "fixed-sphere" else "weight_decays"
    missing = [k for k in ("learning_rates", other_key) if k not in table]
    if missing:
        raise ValueError(f"{where}: the {protocol} grid needs {' and '.join(missing)}")
    model = table.pop("model", "convnet")
    if not isinstance(model, str):
        raise ValueError(f"{where}: model must be a string, got {model!r}")
    known = {"name", "width", "dataset", "iterations", "queue_size", "seeds", "train",
             "description", "learning_rates", other_key, "momenta"}
    extra = set(table) - known
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; "
                         f"allowed: {', '.join(sorted(known | {'protocol', 'model'}))}")
    for key in ("name", "model", "dataset", "description"):
        if key in table and not isinstance(table[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {table[key]!r}")
    for key in ("width", "iterations", "queue_size"):
        if key in table and not _positive_int(table[key]):
            raise ValueError(f"{where}: {key} must be a positive integer, got {table[key]!r}")
    seeds = table.get("seeds", [0])
    if not (isinstance(seeds, (list, tuple)) and seeds
            and all((_positive_int(s) or s == 0) and s < 2**63 for s in seeds)):
        raise ValueError(f"{where}: seeds must be a list of integers in [0, 2^63), got {seeds!r}")
    if not isinstance(table.get("train", {}), dict):
        raise ValueError(f"{where}: train must be a table of training options, got "
                         f"{table['train']!r}")
    try:
        return _sweep_of_table(table, protocol, model, other_key, default_name, where)
    except ValueError as err:  # the grid's own checks: say which file (or command line) it is
        raise ValueError(f"{where}: {err}") from None


def _sweep_of_table(table, protocol, model, other_key, default_name, where) -> Sweep:
    from thermosgd.nn.config import PAPER_WIDTH

    return Sweep(name=table.get("name", default_name), protocol=protocol, model=model,
                 width=table.get("width", PAPER_WIDTH.get(model, 8)),
                 dataset=table.get("dataset", "digits"),
                 iterations=table.get("iterations", 10_000),
                 queue_size=table.get("queue_size", 1000),
                 learning_rates=_axis(table["learning_rates"], "learning_rates", where),
                 **{other_key: _axis(table[other_key], other_key, where)},
                 seeds=tuple(table.get("seeds", (0,))), train=table.get("train", {}),
                 momenta=_axis(table["momenta"], "momenta", where) if "momenta" in table else (),
                 description=table.get("description", f"custom grid from {where}"))


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _axis(value, key, where) -> tuple[float, ...]:
    """A list of numbers, or {from, to, num}: num log-spaced values from..to."""
    if isinstance(value, dict):
        try:
            return tuple(float(v) for v in np.geomspace(value["from"], value["to"], value["num"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: {key} as a table needs from, to (> 0) and num") from None
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{where}: {key} must be a list of numbers or {{from, to, num}}")
    return tuple(float(v) for v in value)



def sweep_from_options(spec: str | None = None, *, name: str | None = None,
                       where: str = "command line", **options) -> Sweep:
    """A preset or TOML file (``spec``) with ``options`` overriding its fields, or, without
    ``spec``, the grid the options give (``protocol``, ``learning_rates`` and ``weight_decays``
    or ``radii``). Options left None are not given; ``train`` holds other TrainConfig fields."""
    options = {k: v for k, v in options.items() if v is not None}
    for axis in ("learning_rates", "weight_decays", "radii", "seeds", "momenta"):
        if axis in options:
            options[axis] = tuple(options[axis])
    if "weight_decays" in options and "radii" in options:
        raise ValueError("give --wd (fixed-lr, fixed-elr) or --radius (fixed-sphere), not both")
    if spec is None:
        other = "radii" if options.get("protocol") == "fixed-sphere" else "weight_decays"
        if not {"protocol", "learning_rates", other} <= set(options):
            raise ValueError("give a preset or .toml file, or a grid: --protocol, --lr and --wd "
                             "(or --radius for fixed-sphere)")
        return sweep_from_dict({k: list(v) if isinstance(v, tuple) else v
                                for k, v in options.items()} | {"name": name or "custom"},
                               where=where)
    base = load_sweep(spec)
    protocol = options.pop("protocol", base.protocol)  # a new protocol keeps the other axis
    others = (options.pop("weight_decays", None) or options.pop("radii", None)
              or base.weight_decays_or_radii)
    if "train" in options:
        options["train"] = base.train | options["train"]
    axes = {"weight_decays": (), "radii": ()} | {_other_axis(protocol): others}
    return replace(base, protocol=protocol, **axes, **options,
                   **({"name": name} if name else {}))


def describe_presets(presets: dict[str, Sweep] | None = None) -> str:
    """One line per preset: runs, iterations, queue, grid, source."""
    presets = PRESETS if presets is None else presets
    lines = [f"{'preset':<34}{'runs':>6}{'iterations':>12}{'N':>6}  grid"]
    for key, p in presets.items():
        symbol = "r" if p.protocol == "fixed-sphere" else "lambda"
        rate = "eta" if p.protocol == "fixed-lr" else "eta_eff"
        rates, others = p.learning_rates, p.weight_decays_or_radii
        lines.append(f"{key:<34}{p.size:>6}{p.iterations:>12.3g}{p.queue_size:>6}  "
                     f"{len(rates)} {rate} in [{min(rates):.3g}, {max(rates):.3g}] x "
                     f"{len(others)} {symbol} in [{min(others):.3g}, {max(others):.3g}]"
                     f"; {p.description}")
    return "\n".join(lines)
