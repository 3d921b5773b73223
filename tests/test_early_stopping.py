"""The early-stopping simulation against exact enumeration of every experiment on a small grid."""

import itertools

import numpy as np
import pytest
import xarray as xr

from seedgrid import analysis, early_stopping
from seedgrid.errors import UsageError


def _cube_metric(curves):
    """(wi, do, evaluation) curves during training, plus the untrained evaluation at update 0."""
    curves = np.asarray(curves, dtype=float)
    untrained = np.full(curves.shape[:2] + (1,), 0.99)  # must never count
    values = np.concatenate([untrained, curves], axis=2)
    return xr.DataArray(values, dims=("seed_wi", "seed_do", "step"),
                        coords={"seed_wi": np.arange(1, curves.shape[0] + 1),
                                "seed_do": np.arange(1, curves.shape[1] + 1),
                                "step": np.arange(values.shape[2]) * 7})


def test_configurations_against_a_plain_loop():
    got = early_stopping.configurations(n_evals=30, budgets=range(1, 31), max_started=200)
    expected = set()
    for budget in range(1, 31):
        expected.add((budget, budget, 0, 30))
        for started in range(1, 201):
            for stopped in range(1, started + 1):
                for evals in range(1, 30):
                    if (started - stopped) * 30 + stopped * evals == budget * 30:
                        expected.add((budget, started, stopped, evals))
    rows = set(got[["budget", "started", "stopped", "evaluations"]].itertuples(index=False,
                                                                              name=None))
    assert rows == expected
    assert ((got.continued * 30 + got.stopped * got.evaluations) == got.budget * 30).all()


def _exact(best, started, stopped, evals):
    """Mean over every equally likely draw sequence of the experiment, written out."""
    results = []
    for draw in itertools.product(range(len(best)), repeat=started):
        ranked = sorted(draw, key=lambda t: best[t, evals - 1])  # distinct early scores
        stop, keep = ranked[:stopped], ranked[stopped:]
        results.append(max([best[t, evals - 1] for t in stop] + [best[t, -1] for t in keep]))
    return np.mean(results)


def test_simulation_against_exact_enumeration_of_every_experiment():
    curves = [[[0.50, 0.62, 0.70], [0.61, 0.64, 0.65]],
              [[0.40, 0.45, 0.90], [0.55, 0.75, 0.76]]]  # distinct early scores: no ties
    metric = _cube_metric(curves)
    got = early_stopping.simulate(metric, budgets=[1, 2, 3], max_started=5, samples=50_000)
    best = early_stopping.trials(metric)
    assert best.shape == (4, 3) and best.max() < 0.99  # the untrained evaluation is dropped
    assert len(got) > 6 and (got.stopped > 0).any() and (got.stopped == got.started).any()
    for row in got.itertuples():
        exact = _exact(best, row.started, row.stopped, row.evaluations)
        assert row.expected == pytest.approx(exact, abs=4 * row.std / np.sqrt(50_000) + 1e-9)
    # the baseline is the expected best of `budget` full runs (Dodge et al. 2019's formula)
    mean, _ = analysis.expected_max(best[:, -1], replace=True)
    baseline = got[got.stopped == 0].set_index("budget").expected
    np.testing.assert_allclose(baseline, mean[:3], atol=0.003)


def test_ties_in_the_early_score_are_broken_at_random():
    # every trial scores 0.5 at the first evaluation: which ones continue is a coin toss, so
    # continuing c of them is worth the expected best of c random full runs (a per-block or
    # fixed tie-break would favour some trials)
    curves = np.stack([np.full(4, 0.5), [0.3, 0.6, 0.7, 0.9]], axis=1).reshape(2, 2, 2)
    metric = _cube_metric(curves)
    got = early_stopping.simulate(metric, budgets=[2, 3], max_started=6, samples=40_000)
    finals = early_stopping.trials(metric)[:, -1]  # best so far: the first trial's is 0.5
    mean, _ = analysis.expected_max(finals, replace=True)
    stopping = got[(got.evaluations == 1) & (got.stopped < got.started)]
    assert len(stopping)
    for row in stopping.itertuples():
        assert row.expected == pytest.approx(mean[row.continued - 1], abs=0.005)


def test_best_per_budget_and_relative_error_reduction():
    table = early_stopping.configurations(n_evals=2, budgets=[1, 2], max_started=4)
    table["expected"] = np.linspace(0.5, 0.9, len(table))
    table["std"] = 0.0
    got = early_stopping.best_per_budget(table)
    for budget, rows in table.groupby("budget"):
        top = rows.loc[rows.expected.idxmax()]
        base = rows[rows.stopped == 0].expected.item()
        row = got[got.budget == budget].iloc[0]
        assert (row.started, row.stopped, row.expected) == (top.started, top.stopped, top.expected)
        assert row.relative_error_reduction == pytest.approx((top.expected - base) / (1 - base))


def test_simulation_is_seeded_and_refuses_what_it_cannot_simulate():
    metric = _cube_metric(np.random.default_rng(0).random((3, 3, 4)))
    a = early_stopping.simulate(metric, budgets=[2], samples=3000, seed=3)
    b = early_stopping.simulate(metric, budgets=[2], samples=3000, seed=3)
    assert a.expected.tolist() == b.expected.tolist()
    with pytest.raises(UsageError, match="at least 2 evaluations"):
        early_stopping.simulate(_cube_metric(np.ones((2, 2, 1))))
    with pytest.raises(UsageError, match="budgets"):
        early_stopping.simulate(metric, budgets=[0])
