"""The paper's conventions beside thermosgd's: both entropy charts at every log point, the
`paper` measurement mode, the truncated log schedule, the network version a run records."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thermosgd.entropy import sphere_entropy
from thermosgd.nn import TrainConfig, train
from thermosgd.nn.accumulate import SnapshotQueue
from thermosgd.nn.measure import log_schedule, paper_gradient_statistics

SHORT = dict(width=2, iterations=150, queue_size=4, queue_every=25, log_every=50,
             log_linear_until=150, log_points=0, device="cpu")


def test_paper_schedule_truncates_where_ours_rounds():
    """At the paper's 10^6 steps, 84 of the 200 log points move down by one iteration."""
    ours, paper = log_schedule(10**6), log_schedule(10**6, truncate=True)
    assert len(ours) == len(paper) == 200
    assert int((ours != paper).sum()) == 84 and set(ours - paper) == {0, 1}
    spaced = np.geomspace(10_000, 10**6, 151)[1:]
    np.testing.assert_array_equal(paper[50:], np.floor(spaced).astype(int))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_queue_entropies_in_both_charts_are_the_float64_answer(dtype):
    """The queue stores float32 (or float16) snapshots; each chart's entropy equals the estimate
    on the same numbers held in float64 (the chart is built in float64), to float64 rounding of
    sums of ~10^4 terms of size ~10^1 (1e-9 relative)."""
    rng = np.random.default_rng(0)
    d, n = 3000, 12
    mu = rng.standard_normal(d)
    snaps = torch.from_numpy(mu / np.linalg.norm(mu) + 0.003 * rng.standard_normal((n, d)))
    queue = SnapshotQueue(1, n, 1, d, device="cpu", dtype=dtype)
    for k in range(n):
        queue.push(snaps[k][None], k + 1)
    stored = queue.data[0].double()
    for align in (True, False):
        (s, total), = queue.entropies(n, align=align)
        expected = sphere_entropy(stored.numpy(), align=align)
        assert s == pytest.approx(expected, rel=1e-9)
        r = stored.norm(dim=1).mean().item()
        assert total == pytest.approx(expected + (d - 1) * math.log(r), rel=1e-9)
    # the two charts are different quantities at this d: thousands of nats apart
    assert abs(queue.entropies(n)[0][0] - queue.entropies(n, align=False)[0][0]) > 100


def test_a_run_records_both_charts_unless_told(digits):
    both = train(TrainConfig(protocol="fixed-lr", learning_rate=0.2, weight_decay=0.04,
                             **SHORT), dataset=digits, progress=False).metrics
    assert both[["entropy", "entropy_raw"]].iloc[-1].notna().all()
    assert (both["entropy"] != both["entropy_raw"]).iloc[-1]
    raw = train(TrainConfig(protocol="fixed-lr", learning_rate=0.2, weight_decay=0.04,
                            chart="raw", **SHORT), dataset=digits, progress=False).metrics
    # one trajectory: the raw column is the same number whichever charts were recorded
    assert raw["entropy_raw"].iloc[-1] == both["entropy_raw"].iloc[-1]
    assert raw["entropy"].isna().all()


def test_paper_statistics_follow_their_definition(digits):
    """paper_gradient_statistics against a direct computation on one model: the train set in
    order in chunks of 1024 (BatchNorm in training mode), Q batches of 128 with replacement
    around that full gradient, everything rescaled by the given squared radius."""
    from thermosgd.nn import build_model, scale_invariant_parameters

    model = build_model("convnet", width=2, in_channels=1).train()
    params = scale_invariant_parameters(model)
    x, y = digits.train_x, digits.train_y
    n = x.shape[0]

    def grads(idx):  # (1, b) -> (1, d), (1,), (1,)
        logits = model(x[idx[0]])
        loss = F.cross_entropy(logits, y[idx[0]])
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
        return g[None], loss.detach()[None], (logits.argmax(1) == y[idx[0]]).sum()[None]

    d = sum(p.numel() for p in params)
    r2 = torch.tensor([1.0])
    (stats,) = paper_gradient_statistics(grads, r2, torch.tensor([4.0]), n=n, d=d,
                                         batch_size=128, draws=5,
                                         generators=[torch.Generator().manual_seed(3)])
    chunks = [torch.arange(s, min(s + 1024, n)) for s in range(0, n, 1024)]
    parts = [grads(c[None]) for c in chunks]
    full = sum(len(c) / n * g[0].double() for c, (g, _, _) in zip(chunks, parts))
    loss = sum(len(c) / n * float(l_) for c, (_, l_, _) in zip(chunks, parts))
    gen = torch.Generator().manual_seed(3)
    terms = [float((grads(torch.randint(0, n, (1, 128), generator=gen))[0][0].double()
                    - full).square().sum()) for _ in range(5)]
    # float64 sums of float32 gradients in the same order: 1e-9 relative
    assert stats["train_loss"] == pytest.approx(loss, rel=1e-9)
    assert stats["full_grad_norm2"] == pytest.approx(4.0 * float(full.square().sum()), rel=1e-9)
    assert stats["trace_cov"] == pytest.approx(4.0 * np.mean(terms), rel=1e-9)
    assert stats["trace_cov_se"] == pytest.approx(4.0 * np.std(terms, ddof=1) / math.sqrt(5),
                                                  rel=1e-6)
    assert stats["radius"] == 1.0


def test_paper_measurement_mode_in_a_run(digits, tmp_path):
    """Same trajectory, other conventions: the log points move to the truncated schedule, the
    entropies (which do not depend on the measurement) agree where the iterations agree."""
    kw = dict(protocol="fixed-lr", learning_rate=0.2, weight_decay=0.04, **SHORT)
    ours = train(TrainConfig(**kw), dataset=digits, progress=False).metrics
    paper = train(TrainConfig(**kw, measurement="paper"), tmp_path / "run", dataset=digits,
                  progress=False).metrics
    assert paper["iteration"].tolist() == ours["iteration"].tolist()  # linear part: no rounding
    np.testing.assert_array_equal(paper["radius"], ours["radius"])
    np.testing.assert_array_equal(paper["entropy_raw"], ours["entropy_raw"])
    assert (paper["trace_cov"] > 0).all() and (paper["trace_cov_se"] > 0).all()
    assert not np.allclose(paper["train_loss"], ours["train_loss"], rtol=1e-6)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["architecture"] == "convnet-v1"
    assert record["config"]["measurement"] == "paper" and record["config"]["chart"] == "both"


@pytest.mark.parametrize("field,value,message", [
    ("chart", "flat", "unknown entropy chart (--chart) 'flat'; choose one of both, aligned, raw"),
    ("measurement", "exact", "unknown measurement mode (--measurement) 'exact'; choose one of "
                             "thermosgd, paper"),
])
def test_unknown_chart_or_measurement_names_the_choices(field, value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=0.01, **{field: value})
    assert str(err.value) == message
