"""The ideal gas under heavy-ball and Nesterov momentum and under AdamW (torch.optim semantics).

The paper treats plain SGD and names other optimizers as future work (section 7). Everything
here reduces an optimizer to an *SGD-equivalent* pair (eta', lambda') at stationarity, so that
the paper's closed forms carry over with eta -> eta' and lambda -> lambda':

=========  ========================================  ===================  =====================
name       torch update (grad g, weights w)           eta'                 lambda' (pressure p)
=========  ========================================  ===================  =====================
sgd        w -= eta (g + lambda w)                    eta                  lambda
momentum   b = beta b + (g + lambda w); w -= eta b    eta / (1 - beta)     lambda
nesterov   b as above; w -= eta ((g + lambda w)       eta / (1 - beta)     lambda
           + beta b)
adamw      w *= 1 - eta lambda; m, v EMAs of g, g^2    eta / c              lambda c
           (bias-corrected); w -= eta m / (sqrt(v)+eps)
=========  ========================================  ===================  =====================

The derivations (momentum's SGD-equivalent rate, the angle per step of heavy ball, Nesterov
and AdamW, AdamW's preconditioner and effective pressure, heavy ball's discrete-step weight of
||grad L||^2, the entropy slopes and Maxwell targets, the fixed sphere under momentum, and why
AdamW has no fixed-ELR or fixed-sphere protocol) are written out in ``docs/optimizers.md``,
with their sources (Li & Arora, 2020; Wan et al., 2021; Kosson et al., 2024) and what was
derived here; each function's docstring states its result.

Every function takes floats or NumPy arrays (broadcasting). Optimizers are :class:`Optimizer`
values; :func:`make_optimizer` builds one with torch's defaults, :func:`optimizer_from_torch`
reads a ``torch.optim`` instance without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thermosgd.theory.modes import nesterov_weights

__all__ = [
    "OPTIMIZERS",
    "Optimizer",
    "UnsupportedOptimizer",
    "make_optimizer",
    "optimizer_from_torch",
    "time_scale",
    "adamw_preconditioner",
    "sgd_equivalent",
    "optimizer_temperature",
    "optimizer_pressure",
    "optimizer_radius_fixed_lr",
    "optimizer_radius_fixed_elr",
    "optimizer_temperature_fixed_lr",
    "optimizer_angular_update",
    "optimizer_angular_update_sphere",
    "optimizer_temperature_fixed_elr",
    "optimizer_temperature_fixed_sphere",
    "optimizer_effective_pressure_sphere",
    "sphere_pressure_rate",
    "step_variance_factor",
    "discrete_gradient_weight",
    "optimizer_entropy_slopes_fixed_lr",
    "optimizer_maxwell_target_fixed_lr",
    "optimizer_maxwell_target_fixed_elr",
    "compressibility",
]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adamw")
_DEFAULT_MOMENTUM = 0.9  # torch has no default momentum; 0.9 is the common choice and AdamW's beta1
_DEFAULT_BETA2 = 0.999  # torch.optim.AdamW
_DEFAULT_EPS = 1e-8  # torch.optim.AdamW


class UnsupportedOptimizer(ValueError):
    """An optimizer (or an option of one) that the theory does not describe; the text says why."""


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as the theory sees it; build it with :func:`make_optimizer`."""

    name: str = "sgd"  # one of OPTIMIZERS
    momentum: float = 0.0  # beta: heavy-ball / Nesterov momentum, or AdamW's beta1
    beta2: float = _DEFAULT_BETA2  # AdamW's second-moment decay (unused otherwise)
    eps: float = _DEFAULT_EPS  # AdamW's eps, added to sqrt(v_hat) (unused otherwise)

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.name!r}")
        for field in ("momentum", "beta2", "eps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"{field} must be a number, got {value!r}")
            object.__setattr__(self, field, float(value))
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.name == "sgd" and self.momentum != 0.0:
            raise ValueError("plain SGD has no momentum: use optimizer 'momentum' or 'nesterov'")
        if self.name == "nesterov" and self.momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum in (0, 1), got 0")
        if not 0.0 < self.beta2 < 1.0:
            raise ValueError(f"beta2 must lie in (0, 1), got {self.beta2}")
        if not (np.isfinite(self.eps) and self.eps >= 0.0):
            raise ValueError(f"eps must be finite and >= 0, got {self.eps}")

    @property
    def adaptive(self) -> bool:
        """Whether the step is preconditioned by sqrt(v_hat) (AdamW)."""
        return self.name == "adamw"

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``momentum(beta=0.9)``."""
        if self.name == "sgd":
            return "sgd"
        if self.name == "adamw":
            return f"adamw(beta1={self.momentum:g}, beta2={self.beta2:g}, eps={self.eps:g})"
        return f"{self.name}(beta={self.momentum:g})"

    def to_dict(self) -> dict:
        """The record written into result files (read back by :meth:`from_dict`)."""
        return {"name": self.name, "momentum": self.momentum, "beta2": self.beta2, "eps": self.eps}

    @classmethod
    def from_dict(cls, record) -> Optimizer:
        """Read :meth:`to_dict`'s record; a missing record means plain SGD (older results)."""
        if record is None:
            return cls()
        return cls(**{k: record[k] for k in ("name", "momentum", "beta2", "eps") if k in record})


def make_optimizer(name="sgd", momentum=None, beta2=None, eps=None) -> Optimizer:
    """An :class:`Optimizer` with torch's defaults for what is not given.

    ``momentum`` is beta for 'momentum'/'nesterov' and beta1 for 'adamw' (default 0.9); ``beta2``
    and ``eps`` apply to 'adamw' only. An option the optimizer does not take is refused.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    if name != "adamw" and (beta2 is not None or eps is not None):
        raise ValueError(f"beta2 and eps apply to adamw only, not to {name!r}")
    if name == "sgd":
        if momentum not in (None, 0, 0.0):
            raise ValueError("plain SGD has no momentum: use optimizer 'momentum' or 'nesterov'")
        return Optimizer("sgd")
    beta = _DEFAULT_MOMENTUM if momentum is None else momentum
    return Optimizer(name, beta, _DEFAULT_BETA2 if beta2 is None else beta2,
                     _DEFAULT_EPS if eps is None else eps)


def optimizer_from_torch(optimizer, group: int = 0) -> Optimizer:
    """Read a ``torch.optim.SGD`` or ``torch.optim.AdamW`` (duck-typed; torch is not imported).

    Raises :class:`UnsupportedOptimizer` naming the reason for anything else: other classes,
    SGD with dampening, Adam with coupled (L2) weight decay, amsgrad, maximize.
    """
    kind = type(optimizer).__name__
    try:
        hp = optimizer.param_groups[group]
    except (AttributeError, IndexError, KeyError, TypeError):
        raise UnsupportedOptimizer(f"{kind} has no parameter group {group}") from None
    if hp.get("maximize", False):
        raise UnsupportedOptimizer(f"{kind} with maximize=True ascends the loss")
    if kind == "SGD":
        beta = float(hp.get("momentum", 0.0))
        if beta and float(hp.get("dampening", 0.0)) != 0.0:
            raise UnsupportedOptimizer("SGD with dampening != 0 is not described by the theory")
        if beta == 0.0:
            return Optimizer("sgd")
        return Optimizer("nesterov" if hp.get("nesterov", False) else "momentum", beta)
    if kind in ("AdamW", "Adam"):
        if hp.get("amsgrad", False):
            raise UnsupportedOptimizer(f"{kind} with amsgrad=True is not described by the theory")
        decoupled = kind == "AdamW" or hp.get("decoupled_weight_decay", False)
        if not decoupled and float(hp.get("weight_decay", 0.0)) != 0.0:
            raise UnsupportedOptimizer("Adam with L2 weight decay (inside the gradient) is not "
                                       "described by the theory; use AdamW")
        beta1, beta2 = hp.get("betas", (_DEFAULT_MOMENTUM, _DEFAULT_BETA2))
        return Optimizer("adamw", float(beta1), float(beta2), float(hp.get("eps", _DEFAULT_EPS)))
    raise UnsupportedOptimizer(f"{kind} is not described by the theory (known: SGD with or "
                               "without momentum, Nesterov, AdamW)")


def time_scale(optimizer: Optimizer) -> float:
    """The factor eta' / eta by which momentum lengthens the step: 1 / (1 - beta), else 1.

    AdamW's first-moment EMA has total weight (1 - beta1) sum_k beta1^k = 1, so it does not
    rescale the step (its scale comes from the preconditioner, :func:`adamw_preconditioner`).
    """
    if optimizer.name in ("momentum", "nesterov"):
        return 1.0 / (1.0 - optimizer.momentum)
    return 1.0


def adamw_preconditioner(trace_cov, radius, d, eps=0.0):
    """AdamW's preconditioner c = sqrt(Q / d) / r + eps: mean sqrt(v_hat) with spread noise.

    ``trace_cov`` is Q = Tr Sigma of the unit-sphere gradients (or Tr Sigma + E||grad L||^2):
    the gradient at radius r carries Q / r^2 spread over d coordinates.
    """
    return np.sqrt(np.asarray(trace_cov, dtype=float) / np.asarray(d)) / radius + eps


def sgd_equivalent(optimizer: Optimizer, learning_rate, weight_decay, preconditioner=None):
    """The SGD pair (eta', lambda') with the same stationary state (table in the module doc).

    AdamW needs ``preconditioner`` c (measured mean sqrt(v_hat) + eps, or
    :func:`adamw_preconditioner`).
    """
    if optimizer.adaptive:
        if preconditioner is None:
            raise ValueError("AdamW's SGD-equivalent rate needs the preconditioner c")
        return learning_rate / preconditioner, weight_decay * preconditioner
    return learning_rate * time_scale(optimizer), weight_decay


def optimizer_temperature(optimizer: Optimizer, learning_rate, radius, sigma2,
                          preconditioner=None):
    """Temperature of a measured state T = eta' sigma^2 / (2 r^2) (eq. 7 with eta_eff = eta'/r^2).

    ``learning_rate`` is the per-step eta (for the fixed-ELR protocol pass eta_eff r^2).
    """
    rate, _ = sgd_equivalent(optimizer, learning_rate, 1.0, preconditioner)
    return rate * np.asarray(sigma2, dtype=float) / (2.0 * np.asarray(radius, dtype=float) ** 2)


def optimizer_pressure(optimizer: Optimizer, weight_decay, preconditioner=None):
    """Pressure p = lambda' : lambda for SGD and momentum, lambda c for AdamW (module doc)."""
    return sgd_equivalent(optimizer, 1.0, weight_decay, preconditioner)[1]


