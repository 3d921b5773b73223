"""Analyses against independent computations: plain loops, exact enumeration, scipy per pair."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from seedgrid import analysis


def _grid(values):
    values = np.asarray(values, dtype=float)
    return xr.DataArray(values, dims=("seed_wi", "seed_do"),
                        coords={"seed_wi": np.arange(1, values.shape[0] + 1),
                                "seed_do": np.arange(1, values.shape[1] + 1)})


@pytest.mark.parametrize("ddof", [0, 1])
def test_decoupled_std_against_loops_with_a_missing_cell(ddof):
    rng = np.random.default_rng(0)
    values = rng.random((5, 4)).round(2)  # rounding makes ties
    values[2, 1] = np.nan
    got = analysis.decoupled_std(_grid(values), ddof=ddof)
    per_wi = [np.std(row[~np.isnan(row)], ddof=ddof) for row in values]
    per_do = [np.std(col[~np.isnan(col)], ddof=ddof) for col in values.T]
    flat = values[~np.isnan(values)]
    assert got["wi"] == pytest.approx(np.mean(per_wi))
    assert got["do"] == pytest.approx(np.mean(per_do))
    assert got["total"] == pytest.approx(np.std(flat, ddof=ddof))


def test_decoupled_std_of_a_single_wi_seed_and_of_constant_scores():
    one_row = analysis.decoupled_std(_grid([[0.5, 0.7, 0.6]]))
    assert one_row["do"] == 0.0  # one WI seed: no spread across WI within a DO seed
    assert one_row["wi"] == pytest.approx(np.std([0.5, 0.7, 0.6]))
    constant = analysis.decoupled_std(_grid(np.full((3, 3), 0.8)))
    assert constant == pytest.approx({"wi": 0, "do": 0, "total": 0}, abs=1e-12)


def test_best_vs_worst_anova_against_the_f_statistic_by_hand():
    rng = np.random.default_rng(1)
    values = rng.normal(0.7, 0.05, (6, 5))
    values[4] += 0.1  # WI 5 is the best seed
    values[:, 1] -= 0.1  # DO 2 the worst
    got = analysis.best_vs_worst_anova(_grid(values))
    assert got["seed_wi"]["best"] == 5 and got["seed_do"]["worst"] == 2
    for kind, axis in (("seed_wi", 1), ("seed_do", 0)):
        means = values.mean(axis=axis)
        a = np.take(values, int(np.argmax(means)), axis=1 - axis)
        b = np.take(values, int(np.argmin(means)), axis=1 - axis)
        grand = np.concatenate([a, b]).mean()
        between = len(a) * (a.mean() - grand) ** 2 + len(b) * (b.mean() - grand) ** 2
        within = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
        f = between / (within / (len(a) + len(b) - 2))
        assert got[kind]["f"] == pytest.approx(f)
        assert got[kind]["p"] == pytest.approx(scipy.stats.f.sf(f, 1, len(a) + len(b) - 2))


def _enumerate(scores, n, replace):
    draws = itertools.product(scores, repeat=n) if replace else itertools.combinations(scores, n)
    best = np.array([max(d) for d in draws])
    return best.mean(), best.std()


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("scores", [[0.61, 0.70, 0.70, 0.55, 0.80], [0.5], [0.7, 0.7, 0.7]])
def test_expected_max_against_exact_enumeration(scores, replace):
    mean, std = analysis.expected_max(scores + [np.nan], replace=replace)  # NaN is left out
    assert len(mean) == len(scores)
    for n in range(1, len(scores) + 1):
        expected_mean, expected_std = _enumerate(scores, n, replace)
        assert mean[n - 1] == pytest.approx(expected_mean)
        assert std[n - 1] == pytest.approx(expected_std, abs=1e-7)
    assert mean[0] == pytest.approx(np.mean(scores))
    if not replace:
        assert mean[-1] == pytest.approx(max(scores)) and std[-1] == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_step_correlation_against_scipy_for_every_pair(method):
    rng = np.random.default_rng(2)
    values = rng.random((4, 5, 6)).round(1)  # (wi, do, step), with ties
    values[0, 0, 3] = np.nan  # that cell is left out of every pair
    values[:, :, 5] = 0.5  # a constant step: no correlation defined
    metric = xr.DataArray(values, dims=("seed_wi", "seed_do", "step"),
                          coords={"step": [0, 2, 4, 6, 8, 10]})
    got = analysis.step_correlation(metric, method)
    assert got.dims == ("step", "step_other")
    cells = values.reshape(-1, 6)[1:]  # cell (1, 1) is the first row
    reference = scipy.stats.spearmanr if method == "spearman" else scipy.stats.pearsonr
    for i in range(6):
        for j in range(6):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = reference(cells[:, i], cells[:, j])[0]
            if np.isnan(expected):
                assert np.isnan(got.values[i, j])
            else:
                assert got.values[i, j] == pytest.approx(expected)
