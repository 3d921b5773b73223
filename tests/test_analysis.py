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
        # Levene (Brown-Forsythe): the same F by hand on absolute deviations from each median
        za, zb = np.abs(a - np.median(a)), np.abs(b - np.median(b))
        zg = np.concatenate([za, zb]).mean()
        lev = (len(za) * (za.mean() - zg) ** 2 + len(zb) * (zb.mean() - zg) ** 2) / (
            (((za - za.mean()) ** 2).sum() + ((zb - zb.mean()) ** 2).sum()) / (len(a) + len(b) - 2))
        assert got[kind]["levene_p"] == pytest.approx(scipy.stats.f.sf(lev, 1, len(a) + len(b) - 2))
        residuals = [x - a.mean() for x in a] + [x - b.mean() for x in b]
        assert got[kind]["shapiro_p"] == pytest.approx(scipy.stats.shapiro(residuals).pvalue)


def test_anova_assumptions_flag_unequal_variances_and_skewed_residuals():
    rng = np.random.default_rng(7)
    fine = rng.normal(0.7, 0.02, (4, 40))
    fine[0] += 0.05
    assert analysis.best_vs_worst_anova(_grid(fine))["seed_wi"]["assumptions_met"] is True
    spread = fine.copy()
    spread[3] = 0.6 + rng.normal(0, 0.2, 40)  # the worst WI seed varies ten times as much
    assert analysis.best_vs_worst_anova(_grid(spread))["seed_wi"]["assumptions_met"] is False
    skewed = 0.7 + rng.exponential(0.05, (4, 40))  # diverging runs make a long tail
    skewed[0] += 0.05
    got = analysis.best_vs_worst_anova(_grid(skewed))["seed_wi"]
    assert got["shapiro_p"] < 0.05 and got["assumptions_met"] is False


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


def _loop_consistency(pred, label):
    """pred: (runs, example) with NaN rows for missing runs; the definitions, written out.
    Over fewer than two runs, CON, CCON and agreement are undefined (NaN)."""
    pred = pred[~np.isnan(pred).all(axis=1)]
    if len(pred) < 2:
        return np.nan, np.nan, np.nan, np.full(pred.shape[1], np.nan)
    con = np.mean([len(set(pred[:, e])) == 1 for e in range(pred.shape[1])])
    ccon = np.mean([all(pred[:, e] == label[e]) for e in range(pred.shape[1])])
    pairs = list(itertools.combinations(range(len(pred)), 2))
    agreement = np.mean([np.mean(pred[a] == pred[b]) for a, b in pairs]) if pairs else np.nan
    flips = [np.mean([pred[a, e] != pred[b, e] for a, b in pairs]) if pairs else np.nan
             for e in range(pred.shape[1])]
    return con, ccon, agreement, np.array(flips)


@pytest.mark.parametrize("over", [("seed_wi", "seed_do"), "seed_do", "seed_wi"])
def test_consistency_against_loops_over_pairs_of_runs(over):
    rng = np.random.default_rng(4)
    label = rng.integers(0, 3, 12)  # three classes
    pred = rng.integers(0, 3, (3, 4, 12)).astype(float)
    pred[:, :, :3] = label[:3]  # examples every run gets right
    pred[1, 2] = np.nan  # a missing cell
    da = xr.DataArray(pred, dims=("seed_wi", "seed_do", "example"),
                      coords={"seed_wi": [1, 2, 3], "seed_do": [1, 2, 3, 4]})
    got = analysis.consistency(da, xr.DataArray(label, dims="example"), over)
    if over == ("seed_wi", "seed_do"):
        groups = {(): pred.reshape(12, 12)}
    elif over == "seed_do":
        groups = {("seed_wi", wi + 1): pred[wi] for wi in range(3)}
    else:
        groups = {("seed_do", do + 1): pred[:, do] for do in range(4)}
    for key, runs in groups.items():
        sel = got.sel({key[0]: key[1]}) if key else got
        con, ccon, agreement, flips = _loop_consistency(runs, label)
        assert sel.runs.item() == int((~np.isnan(runs).all(axis=1)).sum())
        assert sel.con.item() == pytest.approx(con, nan_ok=True)
        assert sel.ccon.item() == pytest.approx(ccon, nan_ok=True)
        assert sel.agreement.item() == pytest.approx(agreement, nan_ok=True)
        np.testing.assert_allclose(sel.flip_rate.values, flips)


def test_consistency_edge_cases_one_run_and_identical_runs():
    label = xr.DataArray(np.array([0, 1, 1, 0]), dims="example")
    one = xr.DataArray(np.array([[[0, 1, 0, 0]]], dtype=float), dims=("seed_wi", "seed_do", "example"))
    got = analysis.consistency(one, label)
    assert got.runs.item() == 1  # one run agrees with itself: CON over it means nothing
    assert np.isnan(got.con.item()) and np.isnan(got.ccon.item())
    assert np.isnan(got.agreement.item()) and got.flip_rate.isnull().all()  # no pairs
    same = xr.DataArray(np.tile([0.0, 0, 0, 0], (2, 3, 1)), dims=("seed_wi", "seed_do", "example"))
    got = analysis.consistency(same, label)  # constant predictions: consistent, half correct
    assert (got.con.item(), got.ccon.item(), got.agreement.item()) == (1.0, 0.5, 1.0)
    assert (got.flip_rate == 0).all()