def _adamw_radius(learning_rate, weight_decay, q, d, eps):
    """Root of r (sqrt(Q/d) + eps r) = sqrt(eta Q / (2 lambda)), written without cancellation."""
    a = np.sqrt(q / np.asarray(d, dtype=float))
    b = np.sqrt(learning_rate * q / (2.0 * weight_decay))
    return 2.0 * b / (a + np.sqrt(a * a + 4.0 * eps * b))


def optimizer_radius_fixed_lr(optimizer: Optimizer, learning_rate, weight_decay, trace_cov, d,
                              full_grad_norm2=0.0):
    """Stationary radius under a fixed learning rate.

    SGD and momentum: r* = (eta' Q / (2 lambda))^(1/4) (eq. 19, 119 with eta -> eta');
    AdamW: r (sqrt(Q/d) + eps r) = sqrt(eta Q / (2 lambda)), r*^2 = eta d / (2 lambda) at eps = 0.
    Q = Tr Sigma + ``full_grad_norm2``: pass E||grad L(w_bar)||^2 for appendix G's correction.
    """
    q = np.asarray(trace_cov, dtype=float) + full_grad_norm2
    if optimizer.adaptive:
        return _adamw_radius(learning_rate, weight_decay, q, d, optimizer.eps)
    return (learning_rate * time_scale(optimizer) * q / (2.0 * weight_decay)) ** 0.25


