"""Stationary tables built from the closed forms, in the schema's columns: what the simulator
would write if it measured the theory exactly (or with a little noise)."""

import numpy as np
import pandas as pd

from thermosgd import theory
from thermosgd.isotropic import IsotropicConfig, grid_protocol

GRID = tuple(np.geomspace(1e-3, 1e-1, 9))
RADII = tuple(np.geomspace(0.1, 10, 9))


def theory_table(protocol, d=3):
    """A 9 x 9 table whose 'measurements' are the theory (asymptotic VMF, eq. 106-107)."""
    second = {"radii": RADII} if protocol == "fixed-sphere" else {"weight_decays": GRID}
    config = IsotropicConfig(protocol=protocol, learning_rates=GRID, dim=d, iterations=10**6,
                             **second)
    p, seeds = grid_protocol(config)
    t, r = p.temperature(1.0, d), p.stationary_radius(1.0, d)
    s_sph = theory.vmf_sphere_entropy_asymptotic(t, d)
    sphere = protocol == "fixed-sphere"
    nan = np.full(seeds.size, np.nan)
    lam = p.pressure(1.0, d) if sphere else nan
    return pd.DataFrame({
        "protocol": protocol, "d": d, "sigma": 1.0, "seed": seeds, "status": "finished",
        "learning_rate": p.rate, "weight_decay": nan if sphere else p.weight_decay_or_radius,
        "sphere_radius": p.weight_decay_or_radius if sphere else nan,
        "radius": r, "U": theory.vmf_mean_loss_asymptotic(t, d), "entropy_sphere": s_sph,
        "entropy": theory.total_entropy(s_sph, r, d), "temperature": t,
        "pressure": p.pressure(1.0, d), "volume": theory.volume(r), "lambda_eff": lam,
        "radius_theory": r, "U_theory": theory.vmf_mean_loss_asymptotic(t, d),
        "entropy_sphere_theory": s_sph, "entropy_theory": theory.total_entropy(s_sph, r, d),
        "lambda_eff_theory": lam,
    })


def noisy_table(protocol, *, n=5, seeds=(0, 1), d=3, sigma=1.0, noise=0.01, seed=0):
    """An n x n grid: theory columns exact (exact VMF, eq. 103), measured columns
    theory * (1 + noise N(0, 1)), one row per grid point and seed."""
    rng = np.random.default_rng(seed)
    rate, second = np.meshgrid(np.geomspace(1e-3, 1e-1, n), np.geomspace(1e-3, 1e-1, n))
    rate, second = np.tile(rate.ravel(), len(seeds)), np.tile(second.ravel(), len(seeds))
    s2, nan = sigma**2, np.full(rate.shape, np.nan)
    if protocol == "fixed-sphere":
        wd, sphere_radius = nan, second * 100  # r in [0.1, 10]
        t = theory.temperature_fixed_sphere(rate, s2)
        r_theory = sphere_radius
        lambda_eff_theory = theory.effective_pressure_sphere(rate, r_theory, s2, d)
    else:
        wd, sphere_radius, lambda_eff_theory = second, nan, nan
        if protocol == "fixed-lr":
            t = theory.temperature_fixed_lr(rate, wd, s2, d)
            r_theory = theory.stationary_radius_fixed_lr(rate, wd, s2, d)
        else:
            t = theory.temperature_fixed_elr(rate, s2)
            r_theory = theory.stationary_radius_fixed_elr(rate, wd, s2, d)

    def noisy(values):
        return values * (1 + noise * rng.standard_normal(values.shape))

    s_sphere_theory = theory.vmf_sphere_entropy(t, d)
    radius = r_theory if protocol == "fixed-sphere" else noisy(r_theory)
    s_sphere = s_sphere_theory + noise * rng.standard_normal(t.shape)
    lambda_eff = noisy(lambda_eff_theory)
    return pd.DataFrame({
        "protocol": protocol, "d": d, "sigma": sigma,
        "seed": np.repeat(seeds, n * n), "status": "finished",
        "learning_rate": rate, "weight_decay": wd, "sphere_radius": sphere_radius,
        "radius": radius, "U": noisy(theory.vmf_mean_loss(t, d)),
        "entropy_sphere": s_sphere, "entropy": theory.total_entropy(s_sphere, radius, d),
        "temperature": t, "pressure": lambda_eff if protocol == "fixed-sphere" else wd,
        "volume": theory.volume(radius), "lambda_eff": lambda_eff,
        "radius_theory": r_theory, "U_theory": theory.vmf_mean_loss(t, d),
        "entropy_sphere_theory": s_sphere_theory,
        "entropy_theory": theory.total_entropy(s_sphere_theory, r_theory, d),
        "lambda_eff_theory": lambda_eff_theory,
    })