def test_consistency_of_rows_with_no_run_or_one_run_is_undefined_not_zero():
    # a partial grid: WI 1 has two runs, WI 2 one, WI 3 none (the 8 x 8 report printed 0.0000)
    label = xr.DataArray(np.array([0, 1, 1, 0]), dims="example")
    pred = np.full((3, 2, 4), np.nan)
    pred[0] = [[0, 1, 1, 0], [0, 1, 0, 0]]
    pred[1, 0] = [1, 1, 1, 1]
    da = xr.DataArray(pred, dims=("seed_wi", "seed_do", "example"),
                      coords={"seed_wi": [1, 2, 3], "seed_do": [1, 2]})
    rows = analysis.consistency(da, label, over="seed_do")
    assert rows.runs.values.tolist() == [2, 1, 0]
    assert rows.con.sel(seed_wi=1).item() == 0.75 and rows.ccon.sel(seed_wi=1).item() == 0.75
    for wi in (2, 3):
        assert all(np.isnan(rows[k].sel(seed_wi=wi).item()) for k in ("con", "ccon", "agreement"))


def test_bui_figure_1_equal_accuracy_little_overlap():
    # Bui et al. Fig. 1: two runs, both 60% accurate, few predictions in common
    label = np.ones(10)
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=float)
    b = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=float)
    da = xr.DataArray(np.stack([a, b])[None], dims=("seed_wi", "seed_do", "example"))
    got = analysis.consistency(da, xr.DataArray(label, dims="example"))
    assert np.mean(a == label) == np.mean(b == label) == 0.6
    assert got.ccon.item() == 0.2 and got.agreement.item() == pytest.approx(0.2)


def test_summary_against_numpy_with_a_missing_cell_and_one_seed():
    values = np.array([[0.5, np.nan, 0.7], [0.6, 0.6, 0.9]])
    got = analysis.summary(_grid(values))
    flat = values[~np.isnan(values)]
    assert got == pytest.approx({"n": 5, "mean": flat.mean(), "std": flat.std(),
                                 "var": flat.var(), "min": 0.5, "max": 0.9})
    assert analysis.summary(_grid([[0.7]]))["std"] == 0.0
    assert analysis.summary(_grid([[np.nan]]))["n"] == 0


def test_regimes_pick_the_best_evaluation_each_regime_can_see():
    # (wi, do, step) with steps at epochs 0, .5, 1, 1.5, 2
    epoch = np.array([0, 0.5, 1.0, 1.5, 2.0])
    values = np.array([[[0.9, 0.8, 0.6, 0.7, 0.5],     # the untrained evaluation never counts
                        [0.1, 0.2, 0.3, 0.4, np.nan]]])  # the end missing
    metric = xr.DataArray(values, dims=("seed_wi", "seed_do", "step"),
                          coords={"step": [0, 5, 10, 15, 20]})
    got = analysis.regimes(metric, epoch)
    for regime, keep in (("every", epoch > 0), ("epoch_ends", np.isin(epoch, [1, 2])),
                         ("end", np.arange(5) == 4)):
        for do in range(2):
            seen = values[0, do][keep]
            expected = np.nanmax(seen) if not np.isnan(seen).all() else np.nan
            np.testing.assert_equal(got.sel(regime=regime).values[0, do], expected)


def test_seed_permutation_test_against_scipy_exact_enumeration():
    # a 3 x 3 grid has 9!/(3!3!3!) = 1680 distinct partitions: scipy enumerates them exactly
    rng = np.random.default_rng(5)
    values = rng.normal(0.7, 0.05, (3, 3)).round(3)
    values[2] += 0.04
    got = analysis.seed_permutation_test(_grid(values), n_resamples=40_000, seed=1)

    def spread(*groups, axis=-1):
        means = np.stack([np.mean(g, axis=axis) for g in groups])
        return means.max(axis=0) - means.min(axis=0)

    for kind, groups in (("seed_wi", list(values)), ("seed_do", list(values.T))):
        exact = scipy.stats.permutation_test(groups, spread, permutation_type="independent",
                                             alternative="greater", n_resamples=np.inf,
                                             vectorized=True)
        assert got[kind]["range"] == pytest.approx(exact.statistic)
        assert got[kind]["p"] == pytest.approx(exact.pvalue, abs=0.01)  # Monte Carlo error


