"""``ds.seedgrid``: the building blocks of analysis on a cube, vectorised over seeds and steps.

    ds = seedgrid.open_cube("runs/rte")
    ds.seedgrid.metric()          # (seed_wi, seed_do, step): the task's metric
    ds.seedgrid.best_so_far()     # best metric up to each evaluation (Dodge et al.)
    ds.seedgrid.diverged()        # (seed_wi, seed_do): diverged or collapsed to the majority
    ds.seedgrid.consistency()     # Bui et al.'s CON, CCON, agreement, flip rate
    ds.seedgrid.expected_max()    # ... and every analysis of seedgrid.analysis as a method

Registered when this module is imported (``import seedgrid`` and ``open_cube`` do).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import xarray as xr

from seedgrid import metrics
from seedgrid.errors import UsageError
from seedgrid.store import SEEDS, decode


@xr.register_dataset_accessor("seedgrid")
class SeedgridAccessor:
    """``ds.seedgrid``: predictions, correctness and the task's metric over a whole cube.

    Everything is computed on whole arrays with labelled dimensions; cells or evaluations
    without logits (missing, diverged) give NaN, never a made-up value.
    """

    def __init__(self, ds: xr.Dataset):
        self._ds = ds
        # A Dataset can be changed in place (ds["label"] = ..., ds["logits"][...] = ...), and
        # no cheap key sees every such change: results are computed afresh on every call,
        # except inside frozen(), where the caller promises the cube stays as it is
        self._cache: dict | None = None

    @contextlib.contextmanager
    def frozen(self):
        """Within the block, each result (predictions, the metric, best so far...) is computed
        once and handed to every analysis that needs it — one pass over the logits for a whole
        report. The cube must not change inside the block; after it, results are fresh again.

            with ds.seedgrid.frozen():
                report = seedgrid.report.analyse(ds)
        """
        outer = self._cache is not None  # (nested: the outermost block owns the cache)
        if not outer:
            self._cache = {}
        try:
            yield self
        finally:
            if not outer:
                self._cache = None

    def _cached(self, key, compute, small: bool = False):
        """``compute()``, remembered inside :meth:`frozen`. On a dask cube only what is
        ``small`` (no example or no step dimension) is remembered, computed: each is one pass
        over the logits, and a whole report a few of them; the rest stays lazy."""
        lazy = self._ds.logits.chunks is not None
        if self._cache is None or (lazy and not small):
            return compute()
        if key not in self._cache:
            value = compute()
            self._cache[key] = value.compute() if lazy else value
        return self._cache[key]

    def status(self) -> xr.DataArray:
        """Each cell's status by name (``"done"``...), also where the file was opened without
        :func:`seedgrid.open_cube` (schema 2 stores byte flags)."""
        return decode(self._ds[["status"]])["status"]

    @property
    def regression(self) -> bool:
        """A regression cube: one output per example (``class`` of length 1), real labels."""
        return self._ds.sizes["class"] == 1

    def majority_label(self) -> int:
        """The most frequent gold label of the validation set (the smallest on ties)."""
        self._classification_only("a majority label")
        return metrics.majority_label(self._ds.label.values)

    def _classification_only(self, what: str) -> None:
        if self.regression:
            raise UsageError(f"{what} is undefined for task {self._ds.attrs['task']!r}, a "
                             "regression task (one real output per example, no classes)")

    def majority_baseline(self, name: str | None = None) -> float:
        """The metric of always predicting the majority label, from this cube's own labels
        (Dodge et al.'s Table 2 baselines, computed for the validation set actually used)."""
        name = name or self._ds.attrs["metric"]
        return metrics.majority_baseline(self._ds.label.values, name,
                                         metrics.questions_for(name, self._ds["example"].values))

    def predictions(self, step: int | None = None) -> xr.DataArray:
        """Predicted class, (seed_wi, seed_do, example, step); NaN where there are no logits.
        For a regression task, the output itself. ``step``: at that evaluation (position) only.

        A diverged cell is a failed classifier, not a missing one: its evaluations after it
        diverged (NaN logits) predict the majority label (regression: the mean gold score, a
        constant), so it stays in every statistic with the score a collapsed model gets (Dodge
        et al.'s diverged runs).
        """
        if step is not None:  # small (one evaluation): kept in frozen() even on a dask cube
            return self._cached(("predictions", step),
                                lambda: self.predictions().isel(step=step), small=True)
        what = "predicted output" if self.regression else "predicted class"
        return self._cached("predictions", lambda: _named(
            _predictions(self._ds, self.status()), "prediction", what, units=""))

    def correct(self, step: int | None = None) -> xr.DataArray:
        """1.0 where the prediction equals the gold label, 0.0 where not, NaN where missing;
        ``step``: at that evaluation (position) only."""
        self._classification_only("correct()")
        pred = self.predictions(step)
        return _named((pred == self._ds.label).astype(np.float64).where(pred.notnull()),
                      "correct", "1 where the prediction is the gold label, 0 where not")

    def metric(self, name: str | None = None) -> xr.DataArray:
        """The task's metric (or ``name``), (seed_wi, seed_do, step)."""
        name = name or self._ds.attrs["metric"]
        metrics.check_metric(name, self.regression, option="metric")
        asked = metrics.questions_for(name, self._ds["example"].values)
        return self._cached(("metric", name), small=True, compute=lambda: _named(xr.apply_ufunc(
            metrics.score_predictions, self.predictions(), self._ds.label,
            input_core_dims=[["example"], ["example"]], kwargs={"metric": name, "asked": asked},
            dask="parallelized", output_dtypes=[np.float64],
            dask_gufunc_kwargs={"allow_rechunk": True}), name,
            f"{name} of each run at each evaluation ({self._ds.attrs.get('task', '')})"))

    def consistency(self, step: int = -1, over: str | tuple[str, ...] = SEEDS
                    ) -> xr.Dataset:
        """Bui et al.'s micro metrics at evaluation ``step`` (position; default the last): see
        :func:`seedgrid.analysis.consistency`."""
        from seedgrid.analysis import consistency

        self._classification_only("consistency (CON, CCON, agreement)")
        return consistency(self.predictions(step), self._ds.label, over)

    def diverged(self, threshold: float | None = None) -> xr.DataArray:
        """Per cell: 1.0 if it diverged, 0.0 if not, NaN if it has no final evaluation.

        Diverged means marked so in training (a NaN or exploding loss), or a final metric at or
        below ``threshold`` — by default the majority baseline of this cube's validation
        labels (:meth:`majority_baseline`), the level Dodge et al.'s
        diverged runs fall to (predicting the most frequent label).
        """
        threshold = self.majority_baseline() if threshold is None else threshold
        final = self.metric().isel(step=-1)
        flag = (final <= threshold).astype(np.float64).where(final.notnull())
        return _named(flag.where(self.status() != "diverged", 1.0).drop_vars("step"), "diverged",
                      "1 where the run diverged (or ends at the majority baseline)")

    def table(self, name: str | None = None) -> pd.DataFrame:
        """One row per (seed_wi, seed_do, step): update, epoch, metric, best so far, status."""
        m = self.metric(name)
        frame = xr.Dataset({m.name: m, f"best_{m.name}": self.best_so_far(name),
                            "status": self.status(), "wall_time_s": self._ds.wall_time_s,
                            "epoch": self._ds.epoch})
        table = frame.to_dataframe().reset_index()
        table.insert(2, "update", table.pop("step"))  # the step coordinate holds update counts
        return table[["seed_wi", "seed_do", "update", "epoch", m.name, f"best_{m.name}",
                      "status", "wall_time_s"]]

    def best_so_far(self, name: str | None = None) -> xr.DataArray:
        """Best metric over the evaluations during training up to each step (Dodge et al.).

        The evaluation before training (update 0) is not a trained model and never counts: the
        best so far is NaN there. NaN evaluations are skipped.
        """
        m = self.metric(name)
        t = m.transpose(..., "step")
        during = np.where(t["step"].values > 0, t.values, np.nan)
        return _named(t.copy(data=np.fmax.accumulate(during, axis=-1)).transpose(*m.dims),
                      m.name, f"best {m.name} so far in training")

    # -- analyses (seedgrid.analysis, seedgrid.early_stopping) on this cube ------------------

    def final(self, name: str | None = None, best: bool = False) -> xr.DataArray:
        """(seed_wi, seed_do): the metric at the last evaluation, or the best found in training."""
        m = self.best_so_far(name) if best else self.metric(name)
        return _named(m.isel(step=-1, drop=True), m.name,
                      f"best {m.name} found in training" if best else
                      f"{m.name} at the last evaluation")

    def regimes(self, name: str | None = None) -> xr.DataArray:
        """(regime, seed_wi, seed_do): each run's pick when evaluating at every evaluation, at
        epoch ends or at the end; see :func:`seedgrid.analysis.regimes`."""
        from seedgrid.analysis import regimes

        picks = regimes(self.metric(name), self._ds.epoch)
        return _named(picks, picks.name, f"each run's best {picks.name} when evaluating at "
                      "every evaluation, at epoch ends, or at the end")

    def expected_max(self, name: str | None = None, replace: bool = True) -> xr.Dataset:
        """Expected best of n runs (n = 1..N) with its std, per evaluation regime (Fig. 1), the
        observed extremes, and the band the figure shades: mean ± std clipped to the observed
        minimum and maximum (Dodge et al.'s footnote 5; allentune clips at the maximum)."""
        from seedgrid.analysis import expected_max

        picks = self.regimes(name)
        out = [expected_max(picks.sel(regime=r).values, replace=replace)
               for r in picks["regime"].values]
        n = min(len(mean) for mean, _ in out)
        curves = xr.Dataset({"mean": (("regime", "n"), np.stack([m[:n] for m, _ in out])),
                             "std": (("regime", "n"), np.stack([s[:n] for _, s in out])),
                             "observed_min": picks.min(SEEDS),
                             "observed_max": picks.max(SEEDS)},
                            coords={"regime": picks["regime"].values, "n": np.arange(1, n + 1)})
        curves["lower"] = np.maximum(curves["mean"] - curves["std"], curves["observed_min"])
        curves["upper"] = np.minimum(curves["mean"] + curves["std"], curves["observed_max"])
        return curves

    def decoupled_std(self, name: str | None = None, best: bool = False) -> pd.Series:
        """Table 3 on the final (or best-found) metric, by ``wi``, ``do`` and ``total``;
        :func:`seedgrid.analysis.decoupled_std`."""
        from seedgrid.analysis import decoupled_std

        return pd.Series(decoupled_std(self.final(name, best)), name="std")

    def anova(self, name: str | None = None, best: bool = False) -> pd.DataFrame:
        """Table 4, a column per seed kind (``seed_wi``, ``seed_do``);
        :func:`seedgrid.analysis.best_vs_worst_anova`."""
        from seedgrid.analysis import best_vs_worst_anova

        return pd.DataFrame(best_vs_worst_anova(self.final(name, best)), dtype=object)

    def permutation_test(self, name: str | None = None, best: bool = False,
                         n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
        """Row / column-mean range test, a column per seed kind;
        :func:`seedgrid.analysis.seed_permutation_test`."""
        from seedgrid.analysis import seed_permutation_test

        return pd.DataFrame(seed_permutation_test(self.final(name, best), n_resamples, seed),
                            dtype=object)

    def step_correlation(self, name: str | None = None, method: str = "spearman",
                         best: bool = True) -> xr.DataArray:
        """Fig. 5 (Spearman) / Fig. 9 (Pearson) between evaluations during training, on the
        best so far as the paper does (``best=False``: the metric at each evaluation)."""
        from seedgrid.analysis import step_correlation

        m = self.best_so_far(name) if best else self.metric(name)
        return step_correlation(m.sel(step=m["step"] > 0), method)

    def run_pairs(self, step: int = -1, tolerance: float = 0.0, top: int = 10):
        """Bui Fig. 1: equal-accuracy pairs of runs that agree least; see
        :func:`seedgrid.analysis.run_pairs`."""
        from seedgrid.analysis import run_pairs

        self._classification_only("run_pairs (agreement of runs)")
        return run_pairs(self.predictions(step), self._ds.label, tolerance, top)

    def early_stopping(self, name: str | None = None, **kwargs):
        """Dodge §5's simulation on this cube; :func:`seedgrid.early_stopping.simulate`."""
        from seedgrid.early_stopping import simulate

        return simulate(self.metric(name), **kwargs)


def _named(array: xr.DataArray, name, long_name: str, units: str = "1") -> xr.DataArray:
    """``array`` called ``name``, with its own attributes only (xarray keeps the first input's —
    the logits' — through apply_ufunc): what a ``.plot()`` labels its axis with."""
    array = array.rename(name)
    array.attrs = {"long_name": long_name, **({"units": units} if units else {})}
    return array


def _predictions(ds: xr.Dataset, status: xr.DataArray) -> xr.DataArray:
    """:meth:`SeedgridAccessor.predictions`: the one full pass over the logits, one function
    per chunk (its temporaries freed before the next: a cube larger than memory fits)."""
    collapsed = float(ds.label.mean()) if ds.sizes["class"] == 1 else \
        float(metrics.majority_label(ds.label.values))
    return xr.apply_ufunc(
        _predict, ds.logits, status == "diverged", input_core_dims=[["class"], []],
        kwargs={"collapsed": collapsed}, dask="parallelized",
        output_dtypes=[np.float64]).rename("prediction")


def _predict(logits: np.ndarray, diverged: np.ndarray, collapsed: float) -> np.ndarray:
    """metrics.predict, with a diverged cell's missing evaluations (NaN logits) predicting
    ``collapsed`` (the majority label; regression: the mean gold score)."""
    pred = metrics.predict(logits)
    pred[np.isnan(pred) & diverged] = collapsed
    return pred
