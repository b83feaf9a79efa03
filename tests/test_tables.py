"""Stationary tables: the one seed-averaging rule, the grid's interior, the error summary and
appendix H's converging flag."""

import numpy as np
import pandas as pd
import pytest
from synthetic import theory_table

from thermosgd.analysis import tables


def test_a_grid_point_enters_only_when_every_seed_finished():
    a, b = theory_table("fixed-lr"), theory_table("fixed-lr")
    b["seed"] = 1
    b["U"] += 1.0
    b.loc[0, "status"] = "diverged"
    avg = tables.seed_average(pd.concat([a, b]))
    assert len(avg) == 80  # the point with a diverged seed is left out, not half-averaged
    assert (avg["n_seeds"] == 2).all()
    np.testing.assert_allclose(avg["U"], a["U"].iloc[1:] + 0.5)
    first = (a["learning_rate"].iloc[0], a["weight_decay"].iloc[0])
    assert first not in set(zip(avg["learning_rate"], avg["weight_decay"]))


def test_a_still_converging_run_is_left_out_like_a_diverged_one():
    table = theory_table("fixed-elr").assign(converging=False)
    table.loc[3, "converging"] = True
    assert len(tables.seed_average(table)) == 80


def test_interior_leaves_out_the_grid_edges():
    assert tables.interior_mask(tables.seed_average(theory_table("fixed-sphere"))).sum() == 49


def test_error_summary_ignores_non_finite():
    out = tables.error_summary([1.0, np.nan, 3.0], [1.0, 1.0, 2.0])
    assert out["median_rel_error"] == pytest.approx(0.25)
    assert out["max_rel_error"] == pytest.approx(0.5)
    out = tables.error_summary([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], np.array([False, True, False]),
                               relative=False)
    assert out["interior_median_abs_error"] == 1.0 and out["max_abs_error"] == 2.0


def test_converging_flags_falling_loss_and_trace_not_a_stationary_run():
    """Appendix H: loss and Tr Sigma falling as a power law over the last logs are flagged;
    stationary noise around a level is not, nor is a falling loss with a flat Tr Sigma."""
    it = np.geomspace(1e4, 1e6, 30)
    rng = np.random.default_rng(0)
    noise = np.exp(0.05 * rng.standard_normal((2, 30)))
    falling = pd.DataFrame({"iteration": it, "train_loss": 10 * it**-0.5 * noise[0],
                            "trace_cov": 1e3 * it**-0.3 * noise[1]})
    flat = pd.DataFrame({"iteration": it, "train_loss": 0.3 * noise[0],
                         "trace_cov": 50.0 * noise[1]})
    assert tables.converging(falling)
    assert not tables.converging(flat)
    assert not tables.converging(falling.assign(trace_cov=flat["trace_cov"]))
