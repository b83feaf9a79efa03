"""Results written by thermosgd 0.1 (tests/data/v0_1, made by tests/data/make_v0_1.py) still
analyse, plot, report and resume with this version."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from thermosgd.cli import main

V0_1 = Path(__file__).parent / "data" / "v0_1"


@pytest.fixture
def one_thread():
    """The pinned trajectory was trained with one torch thread: reductions keep their order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ENTROPIES = ["entropy_sphere", "entropy"]
# torch's CPU kernels of the machine that made tests/data/v0_1. Another vector width (AVX2
# against AVX-512) changes the rounding of the convolutions, and the small BatchNorm network
# amplifies one ulp into percents within a hundred steps: the pinned trajectory is then
# another machine's, and only its shape can be compared.
PINNED_CAPABILITY = "AVX512"


def _same_trajectory(got, pinned):
    """Every logged quantity bit for bit, except the entropies: the CPU chart now runs as fused
    numba passes whose sums and atan2 differ from 0.1's torch chart in the last bits. Columns
    added since 0.1 (the raw chart's entropies, the angle per step and the optimizer's
    predictions) are not pinned."""
    assert got["entropy_raw"].notna().any()
    assert set(pinned.columns) <= set(got.columns)
    got = got[list(pinned.columns)]
    assert list(got["iteration"]) == list(pinned["iteration"])
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != PINNED_CAPABILITY:
        pytest.skip(f"the trajectory was pinned with torch's {PINNED_CAPABILITY} kernels; this "
                    f"CPU runs {capability}, whose rounding the network amplifies")
    pd.testing.assert_frame_equal(got.drop(columns=ENTROPIES), pinned.drop(columns=ENTROPIES),
                                  check_exact=True)
    # the chart's atan2 is a 2-ulp polynomial and the kNN sums are reordered: relative 1e-8
    # of an entropy of a few hundred nats is 1e-6 nats, far below the estimator's own noise
    pd.testing.assert_frame_equal(got[ENTROPIES], pinned[ENTROPIES], check_exact=False,
                                  rtol=1e-8, atol=0)


def _copy(name, tmp_path) -> Path:
    return Path(shutil.copytree(V0_1 / name, tmp_path / name))


@pytest.mark.parametrize("name", ["sweep", "isotropic"])
def test_a_0_1_result_analyses_plots_and_reports(tmp_path, name, capsys):
    path = _copy(name, tmp_path)
    for command in ("analyze", "plot", "report"):
        assert main([command, str(path), *(["--bootstrap", "20"] if command != "plot" else [])]) == 0
    assert (path / "report.html").stat().st_size > 10_000  # the figures are inlined
    assert "judged checks pass" in (path / "report.md").read_text()


def test_a_0_1_checkpoint_resumes_onto_the_pinned_trajectory(tmp_path, one_thread, capsys):
    """The run stopped at its third log point (0.1's checkpoint) finishes, with this version,
    on the metrics 0.1 wrote for the same run uninterrupted."""
    killed = _copy("run_killed", tmp_path)
    assert main(["train", "--protocol", "fixed-sphere", "--lr", "0.01", "--radius", "2",
                 "--width", "2", "--iterations", "600", "--log-every", "100",
                 "--log-linear-until", "400", "--log-points", "2", "--queue-size", "6",
                 "--stationary-logs", "3", "--device", "cpu", "--no-progress",
                 "--out", str(killed)]) == 0
    _same_trajectory(pd.read_parquet(killed / "metrics.parquet"),
                     pd.read_parquet(V0_1 / "run_whole" / "metrics.parquet"))


def test_a_fresh_run_follows_the_pinned_trajectory(tmp_path, one_thread, capsys):
    """The same run trained from scratch by this version writes 0.1's metrics bit for bit."""
    assert main(["train", "--protocol", "fixed-sphere", "--lr", "0.01", "--radius", "2",
                 "--width", "2", "--iterations", "600", "--log-every", "100",
                 "--log-linear-until", "400", "--log-points", "2", "--queue-size", "6",
                 "--stationary-logs", "3", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    _same_trajectory(pd.read_parquet(tmp_path / "run" / "metrics.parquet"),
                     pd.read_parquet(V0_1 / "run_whole" / "metrics.parquet"))


def test_a_0_1_train_grid_reads_as_a_sweep(tmp_path, capsys):
    """`thermosgd train` 0.1 wrote grids of kind "train-grid" with the runs at the top level:
    they read as sweeps (status, collect), the definition rebuilt from the runs' configs."""
    from thermosgd import sweeps

    grid = _copy("train_grid", tmp_path)
    spec, scale = sweeps.read_sweep_dir(grid)
    assert (spec.protocol, spec.learning_rates, spec.weight_decays, scale) == (
        "fixed-lr", (0.1, 0.2), (0.04,), 1.0)
    assert sweeps.status(grid)["finished"] == ["fixed-lr_lr0.1_wd0.04_seed0",
                                               "fixed-lr_lr0.2_wd0.04_seed0"]
    assert main(["collect", str(grid)]) == 0
    assert len(pd.read_csv(grid / "stationary.csv")) == 2
