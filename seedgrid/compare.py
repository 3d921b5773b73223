"""Is configuration B really different from A? Significance over seed grids, done right.

``compare`` (the CLI's ``compare`` and ``regress`` use it) takes two cubes of the same task and
validation set. Runs are **paired** by (seed_wi, seed_do) when both grids share cells — the same
seeds and the same validation set make the observations correlated, so a paired test is the
right one — and **unpaired** otherwise; the result says which.

- :func:`scores_test`: on per-run scores — paired t-test and Wilcoxon signed-rank (unpaired:
  Welch's t-test and Mann-Whitney U), the difference with its t interval, Cohen's d_z (paired:
  mean difference / its std) and the tutorial's d_av (difference / sqrt((sd_a² + sd_b²) / 2)),
  and the seeds needed for 80% power.
- :func:`bootstrap`: MultiBERTs' multibootstrap — resample runs and examples together (paired:
  the same runs and examples on both sides) and recompute the metric: a confidence interval and
  a two-sided p-value for the difference of means.
- :func:`aso`: Almost Stochastic Order (Dror et al. 2019, as deepsig): ε_min < 0.5 means B is
  stochastically larger than A.
- :func:`churn`: how many individual predictions change from A to B, against the seed-to-seed
  churn inside A.
"""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats
import xarray as xr

from seedgrid import metrics
from seedgrid.cube import open_cube
from seedgrid.errors import UsageError
from seedgrid.store import SEEDS

MIN_SEEDS = 3  # the tutorial: at least 3 seeds per configuration, 5+ is better
#: what ``--test`` may name: the verdict (and the exit status) follows that test's p
TESTS = {"t": "the t-test", "wilcoxon": "the rank test", "bootstrap": "the bootstrap"}