def test_seed_permutation_test_finds_a_planted_seed_effect_and_keeps_missing_cells_out():
    rng = np.random.default_rng(6)
    values = rng.normal(0.7, 0.01, (8, 8))
    values[3] += 0.05  # WI seed 4 is better; DO seeds do not matter
    values[0, 0] = np.nan
    got = analysis.seed_permutation_test(_grid(values), n_resamples=2000)
    assert got["seed_wi"]["p"] < 0.01 and got["seed_do"]["p"] > 0.05
    means = np.nanmean(values, axis=1)
    assert got["seed_wi"]["range"] == pytest.approx(means.max() - means.min())
    constant = analysis.seed_permutation_test(_grid(np.full((3, 3), 0.5)), n_resamples=100)
    assert constant["seed_wi"] == {"range": 0.0, "p": 1.0}  # ties count as extreme


def test_agreement_matrix_and_run_pairs_against_loops():
    rng = np.random.default_rng(7)
    label = rng.integers(0, 2, 30)
    pred = np.where(rng.random((3, 3, 30)) < 0.7, label, 1 - label).astype(float)
    pred[1, 1] = np.nan  # a missing run
    da = xr.DataArray(pred, dims=("seed_wi", "seed_do", "example"),
                      coords={"seed_wi": [1, 2, 3], "seed_do": [4, 5, 6]})
    lab = xr.DataArray(label, dims="example")
    agree = analysis.agreement_matrix(da)
    runs = [(wi, do) for wi in range(3) for do in range(3) if (wi, do) != (1, 1)]
    assert agree.shape == (8, 8)
    for a, (wa, da_) in enumerate(runs):
        assert (agree.seed_wi.values[a], agree.seed_do.values[a]) == (wa + 1, da_ + 4)
        for b, (wb, db) in enumerate(runs):
            assert agree.values[a, b] == pytest.approx(np.mean(pred[wa, da_] == pred[wb, db]))
    pairs = analysis.run_pairs(da, lab, tolerance=0.05, top=100)
    expected = []
    for (wa, da_), (wb, db) in itertools.combinations(runs, 2):
        acc_a, acc_b = np.mean(pred[wa, da_] == label), np.mean(pred[wb, db] == label)
        if abs(acc_a - acc_b) <= 0.05 + 1e-12:
            expected.append(np.mean(pred[wa, da_] == pred[wb, db]))
    assert sorted(expected) == pytest.approx(pairs.agreement.tolist())
    for row in pairs.itertuples():
        a = pred[row.seed_wi_a - 1, row.seed_do_a - 4] == label
        b = pred[row.seed_wi_b - 1, row.seed_do_b - 4] == label
        assert row.both_correct == pytest.approx(np.mean(a & b))
        assert row.accuracy_a == pytest.approx(a.mean())


def test_seeds_across_tasks_ranks_against_scipy_with_ties_and_unshared_seeds():
    a = _grid([[0.8, 0.6], [0.7, 0.7], [0.5, 0.5]])  # WI means 0.7, 0.7, 0.5: a tie
    b = _grid([[0.6, 0.6], [0.9, 0.7], [0.4, 0.6], [0.9, 0.9]])  # WI 4 only on task b
    got = analysis.seeds_across_tasks({"a": a, "b": b})
    assert got.seed_wi.values.tolist() == [1, 2, 3]
    np.testing.assert_allclose(got["rank"].sel(task="a"), [1.5, 1.5, 3])
    np.testing.assert_allclose(got["rank"].sel(task="b"), [2, 1, 3])
    np.testing.assert_allclose(got.mean_rank, [1.75, 1.25, 3])
    expected = scipy.stats.spearmanr([0.7, 0.7, 0.5], [0.6, 0.8, 0.5])[0]
    assert got.correlation.sel(task="a", task_other="b").item() == pytest.approx(expected)


def test_variance_shares_are_the_sums_of_squares_of_a_two_way_layout_by_hand():
    """Dodge et al. §4.1-4.2 in the report: what share of the variance the WI and DO seeds
    explain, against a plain loop over the cells; a grid with a missing cell drops that WI
    seed; one seed of a kind: undefined."""
    from seedgrid.analysis import variance_shares

    rng = np.random.default_rng(7)
    values = rng.random((4, 5)) + np.arange(4)[:, None] * 0.3  # WI matters here
    grid = xr.DataArray(values, dims=("seed_wi", "seed_do"),
                        coords={"seed_wi": [1, 2, 3, 4], "seed_do": [1, 2, 3, 4, 5]})
    grand = sum(sum(row) for row in values) / values.size
    total = sum((v - grand) ** 2 for row in values for v in row)
    wi = sum(5 * (sum(row) / 5 - grand) ** 2 for row in values)
    do = sum(4 * (sum(values[i][j] for i in range(4)) / 4 - grand) ** 2 for j in range(5))
    got = variance_shares(grid)
    assert got["wi"] == pytest.approx(wi / total) and got["do"] == pytest.approx(do / total)
    assert got["rest"] == pytest.approx(1 - (wi + do) / total) and got["runs"] == 20
    holed = grid.copy()
    holed[2, 1] = np.nan
    assert variance_shares(holed) == pytest.approx(variance_shares(grid.drop_sel(seed_wi=3)))
    assert np.isnan(variance_shares(grid.isel(seed_wi=[0]))["wi"])