def optimizer_radius_fixed_elr(optimizer: Optimizer, effective_learning_rate, weight_decay,
                               trace_cov, full_grad_norm2=0.0):
    """Fixed-ELR radius r* = sqrt(eta_eff' Q / (2 lambda)) (eq. 12, 120 with eta_eff -> eta_eff').

    Defined for SGD and momentum (eta = eta_eff |w|^2 each step); AdamW's step does not scale
    with |w|^2, so the protocol has no meaning there.
    """
    if optimizer.adaptive:
        raise UnsupportedOptimizer("the fixed-ELR protocol is defined for sgd, momentum and "
                                   "nesterov, not adamw")
    q = np.asarray(trace_cov, dtype=float) + full_grad_norm2
    return np.sqrt(effective_learning_rate * time_scale(optimizer) * q / (2.0 * weight_decay))


def optimizer_temperature_fixed_lr(optimizer: Optimizer, learning_rate, weight_decay, sigma2, d,
                                   full_grad_norm2=0.0):
    """Predicted fixed-LR temperature: :func:`optimizer_temperature` at the stationary radius.

    SGD and momentum: T = sqrt(eta' lambda sigma^2 / (2 (d - 1))) (eq. 20 with eta -> eta').
    """
    sigma2 = np.asarray(sigma2, dtype=float)
    q = sigma2 * (np.asarray(d, dtype=float) - 1.0)
    r = optimizer_radius_fixed_lr(optimizer, learning_rate, weight_decay, q, d, full_grad_norm2)
    c = adamw_preconditioner(q + full_grad_norm2, r, d, optimizer.eps) if optimizer.adaptive \
        else None
    return optimizer_temperature(optimizer, learning_rate, r, sigma2, c)


