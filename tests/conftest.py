"""Shared test setup: fixed seeds, headless matplotlib."""

import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _fixed_seeds():
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    yield


class _NoBar:
    """Stands in for a tqdm bar when a test drives a trainer's loop directly."""

    def update(self, n):
        pass


NO_BAR = _NoBar()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, loaded once for every network test."""
    from thermosgd.nn.data import load_dataset

    return load_dataset("digits")
