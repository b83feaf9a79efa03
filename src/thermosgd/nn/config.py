"""A network run's configuration, its device and its data (section 6, appendix F defaults)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from thermosgd.protocols import PROTOCOLS, make_protocol
from thermosgd.results.schema import CHARTS, MEASUREMENTS
from thermosgd.theory.optimizers import OPTIMIZERS, Optimizer, make_optimizer

# torch loads only with the data and the device: a config, and the CLI's help, need neither
__all__ = ["BN_EPS", "CHART_CHOICES", "DATASETS", "MEASUREMENTS", "MODEL_NAMES", "PAPER_WIDTH",
           "TrainConfig", "optimizer_protocols", "resolve_device"]

MODEL_NAMES = ("convnet", "resnet18")
DATASETS = ("cifar10", "cifar100", "digits")
PAPER_WIDTH = {"convnet": 8, "resnet18": 4}  # k of the paper's main CIFAR-10 runs (appendix F)
BN_EPS = 1e-5  # PyTorch's default, as in the paper's code; see nn.models.build_model
CHART_CHOICES = ("both", *CHARTS)  # entropy charts a run records at each log point
SEED_LIMIT = 2**63  # seeds are stored as int64 (torch generators, NumPy seed arrays)
_FLOATS = ("learning_rate", "weight_decay", "radius", "label_noise", "bn_eps", "momentum",
           "beta2", "eps")
_INTS = ("width", "samples_per_class", "image_size", "iterations", "batch_size", "seed",
         "init_seed", "head_seed", "queue_size", "queue_every", "log_every", "log_linear_until",
         "log_points", "stationary_logs", "measure_passes")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One run. Hyperparameters follow the protocol: fixed LR takes (learning_rate = eta,
    weight_decay = lambda), fixed ELR (learning_rate = eta_eff, weight_decay = lambda), fixed
    sphere (learning_rate = eta_eff, radius = r). Defaults are the paper's (appendix F)."""

    protocol: str  # "fixed-lr", "fixed-elr" or "fixed-sphere"
    learning_rate: float  # eta (fixed LR) or eta_eff (fixed ELR, fixed sphere)
    weight_decay: float | None = None  # lambda, the pressure p (fixed LR, fixed ELR)
    radius: float | None = None  # r, radius of the sphere (fixed sphere); ||w_0|| = r
    model: str = "convnet"  # "convnet" or "resnet18"
    width: int | None = None  # k, width multiplier; None = the paper's (ConvNet 8, ResNet-18 4)
    dataset: str = "digits"  # "cifar10", "cifar100" or "digits"
    data: str | None = None  # path of the official CIFAR python archive or its folder
    samples_per_class: int | None = None  # seeded training subset; None = the whole set
    image_size: int | None = None  # resize inputs to this many pixels; None = native size
    label_noise: float = 0.0  # fraction of train labels replaced by uniform classes (not paper)
    iterations: int = 10_000  # SGD steps
    batch_size: int = 128  # B, drawn with replacement at every step (no epochs)
    seed: int = 0  # mini-batch stream
    init_seed: int = 0  # initial weights, shared by every run of a sweep
    head_seed: int = 0  # frozen last layer, shared by every run of a sweep
    bn_eps: float = BN_EPS  # BatchNorm eps (scale invariance holds while variances >> eps)
    queue_size: int = 1000  # N, weight snapshots for the entropy estimate
    queue_every: int = 25  # iterations between snapshots
    log_every: int = 200  # log spacing up to log_linear_until
    log_linear_until: int = 10_000  # then log_points log-spaced logs to the end
    log_points: int = 150
    stationary_logs: int = 30  # stationary value = mean over the last this-many logs
    measure_passes: int = 1  # passes over the train set per log point for loss, grad, Tr Sigma
    chart: str = "both"  # entropy chart(s) recorded: "both", "aligned" (ours) or "raw" (paper's)
    measurement: str = "thermosgd"  # log-point conventions: "thermosgd" or "paper" (nn.measure)
    device: str = "auto"  # "cpu", "cuda", "cuda:1", ...; "auto" takes CUDA when present
    optimizer: str = "sgd"  # "sgd", "momentum", "nesterov" or "adamw" (torch.optim semantics)
    momentum: float | None = None  # beta (momentum, nesterov) or AdamW's beta1; None = 0.9
    beta2: float | None = None  # AdamW's second-moment decay; None = 0.999 (torch's)
    eps: float | None = None  # AdamW's eps added to sqrt(v_hat); None = 1e-8 (torch's)

    def __post_init__(self):
        for name in _FLOATS:  # NumPy scalars and ints are numbers too; stored as floats
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ValueError(f"{name} must be a number, got {value!r}")
                object.__setattr__(self, name, float(value))
        for name in _INTS:
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"{name} must be an integer, got {value!r}")
                if not (-SEED_LIMIT <= value < SEED_LIMIT or name.endswith("seed")):  # int64
                    raise ValueError(f"{name} (--{name.replace('_', '-')}) must be an integer "
                                     f"below 2^63, got {value}")
                object.__setattr__(self, name, int(value))
        for name in ("seed", "init_seed", "head_seed"):  # torch's generators take int64 seeds
            if not 0 <= getattr(self, name) < SEED_LIMIT:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be an integer in "
                                 f"[0, 2^63) (a random stream), got {getattr(self, name)}")
        _choice("model", self.model, MODEL_NAMES)
        if self.width is None:
            object.__setattr__(self, "width", PAPER_WIDTH[self.model])
        _choice("dataset", self.dataset, DATASETS)
        _choice("protocol", self.protocol, PROTOCOLS)
        _choice("entropy chart (--chart)", self.chart, CHART_CHOICES)
        _choice("measurement mode (--measurement)", self.measurement, MEASUREMENTS)
        if self.dataset != "digits" and self.data is None:
            archive = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
            raise ValueError(f"{self.dataset} is read from the official archive: give its path "
                             f"with --data (data=), {archive[self.dataset]} or its extracted "
                             "folder; nothing is downloaded")
        _positive("learning rate (--lr)", self.learning_rate)
        if self.protocol == "fixed-sphere":
            if self.weight_decay is not None:
                raise ValueError("the fixed-sphere protocol takes no weight decay: drop --wd and "
                                 "give the sphere's radius with --radius")
            if self.radius is None:
                raise ValueError("the fixed-sphere protocol needs the sphere's radius (--radius)")
            _positive("radius (--radius)", self.radius)
        else:
            if self.weight_decay is None:
                raise ValueError(f"the {self.protocol} protocol needs a weight decay (--wd)")
            _positive("weight decay (--wd)", self.weight_decay)
            if self.radius is not None:
                raise ValueError(f"the {self.protocol} protocol takes no --radius (its radius is "
                                 "set by lr and wd); use --protocol fixed-sphere to fix it")
        for name in ("width", "iterations", "batch_size", "queue_size", "queue_every",
                     "log_every", "stationary_logs", "measure_passes"):
            value = getattr(self, name)
            low = 2 if name == "queue_size" else 1
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if self.samples_per_class is not None and self.samples_per_class < 1:
            raise ValueError(f"samples_per_class (--samples-per-class) must be an integer >= 1, "
                             f"got {self.samples_per_class}")
        if self.image_size is not None and self.image_size < 8:  # the ConvNet pools 3 times by 2
            raise ValueError(f"image_size (--image-size) must be an integer >= 8, got "
                             f"{self.image_size}")
        if self.log_points < 0 or self.log_linear_until < 0:
            raise ValueError("log_points and log_linear_until must be >= 0")
        _positive("bn_eps", self.bn_eps)
        if not (isinstance(self.label_noise, (int, float)) and 0 <= self.label_noise <= 1):
            raise ValueError(f"label noise (--label-noise) must be a fraction in [0, 1], got "
                             f"{self.label_noise!r}")
        self._resolve_optimizer()

    def _resolve_optimizer(self):
        """Fill the optimizer's defaults (torch's) and refuse what the protocol cannot take.
        Plain SGD keeps momentum, beta2 and eps None, so runs written before the optimizer
        fields existed compare equal to today's."""
        allowed = optimizer_protocols(self.protocol)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.optimizer not in allowed:
            raise ValueError(f"the {self.protocol} protocol takes the optimizer(s) "
                             f"{', '.join(allowed)}, not {self.optimizer}")
        if self.optimizer == "sgd" and self.momentum in (0, 0.0):
            object.__setattr__(self, "momentum", None)  # SGD's momentum 0 is no momentum
        opt = make_optimizer(self.optimizer, self.momentum, self.beta2, self.eps)
        if self.optimizer != "sgd":
            object.__setattr__(self, "momentum", opt.momentum)
        if opt.adaptive:
            object.__setattr__(self, "beta2", opt.beta2)
            object.__setattr__(self, "eps", opt.eps)

    @property
    def optimizer_record(self) -> Optimizer:
        """The optimizer as the theory sees it (``thermosgd.theory.optimizers``)."""
        return make_optimizer(self.optimizer, self.momentum, self.beta2, self.eps)

    @property
    def hyperparameters(self) -> tuple[float, float]:
        """(learning rate, weight decay or radius): the protocol's two hyperparameters."""
        other = self.radius if self.protocol == "fixed-sphere" else self.weight_decay
        return float(self.learning_rate), float(other)

    @property
    def charts(self) -> tuple[str, ...]:
        """The entropy charts this run records (``schema.CHARTS`` names)."""
        return CHARTS if self.chart == "both" else (self.chart,)

    def make_protocol(self):
        return make_protocol(self.protocol, *self.hyperparameters)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def optimizer_protocols(protocol: str) -> tuple[str, ...]:
    """The optimizers a protocol takes. Fixed LR: all. Fixed ELR: SGD and the two momenta
    (eta = eta_eff ||w||^2 at every step; AdamW's step does not scale with ||w||^2). Fixed
    sphere: SGD only (projecting a momentum buffer's step back onto the sphere is a different
    algorithm, without a derivation here)."""
    return {"fixed-lr": OPTIMIZERS, "fixed-elr": ("sgd", "momentum", "nesterov"),
            "fixed-sphere": ("sgd",)}.get(protocol, OPTIMIZERS)


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


def resolve_device(device: str) -> "torch.device":  # noqa: F821 (torch loads inside)
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA GPU; "
                         "use --device cpu")
    return dev