def scores_test(a, b, paired: bool, alpha: float = 0.05, power: float = 0.8) -> dict:
    """Tests and effect sizes of B − A on per-run scores (paired: a[i] and b[i] share seeds)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if min(len(a), len(b)) < 2:
        raise UsageError(f"{min(len(a), len(b))} run(s) on one side: a test needs at least 2 "
                         f"per side (the tutorial asks for {MIN_SEEDS}, better 5+); train more "
                         "seeds")
    sd_a, sd_b = a.std(ddof=1), b.std(ddof=1)
    diff_mean = b.mean() - a.mean()
    d_av = _ratio(diff_mean, np.sqrt((sd_a**2 + sd_b**2) / 2))
    out = {"paired": paired, "n_a": len(a), "n_b": len(b), "mean_a": a.mean(), "mean_b": b.mean(),
           "sd_a": sd_a, "sd_b": sd_b, "difference": diff_mean, "d_av": d_av}
    if paired:
        d = b - a
        se, df = d.std(ddof=1) / np.sqrt(len(d)), len(d) - 1
        t = scipy.stats.ttest_rel(b, a)
        out.update(test="paired t-test", t=t.statistic, p=t.pvalue, d_z=_ratio(d.mean(),
                                                                               d.std(ddof=1)),
                   rank_test="Wilcoxon signed-rank", rank_p=_wilcoxon(d))
        effect, seeds = out["d_z"], _seeds_for_power(out["d_z"], alpha, power, paired=True)
    else:
        se = np.sqrt(sd_a**2 / len(a) + sd_b**2 / len(b))
        df = se**4 / ((sd_a**2 / len(a)) ** 2 / (len(a) - 1) + (sd_b**2 / len(b)) ** 2
                      / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
        t = scipy.stats.ttest_ind(b, a, equal_var=False)
        out.update(test="Welch's t-test", t=t.statistic, p=t.pvalue, d_z=None,
                   rank_test="Mann-Whitney U",
                   rank_p=scipy.stats.mannwhitneyu(b, a, alternative="two-sided").pvalue)
        effect, seeds = d_av, _seeds_for_power(d_av, alpha, power, paired=False)
    half = scipy.stats.t.ppf(1 - alpha / 2, df) * se
    out.update(ci=[diff_mean - half, diff_mean + half], seeds_for_power=seeds, power=power,
               alpha=alpha, effect_for_power=effect)
    return out


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else (0.0 if num == 0 else float(np.sign(num) * np.inf))


def rank_test_floor(a, b, paired: bool) -> float:
    """The smallest two-sided p the exact rank test can give on these runs: 2 / 2^n for the
    signed-rank test on n nonzero differences, 2 / C(n_a + n_b, n_a) for Mann-Whitney U. At or
    above alpha, the rank test cannot call anything significant (3 pairs: p >= 0.25)."""
    if paired:
        n = int(np.count_nonzero(np.asarray(b) - np.asarray(a)))
        return min(1.0, 2.0 / 2.0**n)
    return min(1.0, 2.0 / float(scipy.special.comb(len(a) + len(b), len(a), exact=True)))


def _wilcoxon(d: np.ndarray) -> float:
    if np.all(d == 0):
        return 1.0  # no run changed: nothing to rank
    return float(scipy.stats.wilcoxon(d).pvalue)


def _seeds_for_power(effect: float, alpha: float, power: float, paired: bool,
                     most: int = 10_000) -> int | None:
    """Smallest n (seeds per side) whose two-sided t-test reaches ``power`` at ``effect``.

    Paired: one-sample t on differences, noncentrality d_z·sqrt(n), df n − 1. Unpaired: two
    equal groups, noncentrality d·sqrt(n/2), df 2n − 2. None when no n up to ``most`` does
    (a zero effect) — the noncentral t of every n at once, not a loop.
    """
    if not np.isfinite(effect):
        return 2
    if effect == 0:
        return None
    for lo, hi in ((2, 256), (257, most)):  # small n first: most effects are found there
        n = np.arange(lo, hi + 1)
        df = n - 1 if paired else 2 * n - 2
        nc = abs(effect) * (np.sqrt(n) if paired else np.sqrt(n / 2))
        crit = scipy.stats.t.ppf(1 - alpha / 2, df)
        with np.errstate(divide="ignore", invalid="ignore"):  # (scipy < 1.14 warns at large nc)
            reach = scipy.stats.nct.sf(crit, df, nc) + scipy.stats.nct.cdf(-crit, df, nc)
        hit = np.flatnonzero(reach >= power)
        if len(hit):
            return int(n[hit[0]])
    return None


def bootstrap(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, metric: str,
              paired: bool, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
              draws: tuple | None = None) -> dict:
    """Multibootstrap of mean(metric of B's runs) − mean(metric of A's runs).

    ``pred_a``, ``pred_b``: (run, example) predicted classes; paired: row i of both share seeds.
    Each draw resamples the examples (the same for A and B: one validation set) and the runs
    (paired: the same rows on both sides; unpaired: each side on its own), all with replacement,
    and recomputes every run's metric on the drawn examples. Returns the observed difference,
    the ``1 − alpha`` percentile interval and the two-sided p = 2·min(1 + #(d ≤ 0),
    1 + #(d ≥ 0)) / (1 + draws) — never 0: with B draws nothing below 1/B can be claimed.
    ``draws`` (example weights, A run weights, B run weights) replaces the random ones (tests).
    """
    rng = np.random.default_rng(seed)
    n_ex, n_a, n_b = pred_a.shape[1], len(pred_a), len(pred_b)
    if draws is None:
        w_ex = rng.multinomial(n_ex, np.full(n_ex, 1 / n_ex), size=n_boot).astype(np.float64)
        w_a = rng.multinomial(n_a, np.full(n_a, 1 / n_a), size=n_boot).astype(np.float64)
        w_b = w_a if paired else rng.multinomial(n_b, np.full(n_b, 1 / n_b), size=n_boot) \
            .astype(np.float64)
    else:
        w_ex, w_a, w_b = draws

    def mean_metric(pred, w_runs):
        if metric in metrics.REGRESSION:
            per_run = _resampled_correlation(pred, labels, w_ex, metric)
        else:
            per_run = metrics.from_class_counts(metric, *metrics.weighted_class_counts(
                pred, labels, w_ex))
        return (per_run * w_runs).sum(axis=1) / w_runs.sum(axis=1)  # (draw,)

    diffs = mean_metric(pred_b, w_b) - mean_metric(pred_a, w_a)
    observed = float(metrics.METRICS[metric](pred_b, labels).mean()
                     - metrics.METRICS[metric](pred_a, labels).mean())
    p = min(1.0, 2 * (1 + min(np.sum(diffs <= 0), np.sum(diffs >= 0))) / (1 + len(diffs)))
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {"difference": observed, "ci": [float(lo), float(hi)], "p": float(p),
            "n_boot": len(diffs), "paired": paired}


def _resampled_correlation(pred: np.ndarray, labels: np.ndarray, w_ex: np.ndarray,
                           metric: str, cells: int = 20_000_000) -> np.ndarray:
    """A correlation metric of each run (run, example) on each draw's resample of the examples
    (multiplicities ``w_ex`` (draw, example)): (draw, run). A correlation is not a sum over
    examples, so each resample is built (its ranks, for Spearman, are its own), a block of
    draws at a time (at most ``cells`` numbers in memory)."""
    n_draw, n_ex = w_ex.shape
    picks = np.repeat(np.tile(np.arange(n_ex), n_draw), w_ex.astype(np.int64).ravel()
                      ).reshape(n_draw, n_ex)  # each draw holds n_ex examples
    block = max(1, cells // max(1, pred.size))
    return np.concatenate([
        metrics.METRICS[metric](pred[:, idx].transpose(1, 0, 2), labels[idx][:, None, :])
        for idx in (picks[d:d + block] for d in range(0, n_draw, block))])


def aso(a, b, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
        dt: float = 0.005) -> float:
    """Almost Stochastic Order ε_min of B over A (Dror et al. 2019), as deepsig computes it.

    The violation ratio ε_W2 = ∫_{F_B⁻¹(t) < F_A⁻¹(t)} (F_A⁻¹ − F_B⁻¹)² dt / W2(F_A, F_B)²
    (t on a grid of step ``dt``), and ε_min, its upper confidence bound: ε̂ + σ̂ /
    sqrt(n_a n_b / (n_a + n_b)) · Φ⁻¹(confidence), σ̂ the std over ``n_boot`` bootstrap resamples
    of sqrt(n_a n_b / (n_a + n_b)) · (ε* − ε̂); clipped to [0, 1]. ε_min < 0.5: B is almost
    stochastically larger than A; 0: B dominates. (deepsig's ``aso(b, a)``.)
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    t = np.arange(dt, 1, dt)

    def quantiles(scores):  # the empirical quantile function, on the last axis
        s = np.sort(scores, axis=-1)
        return s[..., np.clip(np.ceil(s.shape[-1] * t).astype(int) - 1, 0, s.shape[-1] - 1)]

    eps = _violation(quantiles(a), quantiles(b), dt)
    boot = _violation(quantiles(rng.choice(a, (n_boot, len(a)))),
                      quantiles(rng.choice(b, (n_boot, len(b)))), dt)
    scale = np.sqrt(len(a) * len(b) / (len(a) + len(b)))
    sigma = np.std(scale * (boot - eps))
    return float(np.clip(eps + sigma / scale * scipy.stats.norm.ppf(confidence), 0, 1))


def _violation(qa: np.ndarray, qb: np.ndarray, dt: float) -> np.ndarray:
    """ε_W2 of quantile functions on the same grid (last axis); 0.5 where they are equal."""
    sq = (qb - qa) ** 2
    total = sq.sum(axis=-1) * dt
    below = np.where(qb < qa, sq, 0.0)[..., 1:].sum(axis=-1) * dt  # deepsig skips t = dt
    return np.divide(below, total, out=np.full_like(total, 0.5, dtype=np.float64),
                     where=total > 0)


def churn(pred_a: xr.DataArray, pred_b: xr.DataArray, paired_cells: list | None) -> dict:
    """How many predictions change from A to B, beyond the seed-to-seed churn inside A.

    ``pred_*`` (seed_wi, seed_do, example). ``within_a``: mean over pairs of A's runs of the
    fraction of examples predicted differently (1 − agreement); ``between``: the same over
    pairs (a run of A, a run of B); ``same_seeds`` (paired only): over the cells both share;
    ``excess`` = between − within_a; ``examples_changed``: examples whose majority label over
    the runs differs between A and B.
    """
    runs_a = pred_a.stack(run=SEEDS).dropna("run", how="all").transpose("run", "example").values
    runs_b = pred_b.stack(run=SEEDS).dropna("run", how="all").transpose("run", "example").values
    classes = np.union1d(np.unique(runs_a), np.unique(runs_b))
    share_a = (runs_a[:, :, None] == classes).mean(axis=0)  # (example, class)
    share_b = (runs_b[:, :, None] == classes).mean(axis=0)
    counts_a = (runs_a[:, :, None] == classes).sum(axis=0)  # (example, class)
    pairs_a = len(runs_a) * (len(runs_a) - 1)
    within = 1 - float((counts_a * (counts_a - 1)).sum(axis=1).mean() / pairs_a) \
        if pairs_a else float("nan")
    between = 1 - float((share_a * share_b).sum(axis=1).mean())
    out = {"within_a": within, "between": between, "excess": between - within,
           "examples_changed": int(np.sum(share_a.argmax(1) != share_b.argmax(1))),
           "examples": runs_a.shape[1], "same_seeds": None}
    if paired_cells:
        wi, do = (xr.DataArray([c[i] for c in paired_cells], dims="cell") for i in (0, 1))
        same = pred_a.sel(seed_wi=wi, seed_do=do) != pred_b.sel(seed_wi=wi, seed_do=do)
        out["same_seeds"] = float(same.mean())
    return out


def load(path, metric: str | None, step: str) -> tuple[xr.Dataset, xr.DataArray, xr.DataArray]:
    """A cube (a run folder, a cube file, or a cube in memory: an ``xarray.Dataset``), its
    per-run scores (seed_wi, seed_do) and predictions at ``step`` (end|best)."""
    if step not in ("end", "best"):
        raise UsageError(f"--step {step!r}: give 'end' (the last evaluation) or 'best' (each "
                         "run's best evaluation in training)")
    ds = path.load() if isinstance(path, xr.Dataset) else open_cube(path).load()
    scores = ds.seedgrid.metric(metric)
    if step == "end":
        return ds, scores.isel(step=-1, drop=True), ds.seedgrid.predictions().isel(step=-1)
    best = ds.seedgrid.best_so_far(metric)
    # the evaluation where each run reached its best (first one on ties), as the model kept
    during = scores.where(scores["step"] > 0)
    at = during.fillna(-np.inf).argmax("step")
    pred = ds.seedgrid.predictions().isel(step=at)
    return ds, best.isel(step=-1, drop=True), pred.where(best.isel(step=-1).notnull())


def check_comparable(a: xr.Dataset, b: xr.Dataset, metric: str | None) -> None:
    """Refuse cubes of different tasks or validation sets, and unknown metrics (exit 2)."""
    if a.attrs["task"] != b.attrs["task"]:
        raise UsageError(f"the cubes are of different tasks ({a.attrs['task']!r} vs "
                         f"{b.attrs['task']!r}): compare configurations of one task")
    if not np.array_equal(a["example"].values, b["example"].values):
        raise UsageError(f"the cubes have different validation examples ({a.sizes['example']} "
                         f"vs {b.sizes['example']}): compare runs evaluated on the same set")
    if metric:
        metrics.check_metric(metric, a.seedgrid.regression)


def shared_cells(a: xr.DataArray, b: xr.DataArray) -> list[tuple[int, int]]:
    """The (seed_wi, seed_do) cells with a score on both sides."""
    a, b = xr.align(a, b, join="inner")
    cells = (a.notnull() & b.notnull()).stack(cell=SEEDS)
    return [(int(wi), int(do)) for wi, do in cells["cell"].values[cells.values]]


def sides(score_a, score_b, pred_a, pred_b):
    """Paired (by shared cells, when at least 2) or unpaired per-run scores and predictions:
    (cells or [], scores a, scores b, predictions a (run, example), predictions b)."""
    cells = shared_cells(score_a, score_b)
    if len(cells) >= 2:
        wi, do = (xr.DataArray([c[i] for c in cells], dims="run") for i in (0, 1))
        pick = [x.sel(seed_wi=wi, seed_do=do) for x in (score_a, score_b, pred_a, pred_b)]
    else:
        cells = []
        pick = [x.stack(run=SEEDS).dropna("run", how="all") for x in (score_a, score_b)]
        pick += [p.stack(run=SEEDS).sel(run=s["run"]) for p, s in zip((pred_a, pred_b), pick)]
    a, b = (x.values for x in pick[:2])
    runs_a, runs_b = (x.transpose("run", "example").values for x in pick[2:])
    return cells, a, b, runs_a, runs_b


def check_options(alpha: float, n_boot: int = 1, **tolerances: float) -> None:
    if not 0 < alpha < 1:  # NaN fails this too
        raise UsageError(f"--alpha {alpha}: give a significance level between 0 and 1, e.g. 0.05")
    if n_boot < 1:
        raise UsageError(f"--boot {n_boot}: give at least 1 bootstrap draw (1000 is usual)")
    for name, value in tolerances.items():
        if not np.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} {value}: give a finite number")
        if value < 0:
            raise UsageError(f"--{name.replace('_', '-')} {value}: a tolerance cannot be "
                             "negative; give 0 or more")


def compare(path_a, path_b, metric: str | None = None, step: str = "end", alpha: float = 0.05,
            min_effect: float = 0.005, n_boot: int = 1000, seed: int = 0,
            test: str = "t") -> dict:
    """Everything ``python -m seedgrid compare`` prints, as one dict (see the module doc).
    ``path_a``, ``path_b``: run folders, cube files, or cubes in memory (``xarray.Dataset``,
    e.g. ``seedgrid.open_cube(...)`` in a notebook).

    ``test`` names the test the verdict follows (``t``: the paired t-test as the tutorial,
    Welch's unpaired; ``wilcoxon``: the signed-rank test, Mann-Whitney U unpaired;
    ``bootstrap``: the multibootstrap); ``verdict`` says whether the three tests agree.
    """
    if test not in TESTS:
        raise UsageError(f"--test {test!r}: choose one of {', '.join(TESTS)}")
    check_options(alpha=alpha, n_boot=n_boot, min_effect=min_effect)
    if metric in metrics.BY_QUESTION:  # the bootstrap draws examples, not questions
        raise UsageError(f"--metric {metric}: compare's bootstrap resamples examples, and "
                         f"{metric} scores whole questions; compare on f1 (MultiRC's F1a), or "
                         f"gate on {metric} with regress")
    ds_a, score_a, pred_a = load(path_a, metric, step)
    ds_b, score_b, pred_b = load(path_b, metric, step)
    check_comparable(ds_a, ds_b, metric)
    name = str(score_a.name)
    cells, a, b, runs_a, runs_b = sides(score_a, score_b, pred_a, pred_b)
    paired = bool(cells)
    tests = scores_test(a, b, paired, alpha)
    regression = ds_a.seedgrid.regression
    kind = np.float64 if regression else np.int64
    boot = bootstrap(runs_a.astype(kind), runs_b.astype(kind), ds_a.label.values, name,
                     paired, n_boot=n_boot, alpha=alpha, seed=seed)
    result = {
        "seedgrid_compare": 1,
        "a": _named(path_a, ds_a), "b": _named(path_b, ds_b), "task": ds_a.attrs["task"], "metric": name,
        "step": step, "pairing": "paired" if paired else "unpaired",
        "paired_cells": len(cells) if paired else 0, **tests, "bootstrap": boot,
        "aso_epsilon_min": aso(a, b, seed=seed),
        "best_a": float(np.max(a)), "best_b": float(np.max(b)),
        # regression: outputs are real numbers, no predicted classes to agree on
        "churn": None if regression else churn(pred_a, pred_b, cells if paired else None),
        "rank_p_floor": rank_test_floor(a, b, paired),
    }
    p_of = {"t": tests["p"], "wilcoxon": tests["rank_p"], "bootstrap": boot["p"]}
    calls = {k: bool(p < alpha) for k, p in p_of.items()}
    significant = calls[test]
    result["verdict"] = {"significant": significant, "test": test,
                         "tests_agree": len(set(calls.values())) == 1,
                         "p": {k: float(p) for k, p in p_of.items()}}
    warnings = _warnings(result, tests, a, b, p_of[test], significant, min_effect, step)
    result.update(significant=significant, warnings=warnings)
    return result


def _named(path, ds: xr.Dataset) -> str:
    """How the result names a side: its path, or a cube in memory by its task and config."""
    if isinstance(path, xr.Dataset):
        return f"a cube in memory ({ds.attrs.get('task')}, config {ds.attrs.get('config_hash')})"
    return str(path)


def _warnings(result: dict, tests: dict, a, b, p: float, significant: bool, min_effect: float,
              step: str) -> list[str]:
    """What a reader of the verdict should be told: too few seeds, a rank test that cannot
    reach alpha, a negligible significant difference, best-seed comparisons, --step best."""
    alpha, paired = result["alpha"], result["pairing"] == "paired"
    warnings = []
    if min(len(a), len(b)) < MIN_SEEDS:
        warnings.append(f"only {min(len(a), len(b))} runs on one side: the tutorial asks for at "
                        f"least {MIN_SEEDS} seeds per configuration (5+ is better)")
    if result["rank_p_floor"] >= alpha:
        warnings.append(f"with these runs the {tests['rank_test']} test cannot reach p < "
                        f"{alpha:g} (its smallest possible p is {result['rank_p_floor']:.3g}): "
                        "train more seeds" + ("; a paired rank test needs 6+ pairs at 0.05"
                                              if paired else ""))
    if significant and abs(tests["difference"]) < min_effect:
        warnings.append(f"significant (p = {p:.3g}) but the difference "
                        f"{tests['difference']:+.4f} is below --min-effect {min_effect}: real, "
                        "perhaps too small to matter")
    best_gap = result["best_b"] - result["best_a"]
    if best_gap * tests["difference"] < 0 or (not significant and abs(best_gap) >= min_effect):
        warnings.append(f"comparing best seeds would say {best_gap:+.4f}"
                        " (best of B − best of A): a best seed is the top of a noisy sample, "
                        "not the configuration; use the tests above")
    if step == "best":
        warnings.append("--step best picks each run's best evaluation on this same validation "
                        "set: both sides are optimistic")
    return warnings


def format_result(r: dict) -> str:
    """The human-readable table of :func:`compare`."""
    f = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    lines = [
        f"{r['metric']} ({r['step']}) on {r['task']}: {r['pairing']}"
        + (f" over {r['paired_cells']} shared cells (seed_wi, seed_do)" if r["paired"] else
           " (the grids share fewer than 2 cells)"),
        f"  A {r['a']}: mean {f(r['mean_a'])}, sd {f(r['sd_a'])}, {r['n_a']} runs",
        f"  B {r['b']}: mean {f(r['mean_b'])}, sd {f(r['sd_b'])}, {r['n_b']} runs",
        f"  difference B − A: {r['difference']:+.4f} ({100 * r['difference']:+.2f} points), "
        f"{100 * (1 - r['alpha']):.0f}% CI [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]",
        f"  {r['test']}: t = {f(r['t'])}, p = {r['p']:.4g}; {r['rank_test']}: p = "
        f"{r['rank_p']:.4g}",
        f"  bootstrap over seeds and examples ({r['bootstrap']['n_boot']} draws): CI "
        f"[{r['bootstrap']['ci'][0]:+.4f}, {r['bootstrap']['ci'][1]:+.4f}], p = "
        f"{r['bootstrap']['p']:.4g}",
        f"  Almost Stochastic Order: epsilon_min = {r['aso_epsilon_min']:.3f} (< 0.5: B "
        "stochastically larger)",
        f"  effect size: Cohen's d_z (paired) = {f(r['d_z'])}, d_av (tutorial's pooled) = "
        f"{f(r['d_av'])}",
        f"  seeds per side for {100 * r['power']:.0f}% power at this effect: "
        f"{r['seeds_for_power'] if r['seeds_for_power'] is not None else 'more than 10000'}",
        _churn_line(r["churn"]),
        _verdict_line(r),
    ]
    return "\n".join(lines)  # (its warnings are the caller's to log, on stderr)


def _churn_line(c: dict | None) -> str:
    if c is None:
        return "  predictions: a regression task has no predicted classes to compare (n/a)"
    return (f"  predictions: {c['between']:.4f} of them differ between A and B runs, "
            f"{c['within_a']:.4f} between A's own seeds (excess {c['excess']:+.4f}); majority "
            f"label changed on {c['examples_changed']} of {c['examples']} examples")


def _verdict_line(r: dict) -> str:
    """The verdict, the test it follows, and whether the other two agree."""
    v = r["verdict"]
    names = {"t": r["test"], "wilcoxon": r["rank_test"], "bootstrap": "the bootstrap"}
    line = (("SIGNIFICANT" if v["significant"] else "not significant") + f" at alpha = "
            f"{r['alpha']} by {names[v['test']]} (p = {v['p'][v['test']]:.4g})")
    if v["tests_agree"]:
        return line + "; the other two tests agree"
    others = [k for k in TESTS if k != v["test"]]
    return line + "; they disagree: " + ", ".join(
        f"{names[k]} p = {v['p'][k]:.4g}" for k in others) + " (--test picks the one to follow)"