def discrete_gradient_weight(optimizer: Optimizer, full_grad_share=0.0):
    """Weight w of E||grad L(w_bar)||^2 in the discrete-step Q = Tr Sigma + w E||grad L||^2.

    SGD 1 (appendix G, eq. 117-121); heavy ball (1 - beta) / (1 + beta) (exact on a quadratic
    mode, :mod:`thermosgd.theory.modes`); AdamW (1 - beta1) / (1 + beta1) (per coordinate, in
    :func:`~thermosgd.theory.modes.adamw_effective_dimension`); Nesterov negative and
    curvature-dependent: read at the measured share rho = E||grad L||^2 / Tr Sigma
    (``full_grad_share``; :func:`~thermosgd.theory.modes.nesterov_weights`), (1 + beta -
    2 beta^2 - 4 beta^3) / (1 + beta) as rho -> 0.
    """
    b = optimizer.momentum
    if optimizer.name == "nesterov":
        return nesterov_weights(b, full_grad_share)[0]
    if optimizer.name in ("momentum", "adamw"):
        return (1.0 - b) / (1.0 + b)
    return 1.0


def optimizer_angular_update(optimizer: Optimizer, learning_rate, weight_decay,
                             full_grad_share=0.0):
    """Equilibrium rms angle per step, sqrt(E|u|^2 / E|w|^2) (radians).

    SGD sqrt(2 eta lambda) and heavy ball sqrt(2 eta lambda / (1 + beta)) (Wan et al., 2021)
    are exact at stationarity on any loss: the norm balance fixes E|u|^2 (``docs/optimizers.md``).
    AdamW sqrt(2 eta lambda (1 - beta1) / (1 + beta1)) (Kosson et al., 2024) holds at any share
    of the full-batch gradient (it enters E|u|^2 and r*^2 alike). Nesterov's depends on the
    share rho = E||grad L||^2 / Tr Sigma (``full_grad_share``):
    2 eta lambda (1 - beta) (k + k_F rho) / (1 + w rho) (:mod:`thermosgd.theory.modes`), which
    is sqrt(2 eta lambda (1 + 2 beta - 2 beta^3) / (1 + beta)) at rho = 0.
    For the fixed-ELR protocol pass the per-step eta = eta_eff r^2.
    """
    b = optimizer.momentum
    factor = {
        "sgd": 1.0,
        "momentum": 1.0 / (1.0 + b),
        "nesterov": (1.0 + 2.0 * b - 2.0 * b**3) / (1.0 + b),
        "adamw": (1.0 - b) / (1.0 + b),
    }[optimizer.name]
    rho = np.asarray(full_grad_share, dtype=float)
    if optimizer.name == "nesterov" and np.any(rho != 0):
        w, k_f = nesterov_weights(b, rho)
        k = step_variance_factor(optimizer)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = (1.0 - b) * (k + k_f * rho) / (1.0 + w * rho)
    return np.sqrt(2.0 * np.asarray(learning_rate, dtype=float) * weight_decay * factor)


