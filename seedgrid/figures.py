"""The papers' figures (matplotlib, no display needed): for a notebook, and as the report's PNGs.

Each function draws one figure from analysis results (labelled arrays or tables) and returns it,
a matplotlib ``Figure`` (a notebook shows it); with ``path`` it also writes it there as PNG, and
with ``ax`` it draws on the axes of a figure of yours (those of one panel). Figures are never
pyplot's: drawing them changes no global state (no backend switch, no open figures) in a notebook
that imports seedgrid. Numbering follows Dodge et al. 2020 (Fig. 1–9) and Bui et al. 2025.

    fig = seedgrid.figures.grid_heatmap(ds.seedgrid.final())          # shown in a notebook
    seedgrid.figures.grid_heatmap(ds.seedgrid.final(), "grid.png")    # written
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from seedgrid.files import atomic_path
from seedgrid.store import SEEDS

REGIME_LABELS = {"every": "every evaluation", "epoch_ends": "end of each epoch",
                 "end": "end of training"}
# Okabe & Ito's palette, readable by colour-blind readers; lines also differ by marker and style
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000",
           "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLES = ("-", "--", ":", "-.")
MOST_TICK_LABELS = 25  # more seeds or runs than this on an axis: every k-th is labelled


def _subplots(*grid: int, figsize: tuple[float, float], ax=None):
    """A figure and its axes, as ``pyplot.subplots`` but outside pyplot (nothing global); or,
    given ``ax`` (one axes of a figure of the caller's: a notebook's), that one and its figure."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def run_label(seed_wi, seed_do) -> str:
    """How a figure names a run: by its seeds."""
    return f"wi={seed_wi} do={seed_do}"


