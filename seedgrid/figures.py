"""The papers' figures as PNG files (matplotlib, no display needed).

Figures are matplotlib ``Figure`` objects, never pyplot's: drawing them changes no global state
(no backend switch, no open figures) in a notebook that imports seedgrid.

Each function draws one figure from analysis results (labelled arrays or tables) and writes it
to ``path``; numbering follows Dodge et al. 2020 (Fig. 1–9) and Bui et al. 2025.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr
from matplotlib.figure import Figure

from seedgrid.store import SEEDS, atomic_path

REGIME_LABELS = {"every": "every evaluation", "epoch_ends": "end of each epoch",
                 "end": "end of training"}


def _subplots(*grid: int, figsize: tuple[float, float]):
    """A figure and its axes, as ``pyplot.subplots`` but outside pyplot (nothing global)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save(fig, path: Path) -> Path:
    """Write atomically: a reader never sees half a PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return Path(path)


def grid_heatmap(final: xr.DataArray, path: Path) -> Path:
    """Fig. 2: one cell per run, rows and columns sorted by their means (best WI on top, best
    DO on the right)."""
    order_wi = final["seed_wi"].values[np.argsort(-final.mean("seed_do").values, kind="stable")]
    order_do = final["seed_do"].values[np.argsort(final.mean("seed_wi").values, kind="stable")]
    grid = final.sel(seed_wi=order_wi, seed_do=order_do)
    fig, ax = _subplots(figsize=(max(4.5, 1.5 + 0.25 * len(order_do)),
                                    max(3.5, 1.2 + 0.25 * len(order_wi))))
    image = ax.imshow(grid.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(order_do)), order_do, fontsize=7)
    ax.set_yticks(range(len(order_wi)), order_wi, fontsize=7)
    ax.set_xlabel("data-order seed (sorted by mean)")
    ax.set_ylabel("weight-init seed (sorted by mean)")
    fig.colorbar(image, ax=ax, label=final.name)
    return _save(fig, path)


def _density(ax, values, **style):
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) >= 2 and np.ptp(values) > 0:
        x = np.linspace(values.min() - np.ptp(values) * 0.2, values.max() + np.ptp(values) * 0.2,
                        200)
        ax.plot(x, scipy.stats.gaussian_kde(values)(x), **style)
    else:  # a KDE needs spread: mark the values instead
        for v in values:
            ax.axvline(v, **style)


def best_worst_density(final: xr.DataArray, anova: dict, path: Path) -> Path:
    """Fig. 3: density of the runs of the best and worst WI seeds (solid) and DO seeds
    (dashed)."""
    fig, ax = _subplots(figsize=(5, 3.2))
    for kind, line in (("seed_wi", "-"), ("seed_do", "--")):
        for which, colour in (("best", "tab:blue"), ("worst", "tab:red")):
            seed = anova[kind][which]
            if seed is None:  # no finished run: nothing to draw
                continue
            _density(ax, final.sel({kind: seed}).values, linestyle=line, color=colour,
                     label=f"{which} {kind.removeprefix('seed_').upper()} ({seed})")
    ax.set_xlabel(str(final.name))
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return _save(fig, path)


def training_curves(metric: xr.DataArray, epoch, path: Path, n: int = 20, seed: int = 0) -> Path:
    """Fig. 4: the curves of ``n`` randomly chosen runs (seeded) against epochs."""
    cells = metric.stack(run=SEEDS).transpose("run", "step")
    cells = cells.isel(run=np.flatnonzero(cells.notnull().any("step").values))
    pick = np.random.default_rng(seed).permutation(cells.sizes["run"])[:n]
    fig, ax = _subplots(figsize=(5, 3.2))
    ax.plot(np.asarray(epoch), cells.values[np.sort(pick)].T, linewidth=0.8, alpha=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(str(metric.name))
    ax.set_title(f"{len(pick)} runs", fontsize=9)
    return _save(fig, path)


def correlation_heatmap(corr: xr.DataArray, epoch, path: Path, title: str) -> Path:
    """Fig. 5 (Spearman) and Fig. 9 (Pearson): correlation between evaluations, axes in
    epochs."""
    epoch = np.asarray(epoch)
    fig, ax = _subplots(figsize=(4.2, 3.6))
    image = ax.imshow(corr.values, origin="lower", vmin=-1, vmax=1, cmap="RdBu_r",
                      extent=(epoch[0], epoch[-1], epoch[0], epoch[-1]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("epoch")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def expected_max_curves(curves: xr.Dataset, metric_name: str, path: Path) -> Path:
    """Fig. 1: expected best of n runs ± one standard deviation, shaded between the observed
    minimum and maximum (``curves["lower"]``, ``["upper"]``), per evaluation regime."""
    fig, ax = _subplots(figsize=(5, 3.2))
    n = curves["n"].values
    for regime in curves["regime"].values:
        one = curves.sel(regime=regime)
        ax.plot(n, one["mean"], label=REGIME_LABELS.get(str(regime), str(regime)))
        ax.fill_between(n, one["lower"], one["upper"], alpha=0.2)
    ax.set_xlabel("runs trained (budget)")
    ax.set_ylabel(f"expected best {metric_name}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def early_stopping_choices(best: pd.DataFrame, path: Path) -> Path:
    """Fig. 6: per budget, the best configuration: started, continued, fraction trained."""
    fig, ax = _subplots(figsize=(5, 3.2))
    ax.plot(best.budget, best.started, "o-", label="started")
    ax.plot(best.budget, best.continued, "s-", label="continued")
    ax.set_xlabel("budget (full runs)")
    ax.set_ylabel("runs")
    twin = ax.twinx()
    twin.plot(best.budget, best.fraction, "^:", color="tab:green", label="fraction before stop")
    twin.set_ylabel("fraction trained before stopping")
    twin.set_ylim(0, 1.05)
    fig.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def early_stopping_gain(best: pd.DataFrame, path: Path) -> Path:
    """Fig. 7: relative error reduction of the best configuration over no stopping."""
    fig, ax = _subplots(figsize=(5, 3.2))
    ax.bar(best.budget, best.relative_error_reduction)
    ax.set_xlabel("budget (full runs)")
    ax.set_ylabel("relative error reduction")
    return _save(fig, path)


def std_distribution(final: xr.DataArray, path: Path) -> Path:
    """Fig. 8: density of the per-seed standard deviations (WI: over DO seeds; DO: over WI
    seeds), and the overall standard deviation (red, dashed)."""
    fig, ax = _subplots(figsize=(5, 3.2))
    _density(ax, final.std("seed_do").values, color="tab:blue", label="fixed WI")
    _density(ax, final.std("seed_wi").values, color="tab:orange", label="fixed DO")
    ax.axvline(float(final.std()), color="red", linestyle="--", label="overall")
    ax.set_xlabel(f"standard deviation of {final.name}")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return _save(fig, path)


def agreement_heatmap(agreement: xr.DataArray, accuracy: np.ndarray, path: Path) -> Path:
    """Consistency: the fraction of equal predictions between every two runs, runs sorted by
    accuracy (Bui et al.'s micro view)."""
    order = np.argsort(accuracy, kind="stable")
    fig, ax = _subplots(figsize=(4.6, 3.8))
    image = ax.imshow(agreement.values[np.ix_(order, order)], vmin=0, vmax=1, cmap="magma")
    ax.set_xlabel("run (sorted by accuracy)")
    ax.set_ylabel("run (sorted by accuracy)")
    fig.colorbar(image, ax=ax, label="agreement")
    return _save(fig, path)


def zeta_heatmap(zeta: pd.DataFrame, path: Path) -> Path:
    """Bui et al.'s Fig. 3: normalised ζ, tasks (rows) × seeds (columns), darker = better."""
    fig, ax = _subplots(figsize=(max(4.5, 1.5 + 0.4 * zeta.shape[1]),
                                    max(2.5, 1.0 + 0.35 * zeta.shape[0])))
    image = ax.imshow(zeta.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(zeta.shape[1]), zeta.columns, fontsize=7)
    ax.set_yticks(range(zeta.shape[0]), zeta.index, fontsize=7)
    ax.set_xlabel("seed")
    fig.colorbar(image, ax=ax, label="normalised ζ")
    return _save(fig, path)


def by_training_size(table: pd.DataFrame, path: Path) -> Path:
    """Bui et al.'s Fig. 2: VAR (of each task's own metric, of accuracy, of F1), CON and CCON of
    several cubes against training-set size."""
    fig, (left, right) = _subplots(1, 2, figsize=(8, 3.2))
    for name, label, style in (("var", "task's metric", "o-"), ("var_accuracy", "accuracy", "s--"),
                               ("var_f1", "F1", "^:")):
        if name in table and table[name].notna().any():
            left.plot(table.n_train, table[name], style, label=label)
    left.set_ylabel("VAR over runs")
    left.legend(fontsize=7)
    for name in ("con", "ccon"):
        right.plot(table.n_train, table[name], "o-", label=name.upper())
    right.set_ylabel("fraction of examples")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("training examples")
    return _save(fig, path)