def _refuse_adaptive(optimizer: Optimizer, protocol: str):
    if optimizer.adaptive:
        raise UnsupportedOptimizer(f"the {protocol} protocol is defined for sgd, momentum and "
                                   "nesterov, not adamw")


def optimizer_temperature_fixed_elr(optimizer: Optimizer, effective_learning_rate, sigma2):
    """Fixed-ELR temperature T = eta_eff' sigma^2 / 2 (eq. 11 with eta_eff -> eta_eff / (1-beta))."""
    _refuse_adaptive(optimizer, "fixed-ELR")
    return time_scale(optimizer) * np.asarray(effective_learning_rate, float) * sigma2 / 2.0


def optimizer_temperature_fixed_sphere(optimizer: Optimizer, effective_learning_rate, sigma2):
    """Fixed-sphere temperature T = eta_eff' sigma^2 / 2 (eq. 7, eta_eff' = eta_eff / (1-beta))."""
    _refuse_adaptive(optimizer, "fixed-sphere")
    return time_scale(optimizer) * np.asarray(effective_learning_rate, float) * sigma2 / 2.0


def optimizer_effective_pressure_sphere(optimizer: Optimizer, effective_learning_rate, radius,
                                        sigma2, d):
    """Ideal-gas pressure on the sphere lambda_eff = T (d - 1) / (2V), V = r^2 / 2 (eq. 84), at
    the optimizer's temperature; measured by :func:`sphere_pressure_rate` (module doc)."""
    t = optimizer_temperature_fixed_sphere(optimizer, effective_learning_rate, sigma2)
    return t * (np.asarray(d, float) - 1.0) / np.asarray(radius, float) ** 2


def sphere_pressure_rate(optimizer: Optimizer) -> float:
    """eta' / eta: eq. 83 under momentum divides the radial growth |v| - r by eta' r, not eta r.

    The growth is eta'^2 |g|^2 / (2r) per step (module doc), so this measures the pressure
    lambda_eff = T (d-1) / (2V) that holds the free gas at T = eta_eff' sigma^2 / 2.
    """
    _refuse_adaptive(optimizer, "fixed-sphere")
    return time_scale(optimizer)


def step_variance_factor(optimizer: Optimizer) -> float:
    """k = E|s|^2 / |g|^2 for the step w -= eta s with uncorrelated gradients g (module doc).

    1 (SGD); 1 / (1 - beta^2) (heavy ball); (1 + beta)^2 + beta^4 / (1 - beta^2) (Nesterov).
    """
    _refuse_adaptive(optimizer, "fixed-sphere")
    b = optimizer.momentum
    if optimizer.name == "momentum":
        return 1.0 / (1.0 - b * b)
    if optimizer.name == "nesterov":
        return (1.0 + b) ** 2 + b**4 / (1.0 - b * b)
    return 1.0