def _style(k: int) -> dict:
    """The k-th line's look: colour, marker and line style all differ between neighbours, so
    lines that coincide stay visible and 32 lines are told apart."""
    return {"color": PALETTE[k % len(PALETTE)], "marker": MARKERS[k % len(MARKERS)],
            "linestyle": STYLES[(k // len(PALETTE)) % len(STYLES)]}


def _counting(axis) -> None:
    """An axis that counts (runs, budget, evaluations): whole-number ticks only."""
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _labelled_ticks(set_ticks, labels) -> str:
    """One tick per position, labelled; beyond MOST_TICK_LABELS every k-th, so labels stay
    readable on a 25 × 25 grid (625 runs). Returns what to add to the axis label."""
    every = max(1, -(-len(labels) // MOST_TICK_LABELS))
    at = list(range(0, len(labels), every))
    set_ticks(at, [str(labels[i]) for i in at], fontsize=7)
    return "" if every == 1 else f"; every {_ordinal(every)} named"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _legend_beside(ax, handles=None, labels=None):
    """The legend right of the axes, inside the figure, never over the data."""
    args = () if handles is None else (handles, labels)
    entries = len(handles if handles is not None else ax.get_legend_handles_labels()[0])
    return ax.legend(*args, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1),
                     borderaxespad=0, ncols=max(1, -(-entries // 10)))  # at most 10 a column


def _save(fig: Figure, path: str | Path | None) -> Figure:
    """The figure, written to ``path`` as PNG if one is given — atomically: a reader never sees
    half a PNG."""
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return fig


def grid_heatmap(final: xr.DataArray, path: str | Path | None = None, ax=None) -> Figure:
    """Fig. 2: one cell per run, rows and columns sorted by their means (best WI on top, best
    DO on the right)."""
    order_wi = final["seed_wi"].values[np.argsort(-final.mean("seed_do").values, kind="stable")]
    order_do = final["seed_do"].values[np.argsort(final.mean("seed_wi").values, kind="stable")]
    grid = final.sel(seed_wi=order_wi, seed_do=order_do)
    fig, ax = _subplots(figsize=(max(4.5, 1.5 + 0.25 * len(order_do)),
                                    max(3.5, 1.2 + 0.25 * len(order_wi))), ax=ax)
    image = ax.imshow(grid.values, cmap="viridis", aspect="auto")
    ax.set_xlabel(f"data-order seed (sorted by mean{_labelled_ticks(ax.set_xticks, order_do)})")
    ax.set_ylabel(f"weight-init seed (sorted by mean{_labelled_ticks(ax.set_yticks, order_wi)})")
    fig.colorbar(image, ax=ax, label=final.name)
    return _save(fig, path)


def _density(ax, values, nonnegative: bool = False, **style):
    """A kernel density of ``values``; ``nonnegative`` (a standard deviation): reflected at 0,
    so none of it lies below. Values without spread (one, or all equal) are one vertical line,
    its legend entry saying so."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) >= 2 and np.ptp(values) > 0:
        spread = np.ptp(values) * 0.2
        lo = max(0.0, values.min() - spread) if nonnegative else values.min() - spread
        x = np.linspace(lo, values.max() + spread, 200)
        kde = scipy.stats.gaussian_kde(values)
        ax.plot(x, kde(x) + (kde(-x) if nonnegative else 0), **style)
    elif len(values):  # a KDE needs spread: mark the value, once
        label = style.pop("label", None)
        ax.axvline(values[0], **style, label=None if label is None else
                   f"{label}: {'every run' if len(values) > 1 else 'one run'} at "
                   f"{values[0]:.4g}")


def best_worst_density(final: xr.DataArray, anova: dict, path: str | Path | None = None,
                       ax=None) -> Figure:
    """Fig. 3: density of the runs of the best and worst WI seeds (solid) and DO seeds
    (dashed). Where the best and worst seed are one seed, or score the same mean, the seeds tie:
    one curve, and the legend says so."""
    fig, ax = _subplots(figsize=(5, 3.2), ax=ax)
    for kind, line in (("seed_wi", "-"), ("seed_do", "--")):
        name = kind.removeprefix("seed_").upper()
        best, worst = anova[kind]["best"], anova[kind]["worst"]
        if best is None:  # no finished run: nothing to draw
            continue
        means = final.mean(SEEDS[1] if kind == "seed_wi" else SEEDS[0])
        if best == worst or float(means.sel({kind: best})) == float(means.sel({kind: worst})):
            tie = f"best = worst {name} ({best})" if best == worst else \
                f"best {name} ({best}) = worst ({worst})"
            _density(ax, final.sel({kind: best}).values, linestyle=line, color=PALETTE[2],
                     label=f"{tie}: the {name} seeds tie")
            continue
        for which, seed, colour in (("best", best, PALETTE[0]), ("worst", worst, PALETTE[1])):
            _density(ax, final.sel({kind: seed}).values, linestyle=line, color=colour,
                     label=f"{which} {name} ({seed})")
    ax.set_xlabel(str(final.name))
    ax.set_ylabel("density")
    _legend_beside(ax)
    return _save(fig, path)


def training_curves(metric: xr.DataArray, epoch, path: str | Path | None = None, ax=None,
                    n: int = 20, seed: int = 0) -> Figure:
    """Fig. 4: the curves of ``n`` randomly chosen runs (seeded) against epochs, from the
    evaluation before training; each run named by its seeds."""
    cells = metric.stack(run=SEEDS).transpose("run", "step")
    cells = cells.isel(run=np.flatnonzero(cells.notnull().any("step").values))
    pick = np.sort(np.random.default_rng(seed).permutation(cells.sizes["run"])[:n])
    fig, ax = _subplots(figsize=(5.5, 3.2), ax=ax)
    epoch = np.asarray(epoch)
    every = max(1, len(epoch) // 10)  # markers on at most ~10 evaluations a curve
    for k, i in enumerate(pick):
        run = cells.isel(run=i)
        ax.plot(epoch, run.values, linewidth=0.9, markersize=3, markevery=every, **_style(k),
                label=run_label(int(run.seed_wi), int(run.seed_do)))
    ax.set_xlabel("epoch (0: before training)")
    ax.set_ylabel(str(metric.name))
    ax.set_title(f"{len(pick)} of {cells.sizes['run']} runs", fontsize=9)
    if len(pick):
        _legend_beside(ax).set_title("run", prop={"size": 7})
    return _save(fig, path)


def correlation_heatmap(corr: xr.DataArray, epoch, path: str | Path | None = None,
                        title: str = "Spearman", ax=None) -> Figure:
    """Fig. 5 (Spearman) and Fig. 9 (Pearson): correlation between evaluations, axes in
    epochs."""
    epoch = np.asarray(epoch)
    fig, ax = _subplots(figsize=(4.2, 3.6), ax=ax)
    image = ax.imshow(corr.values, origin="lower", vmin=-1, vmax=1, cmap="RdBu_r",
                      extent=(epoch[0], epoch[-1], epoch[0], epoch[-1]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("epoch")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def expected_max_curves(curves: xr.Dataset, metric_name: str, path: str | Path | None = None,
                        ax=None) -> Figure:
    """Fig. 1: expected best of n runs ± one standard deviation, shaded between the observed
    minimum and maximum (``curves["lower"]``, ``["upper"]``), per evaluation regime. Regimes
    whose curves coincide (the best came at the last evaluation) are said in the legend."""
    fig, ax = _subplots(figsize=(5.5, 3.2), ax=ax)
    n = curves["n"].values
    every = max(1, len(n) // 12)
    drawn: list[tuple[str, np.ndarray]] = []
    for k, regime in enumerate(curves["regime"].values):
        one = curves.sel(regime=regime)
        label = REGIME_LABELS.get(str(regime), str(regime))
        same = [other for other, mean in drawn if np.allclose(mean, one["mean"].values,
                                                              equal_nan=True)]
        drawn.append((label, one["mean"].values))
        if same:
            label += f" (= {same[0]})"
        style = _style(k)
        # later regimes: larger, hollow markers, so one drawn over another stays visible
        ax.plot(n, one["mean"], markevery=every, markersize=4 + 2.5 * k,
                markerfacecolor="none" if k else style["color"], label=label, **style)
        ax.fill_between(n, one["lower"], one["upper"], alpha=0.15, color=style["color"])
    ax.set_xlabel("runs trained (budget)")
    ax.set_ylabel(f"expected best {metric_name}")
    _counting(ax.xaxis)
    _legend_beside(ax)
    return _save(fig, path)


def early_stopping_choices(best: pd.DataFrame, path: str | Path | None = None, ax=None) -> Figure:
    """Fig. 6: per budget, the best configuration: started, continued, fraction trained."""
    fig, ax = _subplots(figsize=(5.5, 3.2), ax=ax)
    ax.plot(best.budget, best.started, label="started", markersize=4, **_style(0))
    ax.plot(best.budget, best.continued, label="continued", markersize=4, **_style(1))
    ax.set_xlabel("budget (full runs)")
    ax.set_ylabel("runs")
    _counting(ax.xaxis)
    _counting(ax.yaxis)
    twin = ax.twinx()
    twin.plot(best.budget, best.fraction, label="fraction before stop", markersize=4,
              **_style(2))
    twin.set_ylabel("fraction trained before stopping")
    twin.set_ylim(0, 1.05)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    twin.legend(handles + more, labels + more_labels, fontsize=7, loc="upper left",
                bbox_to_anchor=(1.18, 1), borderaxespad=0)  # beside the twin axis' labels
    return _save(fig, path)


def early_stopping_gain(best: pd.DataFrame, path: str | Path | None = None, ax=None) -> Figure:
    """Fig. 7: relative error reduction of the best configuration over no stopping."""
    fig, ax = _subplots(figsize=(5, 3.2), ax=ax)
    ax.bar(best.budget, best.relative_error_reduction, color=PALETTE[0])
    ax.set_xlabel("budget (full runs)")
    ax.set_ylabel("relative error reduction")
    _counting(ax.xaxis)
    return _save(fig, path)


def std_distribution(final: xr.DataArray, path: str | Path | None = None, ax=None) -> Figure:
    """Fig. 8: density of the per-seed standard deviations (WI: over DO seeds; DO: over WI
    seeds; reflected at 0: a deviation is never negative), and the overall standard deviation
    (dashed)."""
    fig, ax = _subplots(figsize=(5.5, 3.2), ax=ax)
    _density(ax, final.std("seed_do").values, nonnegative=True, color=PALETTE[0],
             label="fixed WI")
    _density(ax, final.std("seed_wi").values, nonnegative=True, color=PALETTE[3],
             linestyle="-.", label="fixed DO")
    ax.axvline(float(final.std()), color=PALETTE[1], linestyle="--", label="overall")
    ax.set_xlabel(f"standard deviation of {final.name}")
    ax.set_ylabel("density")
    _legend_beside(ax)
    return _save(fig, path)


def agreement_heatmap(agreement: xr.DataArray, accuracy: np.ndarray,
                      path: str | Path | None = None, ax=None) -> Figure:
    """Consistency: the fraction of equal predictions between every two runs, runs sorted by
    accuracy (Bui et al.'s micro view), each labelled by its seeds."""
    order = np.argsort(accuracy, kind="stable")
    runs = [run_label(wi, do) for wi, do in zip(agreement["seed_wi"].values[order],
                                                agreement["seed_do"].values[order])]
    side = max(4.6, 2.0 + 0.16 * min(len(runs), MOST_TICK_LABELS))
    fig, ax = _subplots(figsize=(side + 0.8, side), ax=ax)
    image = ax.imshow(agreement.values[np.ix_(order, order)], vmin=0, vmax=1, cmap="magma")
    _labelled_ticks(ax.set_xticks, runs)
    ax.tick_params(axis="x", labelrotation=90)
    label = f"run (sorted by accuracy{_labelled_ticks(ax.set_yticks, runs)})"
    ax.set_xlabel(label)
    ax.set_ylabel(label)
    fig.colorbar(image, ax=ax, label="agreement")
    return _save(fig, path)


def zeta_heatmap(zeta: pd.DataFrame, path: str | Path | None = None, ax=None) -> Figure:
    """Bui et al.'s Fig. 3: normalised ζ, tasks (rows) × seeds (columns), darker = better."""
    fig, ax = _subplots(figsize=(max(4.5, 1.5 + 0.4 * zeta.shape[1]),
                                    max(2.5, 1.0 + 0.35 * zeta.shape[0])), ax=ax)
    image = ax.imshow(zeta.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    _labelled_ticks(ax.set_yticks, list(zeta.index))
    ax.set_xlabel(f"seed{_labelled_ticks(ax.set_xticks, list(zeta.columns))}")
    fig.colorbar(image, ax=ax, label="normalised ζ")
    return _save(fig, path)


def by_training_size(table: pd.DataFrame, path: str | Path | None = None,
                     title: str = "") -> Figure:
    """Bui et al.'s Fig. 2 (RoBERTa-large) and Fig. 4 (Llama): for the cubes of one model, VAR of
    each task's own metric, CON and CCON against training-set size, one line per task (its
    cubes in order of size)."""
    fig, axes = _subplots(1, 3, figsize=(11, 3.2))
    panels = (("var", "VAR over runs (task's metric)"), ("con", "CON"), ("ccon", "CCON"))
    for ax, (name, label) in zip(axes, panels):
        for k, (task, rows) in enumerate(table.groupby("task", sort=True)):
            rows = rows.sort_values("n_train")
            if rows[name].notna().any():
                ax.plot(rows.n_train, rows[name], label=task, **_style(k))
        ax.set_xscale("log")
        ax.set_xlabel("training examples")
        ax.set_ylabel(label)
    _legend_beside(axes[-1])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.45)
    return _save(fig, path)
