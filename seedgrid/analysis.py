"""Analyses of a seed grid, on whole arrays with labelled dimensions (Dodge et al. 2020).

Every function takes a DataArray of a metric with dimensions ``seed_wi`` and ``seed_do`` (and
``step`` where the analysis is about training dynamics), as ``ds.seedgrid.metric()`` or
``ds.seedgrid.best_so_far()`` give, and works on the whole array at once. Missing cells (NaN)
are left out, never counted as zero.

- :func:`summary` — mean, standard deviation, variance, extremes (Bui's VAR is the variance).
- :func:`regimes` — Table 1 / Fig. 1: the model found when evaluating at every evaluation, at
  epoch ends, or only at the end.
- :func:`decoupled_std` — Table 3: how much of the spread comes from WI vs DO.
- :func:`best_vs_worst_anova` — Table 4: are the best and worst seeds different?
- :func:`seed_permutation_test` — the authors' permutation test on row / column-mean ranges.
- :func:`expected_max` — Fig. 1: expected best of n runs, with its ± band.
- :func:`step_correlation` — Fig. 5 / 9: Spearman (or Pearson) between evaluation points.
- :func:`seeds_across_tasks` — §4.3: are good WI seeds good on every task?
- :func:`consistency` — Bui et al. 2025's micro view: do runs agree on individual examples?
- :func:`run_pairs` — Bui's Fig. 1: pairs of runs with equal accuracy and little overlap.
- :func:`by_training_size` — Bui's Fig. 2: VAR, CON and CCON of several cubes against n_train.

The early-stopping simulation (§5, Fig. 6 / 7) is :mod:`seedgrid.early_stopping`.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.special
import scipy.stats
import pandas as pd
import xarray as xr

from seedgrid.store import SEEDS
from seedgrid.tasks import f1_metric

REGIMES = ("every", "epoch_ends", "end")


def summary(metric: xr.DataArray) -> dict[str, float]:
    """Mean, standard deviation (ddof 0), variance, min, max and count of the present cells."""
    v = np.asarray(metric, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if not len(v):
        return {"n": 0, **dict.fromkeys(("mean", "std", "var", "min", "max"), float("nan"))}
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std()),
            "var": float(v.var()), "min": float(v.min()), "max": float(v.max())}


def regimes(metric: xr.DataArray, epoch: xr.DataArray) -> xr.DataArray:
    """Each run's selected score under Dodge et al.'s three evaluation regimes (Table 1, Fig. 1).

    ``metric`` (seed_wi, seed_do, step) and the fractional ``epoch`` of each step. A run keeps
    the best of the evaluations it would have made: ``every`` evaluation during training,
    ``epoch_ends`` only, or the ``end`` only. The evaluation before training (epoch 0) is not a
    trained model and never counts. Returns (regime, seed_wi, seed_do); NaN evaluations are
    skipped, a run with none is NaN. Where the epoch is not known (an imported grid without
    one), a step after update 0 is trained, and no evaluation ends an epoch.
    """
    epochs = np.asarray(epoch, dtype=np.float64)
    trained = np.where(np.isnan(epochs), np.asarray(metric["step"]) > 0, epochs > 0)
    ends = trained & np.isclose(epochs, np.round(epochs))
    last = np.arange(len(epochs)) == len(epochs) - 1
    masks = xr.DataArray(np.stack([trained, ends, last]), dims=("regime", "step"),
                         coords={"regime": list(REGIMES)})
    picks = metric.where(masks).max("step", skipna=True).rename(metric.name)
    return picks.transpose("regime", ...)


def variance_shares(metric: xr.DataArray) -> dict[str, float]:
    """What share of the variance of a (seed_wi, seed_do) metric the WI seeds, the DO seeds and
    the rest (their interaction: each run on its own) explain — the sums of squares of a
    two-way layout without replication, each over the total. On the seeds whose runs are all
    there (a WI seed with a missing cell is left out, then a DO seed). NaN with fewer than two
    seeds of a kind, or no spread at all."""
    m = metric.dropna("seed_wi", how="any").dropna("seed_do", how="any")
    v = np.asarray(m.transpose("seed_wi", "seed_do"), dtype=np.float64)
    if min(v.shape) < 2:
        return dict.fromkeys(("wi", "do", "rest", "runs"), float("nan")) | {"runs": v.size}
    grand = v.mean()
    total = ((v - grand) ** 2).sum()
    ss_wi = v.shape[1] * ((v.mean(axis=1) - grand) ** 2).sum()
    ss_do = v.shape[0] * ((v.mean(axis=0) - grand) ** 2).sum()
    shares = [ss / total if total > 0 else float("nan") for ss in (ss_wi, ss_do,
                                                                   total - ss_wi - ss_do)]
    return {"wi": shares[0], "do": shares[1], "rest": shares[2], "runs": int(v.size)}


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


def best_vs_worst_anova(metric: xr.DataArray, alpha: float = 0.05) -> dict[str, dict]:
    """Dodge et al.'s Table 4: one-way ANOVA between the best and the worst seed of each kind.

    For ``seed_wi``: the WI seeds with the highest and lowest mean over DO seeds, and the
    ANOVA (scipy.stats.f_oneway) of their rows; likewise for ``seed_do`` with columns. Beside
    it, the assumptions their App. B discusses: equal variances (Levene's test, median-centred
    as Brown and Forsythe), and normal residuals (Shapiro-Wilk on each run's deviation from its
    seed's mean; needs 3 runs). ``assumptions_met`` is False when either test rejects at
    ``alpha`` — then the permutation test, which assumes neither, is the one to read.
    """
    out = {}
    for kind, other in (("seed_wi", "seed_do"), ("seed_do", "seed_wi")):
        means = metric.mean(other)
        if means.isnull().all():
            out[kind] = {"best": None, "worst": None, "f": float("nan"), "p": float("nan"),
                         "levene_p": float("nan"), "shapiro_p": float("nan"),
                         "assumptions_met": None}
            continue
        best, worst = int(means.idxmax(kind)), int(means.idxmin(kind))
        a, b = (metric.sel({kind: s}).values for s in (best, worst))
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        f, p = scipy.stats.f_oneway(a, b)
        levene = scipy.stats.levene(a, b).pvalue
        residuals = np.concatenate([a - a.mean(), b - b.mean()])
        shapiro = scipy.stats.shapiro(residuals).pvalue if len(residuals) >= 3 and \
            np.ptp(residuals) > 0 else float("nan")
        tested = [x for x in (levene, shapiro) if np.isfinite(x)]
        out[kind] = {"best": best, "worst": worst, "f": float(f), "p": float(p),
                     "levene_p": float(levene), "shapiro_p": float(shapiro),
                     "assumptions_met": bool(all(x >= alpha for x in tested)) if tested else None}
    return out


def seed_permutation_test(metric: xr.DataArray, n_resamples: int = 10_000,
                          seed: int = 0) -> dict[str, dict]:
    """Are some seeds better than others? The permutation test of Dodge et al.'s code.

    Statistic, per kind: the range (max − min) of the WI row means (``seed_wi``) or of the DO
    column means (``seed_do``). Null: ``n_resamples`` shuffles of all present cells over the
    grid's present positions (the same shuffles for both kinds). p-value: (1 + shuffles with a
    range ≥ the observed) / (1 + n_resamples), as scipy.stats.permutation_test. Missing cells
    stay missing. Returns ``{kind: {"range", "p"}}``.
    """
    grid = metric.transpose(*SEEDS).values.astype(np.float64)
    present = ~np.isnan(grid)
    rng = np.random.default_rng(seed)
    shuffled = np.full((n_resamples, *grid.shape), np.nan)
    shuffled[:, present] = rng.permuted(np.broadcast_to(grid[present], (n_resamples,
                                                                        present.sum())), axis=1)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no present cell
        for kind, axis in (("seed_wi", -1), ("seed_do", -2)):
            observed = _range(np.nanmean(grid, axis=axis))
            null = _range(np.nanmean(shuffled, axis=axis))
            p = (1 + np.sum(null >= observed - 1e-12)) / (1 + n_resamples)
            out[kind] = {"range": float(observed), "p": float(p)}
    return out


def _range(means: np.ndarray) -> np.ndarray:
    return np.nanmax(means, axis=-1) - np.nanmin(means, axis=-1)


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
    steps = metric["step"].values
    return xr.DataArray(_correlation(cells, method), dims=("step", "step_other"),
                        coords={"step": steps, "step_other": steps}, name=f"{method}_correlation")


def _correlation(cells: np.ndarray, method: str) -> np.ndarray:
    """(k, k) correlation between the columns of ``cells`` (n, k); rows with a NaN left out."""
    cells = cells[~np.isnan(cells).any(axis=1)]
    if method == "spearman":
        cells = scipy.stats.rankdata(cells, axis=0)
    centred = cells - cells.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((centred.T @ centred) / np.outer(norm, norm), -1, 1)


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
    - ``flip_rate`` (per example): fraction of pairs of runs that disagree on it;
    - ``runs``: how many runs (with predictions) each value is over.

    With fewer than two runs, CON, CCON and agreement are undefined: NaN, never 0 or 1. An
    example seen by fewer than two runs has no pairs: its flip rate is NaN.
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
    finished = present.any("example").sum(over)  # runs with predictions, per group
    defined = finished >= 2  # one run agrees with itself: CON over it means nothing
    return xr.Dataset({
        "runs": finished,
        "con": (same & (runs > 0)).mean("example").where(defined),
        "ccon": correct.mean("example").where(defined),
        "agreement": agree.mean("example").where(defined),
        "flip_rate": 1 - agree,
    })


def agreement_matrix(predictions: xr.DataArray) -> xr.DataArray:
    """Fraction of examples on which two runs predict the same label, for every pair of runs.

    ``predictions`` (seed_wi, seed_do, example) as in :func:`consistency`. Returns
    (run, run_other) over the present runs, with ``seed_wi`` and ``seed_do`` along ``run``;
    the diagonal is 1. One matrix product over one-hot predictions, not a loop over pairs.
    """
    runs = _present_runs(predictions)
    pred = runs.values
    classes = np.unique(pred)
    onehot = (pred[:, :, None] == classes).reshape(len(pred), pred.shape[1] * len(classes)) \
        .astype(np.float64)
    agree = onehot @ onehot.T / max(pred.shape[1], 1)
    index = runs.indexes["run"]
    coords = {"seed_wi": ("run", index.get_level_values(0)),
              "seed_do": ("run", index.get_level_values(1)),
              "seed_wi_other": ("run_other", index.get_level_values(0)),
              "seed_do_other": ("run_other", index.get_level_values(1))}
    return xr.DataArray(agree, dims=("run", "run_other"), coords=coords, name="agreement")


def _present_runs(predictions: xr.DataArray) -> xr.DataArray:
    """(run, example): the runs with predictions for every example, stacked."""
    runs = predictions.stack(run=SEEDS).transpose("run", "example")
    return runs.isel(run=np.flatnonzero(runs.notnull().all("example").values))


def run_pairs(predictions: xr.DataArray, label: xr.DataArray, tolerance: float = 0.0,
              top: int = 10) -> pd.DataFrame:
    """Bui et al.'s Fig. 1 in a grid: pairs of runs with (nearly) equal accuracy that agree least.

    Pairs whose accuracies differ by at most ``tolerance``, sorted by ``agreement`` (fraction of
    equal predictions), lowest first; ``both_correct`` is the fraction of examples both runs get
    right. Returns the ``top`` pairs, one row each.
    """
    agree = agreement_matrix(predictions)
    c = (_present_runs(predictions) == label).values.astype(np.float64)
    accuracy = c.mean(axis=1)
    both = c @ c.T / max(c.shape[1], 1)
    a, b = np.triu_indices(len(c), k=1)
    keep = np.abs(accuracy[a] - accuracy[b]) <= tolerance + 1e-12
    a, b = a[keep], b[keep]
    table = pd.DataFrame({
        "seed_wi_a": agree["seed_wi"].values[a], "seed_do_a": agree["seed_do"].values[a],
        "seed_wi_b": agree["seed_wi"].values[b], "seed_do_b": agree["seed_do"].values[b],
        "accuracy_a": accuracy[a], "accuracy_b": accuracy[b],
        "agreement": agree.values[a, b], "both_correct": both[a, b]})
    return table.sort_values(["agreement", "both_correct"], kind="stable").head(top) \
        .reset_index(drop=True)


def by_training_size(cubes: list[xr.Dataset], step: int = -1) -> pd.DataFrame:
    """Bui et al.'s Fig. 2: one row per cube — n_train, VAR over runs of its task's own metric
    (``var``: MCC for CoLA, Pearson for STS-B...), of accuracy (``var_accuracy``) and of F1
    (``var_f1``: macro-F1 beyond two labels and for COPA's alternatives) — the paper's abstract
    speaks of "accuracy and F1" — and CON, CCON.

    All at evaluation ``step`` (position; default the last); sorted by training-set size. What a
    task cannot have (accuracy, F1, CON and CCON of a regression task) is NaN.
    """
    rows = []
    for ds in cubes:
        acc = ds.seedgrid
        m = acc.metric().isel(step=step)
        micro = None if acc.regression else acc.consistency(step=step)
        f1 = f1_metric(ds.attrs["task"], ds.sizes["class"])
        by = {} if acc.regression else {
            k: summary(acc.metric(name).isel(step=step))["var"]
            for k, name in (("var_accuracy", "accuracy"), ("var_f1", f1))}
        rows.append({"task": ds.attrs["task"], "model": ds.attrs["model"],
                     "n_train": int(ds.attrs["n_train"]),
                     "metric": m.name, "runs": int(m.notnull().sum()),
                     "var": summary(m)["var"],
                     "var_accuracy": by.get("var_accuracy", np.nan),
                     "var_f1": by.get("var_f1", np.nan),
                     "con": np.nan if micro is None else float(micro.con),
                     "ccon": np.nan if micro is None else float(micro.ccon)})
    columns = ["task", "model", "n_train", "metric", "runs", "var", "var_accuracy", "var_f1",
               "con", "ccon"]
    return pd.DataFrame(rows, columns=columns).sort_values("n_train", kind="stable") \
        .reset_index(drop=True)


#: what Bui's Figs. 2 and 4 relate to training size (VAR of the task's own metric, of accuracy
#: and of F1; CON; CCON)
TRAINING_SIZE_QUANTITIES = ("var", "var_accuracy", "var_f1", "con", "ccon")


def training_size_correlation(table: pd.DataFrame) -> pd.DataFrame:
    """The coefficients of Bui et al.'s Figs. 2 and 4: per model family, Pearson and Spearman
    correlation of log10(training size) with VAR, CON and CCON over its cubes. A cube whose
    quantity is undefined (CON of a regression task; VAR of fewer than two runs) is left out
    of that quantity's coefficients, and ``cubes`` says how many were used: NaN with fewer than
    three, or a constant column. One row per (model, quantity)."""
    rows = []
    for model, group in table.groupby("model", sort=True):
        for quantity in [q for q in TRAINING_SIZE_QUANTITIES if q in group]:
            used = group[group[quantity].notna()]
            size = np.log10(used["n_train"].to_numpy(dtype=np.float64))
            values = used[quantity].to_numpy(dtype=np.float64)
            cells = np.column_stack([size, values])
            enough = len(used) >= 3 and np.ptp(size) > 0 and np.ptp(values) > 0
            rows.append({"model": model, "quantity": quantity, "cubes": len(used),
                         "pearson": float(_correlation(cells, "pearson")[0, 1]) if enough
                         else float("nan"),
                         "spearman": float(_correlation(cells, "spearman")[0, 1]) if enough
                         else float("nan")})
    return pd.DataFrame(rows, columns=["model", "quantity", "cubes", "pearson", "spearman"])


def zeta(metrics: dict[str, xr.DataArray], coupled: dict[str, bool]) -> xr.DataArray:
    """Bui et al.'s Fig. 3: normalised ζ of each seed on each task, (task, seed).

    A seed's score on a task is its run's metric (a coupled grid: run k is the cell (k, k)) or,
    in a WI × DO grid, the mean over the DO seeds of its WI seed. ζ rescales the scores of a
    task to [0, 1]: (score − the task's worst) / (best − worst), so 1 is the task's best seed
    and 0 its worst (NaN where a task's seeds all score alike). On the seeds all tasks share.
    """
    scores = []
    for task, m in metrics.items():
        m = m.drop_vars("step", errors="ignore")
        if coupled[task]:
            diagonal = np.intersect1d(m["seed_wi"].values, m["seed_do"].values)
            s = xr.DataArray(np.diagonal(m.sel(seed_wi=diagonal, seed_do=diagonal).values),
                             dims="seed", coords={"seed": diagonal})
        else:
            s = m.mean("seed_do").rename(seed_wi="seed")
        scores.append(s)
    table = xr.concat(scores, dim="task", join="inner").assign_coords(task=list(metrics))
    low, high = table.min("seed"), table.max("seed")
    span = (high - low).where(high > low)
    return ((table - low) / span).rename("zeta")


def seeds_across_tasks(metrics: dict[str, xr.DataArray]) -> xr.Dataset:
    """Dodge et al. §4.3: are good weight initialisations good on every task?

    ``metrics``: task name → (seed_wi, seed_do) metric. On the WI seeds all tasks share, each
    seed's ``mean`` over its DO seeds, its ``rank`` within the task (1 = best; ties share the
    average rank), its ``mean_rank`` over tasks, and the Spearman ``correlation`` of the WI means
    between every two tasks.
    """
    means = xr.concat([m.mean("seed_do").drop_vars("step", errors="ignore")
                       for m in metrics.values()], dim="task", join="inner")
    # a task without any score (every run failed) is left out, not every seed with it; then
    # the seeds scored on every task left
    means = means.assign_coords(task=list(metrics)).dropna("task", how="all") \
        .dropna("seed_wi", how="any")
    metrics = {t: metrics[t] for t in means["task"].values}
    ranks = means.copy(data=scipy.stats.rankdata(-means.values, axis=1))
    corr = xr.DataArray(_correlation(means.values.T, "spearman"), dims=("task", "task_other"),
                        coords={"task": list(metrics), "task_other": list(metrics)})
    return xr.Dataset({"mean": means, "rank": ranks, "mean_rank": ranks.mean("task"),
                       "correlation": corr})