def optimizer_angular_update_sphere(optimizer: Optimizer, effective_learning_rate, sigma2, d):
    """Angle per step on the fixed sphere, eta_eff sqrt(k sigma^2 (d - 1)) (module doc; SDE)."""
    q = np.asarray(sigma2, float) * (np.asarray(d, float) - 1.0)
    return np.asarray(effective_learning_rate, float) * np.sqrt(step_variance_factor(optimizer) * q)


def optimizer_entropy_slopes_fixed_lr(optimizer: Optimizer, d, learning_rate=1.0,
                                      weight_decay=1.0, trace_cov=1.0):
    """Isotropic fixed-LR slopes ((dS/dlog eta)_lambda, (dS/dlog lambda)_eta).

    From S = (d - 1) log r* + (d - 1)/2 log T (eq. 28-30). SGD and momentum: ((d-1)/2, 0)
    (eq. 29); AdamW: (3 (d-1)/4, -(d-1)/4) at eps = 0. With eps > 0 AdamW's slopes depend on
    the state (``learning_rate``, ``weight_decay``, ``trace_cov``) through k = dlog r / dlog b =
    (a + eps r) / (a + 2 eps r), a = sqrt(Q/d), b = sqrt(eta Q / (2 lambda)).
    """
    dm1 = np.asarray(d, dtype=float) - 1.0
    if not optimizer.adaptive:
        # r*^4 ∝ eta'/lambda and T ∝ sqrt(eta' lambda): dlog r = (1/4, -1/4), dlog T = (1/2, 1/2)
        return dm1 / 2.0, 0.0 * dm1
    q = np.asarray(trace_cov, dtype=float)
    r = _adamw_radius(learning_rate, weight_decay, q, d, optimizer.eps)
    a = np.sqrt(q / np.asarray(d, dtype=float))
    k = (a + optimizer.eps * r) / (a + 2.0 * optimizer.eps * r)
    share = (a / r) / (a / r + optimizer.eps)  # -dlog c / dlog r
    slopes = []
    for dlog_b, dlog_eta in ((0.5, 1.0), (-0.5, 0.0)):  # derivatives along log eta, log lambda
        dlog_r = k * dlog_b
        dlog_t = dlog_eta - 2.0 * dlog_r + share * dlog_r  # T = eta sigma^2 / (2 r^2 c)
        slopes.append(dm1 * dlog_r + dm1 / 2.0 * dlog_t)
    return slopes[0], slopes[1]


def optimizer_maxwell_target_fixed_lr(optimizer: Optimizer, d, **state):
    """Fixed-LR Maxwell target (dS/dlog eta)_lambda - (dS/dlog lambda)_eta (eq. 23).

    (d - 1)/2 for SGD and momentum; d - 1 for AdamW at eps = 0 (module doc); ``state`` as in
    :func:`optimizer_entropy_slopes_fixed_lr` for AdamW with eps > 0.
    """
    s_eta, s_lambda = optimizer_entropy_slopes_fixed_lr(optimizer, d, **state)
    return s_eta - s_lambda


def optimizer_maxwell_target_fixed_elr(optimizer: Optimizer, d):
    """Fixed-ELR target (dS/dlog lambda)_eta_eff = -(d - 1)/2 (eq. 85); momentum leaves T alone."""
    if optimizer.adaptive:
        raise UnsupportedOptimizer("the fixed-ELR protocol is defined for sgd, momentum and "
                                   "nesterov, not adamw")
    return -(np.asarray(d, dtype=float) - 1.0) / 2.0


def compressibility(pressure, volume, temperature, d):
    """Compressibility factor Z = pV / (RT), R = (d - 1)/2: 1 for the ideal gas (eq. 13, 21)."""
    return pressure * volume / ((np.asarray(d, dtype=float) - 1.0) / 2.0 * temperature)
