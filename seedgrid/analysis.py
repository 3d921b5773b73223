"""Analyses of a seed grid, on whole arrays with labelled dimensions (Dodge et al. 2020).

Every function takes a DataArray of a metric with dimensions ``seed_wi`` and ``seed_do`` (and
``step`` where the analysis is about training dynamics), as ``ds.seedgrid.metric()`` or
``ds.seedgrid.best_so_far()`` give, and works on the whole array at once. Missing cells (NaN)
are left out, never counted as zero.

- :func:`decoupled_std` — Table 3: how much of the spread comes from WI vs DO.
- :func:`best_vs_worst_anova` — Table 4: are the best and worst seeds different?
- :func:`expected_max` — Fig. 1: expected best of n runs, with its ± band.
- :func:`step_correlation` — Fig. 5 / 9: Spearman (or Pearson) between evaluation points.
- :func:`consistency` — Bui et al. 2025's micro view: do runs agree on individual examples?
"""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats
import xarray as xr

SEEDS = ("seed_wi", "seed_do")


def decoupled_std(metric: xr.DataArray, ddof: int = 0) -> dict[str, float]:
    """Dodge et al.'s Table 3 on a (seed_wi, seed_do) metric.

    ``wi``: for each WI seed, the std over its DO seeds, averaged over WI seeds ("aggregated
    over WI"); ``do``: the same with the roles swapped; ``total``: the std over all cells.
    ``ddof`` as in numpy (0, numpy's default).
    """
    return {
        "wi": float(metric.std("seed_do", ddof=ddof).mean("seed_wi")),
        "do": float(metric.std("seed_wi", ddof=ddof).mean("seed_do")),
        "total": float(metric.std(SEEDS, ddof=ddof)),
    }


def best_vs_worst_anova(metric: xr.DataArray) -> dict[str, dict]:
    """Dodge et al.'s Table 4: one-way ANOVA between the best and the worst seed of each kind.

    For ``seed_wi``: the WI seeds with the highest and lowest mean over DO seeds, and the
    ANOVA (scipy.stats.f_oneway) of their rows; likewise for ``seed_do`` with columns.
    """
    out = {}
    for kind, other in (("seed_wi", "seed_do"), ("seed_do", "seed_wi")):
        means = metric.mean(other)
        best, worst = int(means.idxmax(kind)), int(means.idxmin(kind))
        a, b = (metric.sel({kind: s}).values for s in (best, worst))
        f, p = scipy.stats.f_oneway(a[~np.isnan(a)], b[~np.isnan(b)])
        out[kind] = {"best": best, "worst": worst, "f": float(f), "p": float(p)}
    return out


def expected_max(scores, replace: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Expected best of n runs for n = 1..N, and its standard deviation (Dodge et al. 2019).

    ``scores``: the N observed scores (NaN left out). With the scores sorted v(1) <= ... <= v(N),
    the best of n draws is v(i) with probability F(i)^n - F(i-1)^n, F(i) = i/N (with
    replacement), or C(i, n)/C(N, n) - C(i-1, n)/C(N, n) (without; n <= N). Returns
    (mean, std) arrays of length N; the band of the paper's figure is mean ± std.
    """
    v = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    v = v[~np.isnan(v)]
    n_scores = len(v)
    n = np.arange(1, n_scores + 1)[:, None]  # (n, 1)
    i = np.arange(0, n_scores + 1)[None, :]  # (1, i) with i = 0..N
    if replace:
        cdf = (i / n_scores) ** n
    else:
        cdf = scipy.special.comb(i, n) / scipy.special.comb(n_scores, n)
    prob = np.diff(cdf, axis=1)  # (n, N): P(best of n is v(i))
    mean = prob @ v
    var = prob @ v**2 - mean**2
    return mean, np.sqrt(np.clip(var, 0, None))


def step_correlation(metric: xr.DataArray, method: str = "spearman") -> xr.DataArray:
    """Correlation across cells between every pair of evaluation points (Dodge et al. Fig. 5, 9).

    ``metric`` has dims (seed_wi, seed_do, step); cells with a NaN at any step are left out.
    Spearman ranks every step's scores at once (average ranks for ties) and correlates the
    ranks; a step whose scores are all equal has no defined correlation (NaN).
    Returns (step, step_other).
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method {method!r}: use 'spearman' or 'pearson'")
    cells = metric.stack(cell=SEEDS).transpose("cell", "step").values
    cells = cells[~np.isnan(cells).any(axis=1)]
    if method == "spearman":
        cells = scipy.stats.rankdata(cells, axis=0)
    centred = cells - cells.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(norm, norm)
    steps = metric["step"].values
    return xr.DataArray(np.clip(corr, -1, 1), dims=("step", "step_other"),
                        coords={"step": steps, "step_other": steps}, name=f"{method}_correlation")


def consistency(predictions: xr.DataArray, label: xr.DataArray,
                over: str | tuple[str, ...] = SEEDS) -> xr.Dataset:
    """How consistently runs predict individual examples (Bui et al. 2025's micro metrics).

    ``predictions``: predicted classes with dims including ``example`` and the run dimensions
    ``over`` (as ``ds.seedgrid.predictions().isel(step=-1)``; NaN for missing runs, which are
    left out). ``over`` = both seeds: the whole grid; ``"seed_do"``: within each WI row;
    ``"seed_wi"``: within each DO column. Returns, over the remaining dimensions:

    - ``con``: fraction of examples on which all runs predict the same label;
    - ``ccon``: fraction of examples that all runs predict correctly;
    - ``agreement``: mean over pairs of runs of the fraction of equal predictions;
    - ``flip_rate`` (per example): fraction of pairs of runs that disagree on it.

    An example seen by fewer than two runs has no pairs: its flip rate is NaN.
    """
    over = (over,) if isinstance(over, str) else tuple(over)
    present = predictions.notnull()
    runs = present.sum(over)
    same = predictions.max(over) == predictions.min(over)
    correct = ((predictions == label) | ~present).all(over) & (runs > 0)
    classes = np.unique(label.values)
    classes = np.union1d(classes, np.unique(predictions.values[~np.isnan(predictions.values)]))
    counts = xr.concat([(predictions == k).sum(over) for k in classes], dim="class")
    pairs = runs * (runs - 1)
    agree = (counts * (counts - 1)).sum("class") / pairs.where(pairs > 0)
    return xr.Dataset({
        "con": (same & (runs > 0)).mean("example"),
        "ccon": correct.mean("example"),
        "agreement": agree.mean("example"),
        "flip_rate": 1 - agree,
    })
