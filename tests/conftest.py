"""Shared test setup: fixed seeds, headless matplotlib."""

import os
import re
import shutil
import subprocess

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


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, loaded once for every network test."""
    from thermosgd.nn.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, digits):
    """A finished 3 x 3 fixed-LR sweep of 200 steps (ConvNet k=2 on digits): the analysis,
    plot and report tests read it (and copy it before changing anything)."""
    from thermosgd import sweeps as sweep

    spec = sweep.sweep_from_dict({
        "protocol": "fixed-lr", "learning_rates": [0.1, 0.2, 0.4],
        "weight_decays": [0.02, 0.04, 0.08], "width": 2, "iterations": 200, "queue_size": 4,
        "train": {"log_every": 50, "log_linear_until": 200, "log_points": 0,
                  "queue_every": 10, "stationary_logs": 2}})
    out = tmp_path_factory.mktemp("report") / "sw"
    sweep.run_local(spec, out, dataset=digits, device="cpu", progress=False)
    return out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def loaded_figures(page) -> int:
    """Open a report page in headless Chromium; return how many of its images decoded (the
    page's load script writes the count into <body data-figures-loaded>)."""
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-figures-loaded="(\d+)"', dom)
    assert found, "the page's load script did not run"
    return int(found.group(1))
