"""How radial is AdamW's step on the isotropic model? A plain-numpy sketch of eq. 24 under AdamW.

SGD's step is tangent to the sphere (the gradient of a scale-invariant loss is orthogonal to w).
AdamW divides each coordinate by its own sqrt(v_hat); where the noise is not spread evenly over
the coordinates (small d, w concentrated in a few of them), the step leaves the tangent plane.
Prints the rms cosine between the preconditioned step and w over the second half of the run.

Usage: python benchmarks/sketch_adamw_radial.py D
"""
import sys

import numpy as np


def main(d: int, eta=0.01, lam=0.01, b1=0.9, b2=0.999, eps=1e-8, steps=200_000) -> None:
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    m, v = np.zeros(d), np.zeros(d)
    cos_radial, radii2 = [], []
    for t in range(1, steps + 1):
        r = np.linalg.norm(w)
        wb = w / r
        e = rng.standard_normal(d)
        g = ((mu - (mu @ wb) * wb) + (e - (e @ wb) * wb)) / r  # eq. 24, sigma = 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)  # torch AdamW
        if t > steps // 2:
            cos_radial.append(step @ wb / np.linalg.norm(step))
            radii2.append(r * r)
        w = w * (1 - eta * lam) - eta * step
    print(f"d={d}: mean r^2 {np.mean(radii2):.4g} (eta d / (2 lambda) = {eta * d / (2 * lam):.4g}); "
          f"rms cos(step, w) {np.sqrt(np.mean(np.square(cos_radial))):.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
