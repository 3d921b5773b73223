"""The report's figures read as figures, at every grid size: each is drawn from a real report of
a 1 × 2, a 2 × 2 and a 25 × 25 grid, and read back through matplotlib (ticks, labels, lines,
legends), not by eye."""

import numpy as np
import pytest
from matplotlib.colors import to_hex

import seedgrid
from seedgrid import figures, report
from seedgrid.cube import collect
from seedgrid.rundir import shard_path, write_config
from seedgrid.store import cell_dataset, write_atomic

from conftest import tiny_config

STEPS = np.array([0, 5, 10, 15])
SEEDS_DIMS = ("seed_wi", "seed_do")
EXAMPLES = 30


def _grid(run, n_wi, n_do, improving=False):
    """A collected run of n_wi × n_do cells with random logits; ``improving``: every run gets
    better at each evaluation (its best is its last, so the three regimes of Fig. 1 coincide)."""
    cfg = tiny_config(grid={"n_wi": n_wi, "n_do": n_do})
    write_config(run, cfg)
    rng = np.random.default_rng(n_wi * 100 + n_do)
    labels = np.arange(EXAMPLES) % 2
    for wi in range(1, n_wi + 1):
        for do in range(1, n_do + 1):
            logits = rng.normal(size=(len(STEPS), EXAMPLES, 2))
            if improving:
                logits[..., 0] += np.arange(len(STEPS))[:, None] * (1 - 2 * labels) * 2.0
            write_atomic(cell_dataset(
                seed_wi=wi, seed_do=do, logits=logits, labels=labels,
                example_ids=np.arange(EXAMPLES), steps=STEPS, epochs=STEPS / 5.0,
                train_loss=rng.random(15), status="done", wall_time_s=1.0,
                attrs={"task": "mr", "metric": "accuracy", "model": "tiny",
                       "majority_baseline": 0.5, "config_hash": cfg.hash, "n_train": 40,
                       "config": cfg.to_toml(), "host": "h"}), shard_path(run, wi, do))
    collect(run)
    return run


@pytest.fixture
def drawn(monkeypatch):
    """Every figure a report draws, by file name (each is still written as a PNG)."""
    figs = {}
    save = figures._save

    def keep(fig, path):
        figs[path.stem] = fig
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def _visible(ticks, lo_hi):
    lo, hi = sorted(lo_hi)
    return [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]


def _counts(axis):
    """The axis' visible ticks are whole numbers, and there is at least one."""
    ticks = _visible(axis.get_majorticklocs(), axis.get_view_interval())
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def _legend_clear_of_data(fig, ax, legend):
    """The legend lies inside the figure and outside every axes' data area."""
    fig.canvas.draw()
    box, figure_box = legend.get_window_extent(), fig.bbox
    for other in fig.axes:
        area = other.get_window_extent()
        assert box.x0 >= area.x1 or box.x1 <= area.x0 or box.y0 >= area.y1 or \
            box.y1 <= area.y0, "legend over the data"
    assert box.x0 >= figure_box.x0 - 1 and box.y0 >= figure_box.y0 - 1


def _labels(ticks):
    return [t.get_text() for t in ticks if t.get_text()]


def _lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


@pytest.mark.parametrize("shape", [(1, 2), (2, 2), (25, 25)], ids=["1x2", "2x2", "25x25"])
def test_every_figure_reads_at_every_grid_size(tmp_path, drawn, shape):
    n_wi, n_do = shape
    run = _grid(tmp_path / "run", n_wi, n_do)
    report.write([run], samples=50)
    runs = n_wi * n_do
    palette = {to_hex(c) for c in figures.PALETTE}

    fig = drawn["fig1_expected_max"]  # budget counts runs; three regimes, each drawn and named
    (ax, *_) = fig.axes
    _counts(ax.xaxis)
    lines = _lines(ax)
    assert [line.get_label().split(" (=")[0] for line in lines] == list(
        figures.REGIME_LABELS.values())
    assert len({(line.get_color(), line.get_marker(), line.get_linestyle())
                for line in lines}) == 3
    assert {to_hex(line.get_color()) for line in lines} <= palette
    _legend_clear_of_data(fig, ax, ax.get_legend())

    ax = drawn["fig2_grid"].axes[0]  # seeds on the axes, never more than 25 labels
    for ticks, n in ((ax.get_xticklabels(), n_do), (ax.get_yticklabels(), n_wi)):
        labels = _labels(ticks)
        assert set(labels) <= {str(s) for s in range(1, n + 1)}
        assert len(labels) == min(n, -(-n // -(-n // 25)))
        assert len(labels) <= figures.MOST_TICK_LABELS

    fig = drawn["fig3_best_worst"]
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    if n_wi == 1:  # one WI seed: best and worst are the same seed, and the figure says so
        assert any(t.startswith("best = worst WI (1): the WI seeds tie") for t in legend)
    else:  # the seeds named are those of the best and worst mean, by a plain computation
        ds = seedgrid.open_cube(run)
        accuracy = (ds.logits.values[:, :, :, -1].argmax(-1) == ds.label.values).mean(-1)
        for name, means in (("WI", accuracy.mean(1)), ("DO", accuracy.mean(0))):
            best, worst = (int(text.split("(")[1].rstrip(")")) for text in legend
                           if text.split(" ")[1] == name)
            assert means[best - 1] == means.max() and means[worst - 1] == means.min()
    _legend_clear_of_data(fig, ax, ax.get_legend())

    fig = drawn["fig4_curves"]  # runs named by their seeds, drawn from the evaluation at 0
    ax = fig.axes[0]
    lines = _lines(ax)
    assert len(lines) == min(20, runs)
    names = [line.get_label() for line in lines]
    assert len(set(names)) == len(names)
    assert all(name.startswith("wi=") and " do=" in name for name in names)
    assert all(line.get_xdata()[0] == 0 for line in lines)
    assert len({(line.get_color(), line.get_marker(), line.get_linestyle())
                for line in lines}) == len(lines)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    _legend_clear_of_data(fig, ax, ax.get_legend())

    ax = drawn["consistency"].axes[0]  # runs labelled by their seeds, thinned to 25
    labels = _labels(ax.get_xticklabels())
    assert labels == _labels(ax.get_yticklabels())
    assert all(label.startswith("wi=") for label in labels)
    assert len(labels) == min(runs, figures.MOST_TICK_LABELS)
    assert ax.get_xlabel() == "run (sorted by accuracy" + (
        "; every 25th named)" if runs > 25 else ")")

    for name in ("fig6_early_stopping", "fig7_early_stopping_gain"):
        _counts(drawn[name].axes[0].xaxis)  # budgets
    _counts(drawn["fig6_early_stopping"].axes[0].yaxis)  # runs
    fig = drawn["fig6_early_stopping"]
    _legend_clear_of_data(fig, fig.axes[0], fig.axes[1].get_legend())
    fig = drawn["fig8_std"]
    _legend_clear_of_data(fig, fig.axes[0], fig.axes[0].get_legend())


def test_coinciding_regimes_are_said_and_stay_visible(tmp_path, drawn):
    run = _grid(tmp_path / "run", 2, 2, improving=True)  # every run's best is its last
    report.write([run], samples=50)
    ax = drawn["fig1_expected_max"].axes[0]
    lines = _lines(ax)
    assert np.allclose(lines[0].get_ydata(), lines[2].get_ydata())
    assert [line.get_label() for line in lines] == [
        "every evaluation", "end of each epoch (= every evaluation)",
        "end of training (= every evaluation)"]
    # drawn over each other, each still shows: larger, hollow markers on the later ones
    sizes = [line.get_markersize() for line in lines]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    assert [line.get_markerfacecolor() == "none" for line in lines] == [False, True, True]


def test_a_tie_between_different_seeds_is_said(tmp_path, drawn):
    run = _grid(tmp_path / "run", 2, 2, improving=True)  # every run ends at accuracy 1
    report.write([run], samples=50)
    legend = [t.get_text() for t in drawn["fig3_best_worst"].axes[0].get_legend().get_texts()]
    # every run scores the same: one line a seed kind, its legend entry once, saying so
    assert any(text.endswith("the WI seeds tie: every run at 1") for text in legend), legend
    assert any(text.endswith("the DO seeds tie: every run at 1") for text in legend), legend
    assert len(legend) == len(set(legend)) == 2
    assert len(drawn["fig3_best_worst"].axes[0].get_lines()) == 2


@pytest.mark.parametrize("seeds", [2, 25, 60])
def test_across_runs_figures_name_every_seed_and_keep_legends_off_the_data(tmp_path, drawn,
                                                                           seeds):
    import pandas as pd

    rng = np.random.default_rng(seeds)
    zeta = pd.DataFrame(rng.random((3, seeds)), index=["rte", "mrpc", "cola"],
                        columns=range(1, seeds + 1))
    figures.zeta_heatmap(zeta, tmp_path / "zeta.png")
    ax = drawn["zeta"].axes[0]
    labels = _labels(ax.get_xticklabels())
    every = -(-seeds // figures.MOST_TICK_LABELS)
    assert labels == [str(s) for s in range(1, seeds + 1, every)]
    assert _labels(ax.get_yticklabels()) == ["rte", "mrpc", "cola"]
    assert ax.get_xlabel() == "seed" + {1: "", 3: "; every 3rd named"}[every]
    table = pd.DataFrame({"task": ["rte", "cola", "rte", "cola", "rte"],
                          "n_train": [100, 100, 1000, 1000, 10000], "var": rng.random(5),
                          "con": rng.random(5), "ccon": rng.random(5)})
    figures.by_training_size(table, tmp_path / "sizes.png", "Bui et al.'s Fig. 2")
    fig = drawn["sizes"]
    for ax in fig.axes:  # VAR, CON, CCON: a line per task, its points in order of size
        assert [line.get_label() for line in _lines(ax)] == ["cola", "rte"]
        assert list(_lines(ax)[1].get_xdata()) == [100, 1000, 10000]
    _legend_clear_of_data(fig, fig.axes[-1], fig.axes[-1].get_legend())


def test_a_density_of_standard_deviations_lies_at_or_above_0():
    import xarray as xr

    # WI seed 1's runs all alike (a deviation of 0), the others spread: a plain KDE would put
    # density below 0
    final = xr.DataArray([[0.8, 0.8, 0.8], [0.7, 0.8, 0.9], [0.6, 0.75, 0.9]],
                         dims=SEEDS_DIMS, coords={"seed_wi": [1, 2, 3], "seed_do": [1, 2, 3]},
                         name="accuracy")
    fig = figures.std_distribution(final)
    curves = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) > 2]
    assert curves
    for line in curves:
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        assert x.min() >= 0 and y.min() >= 0, x.min()


def test_in_a_notebook_a_figure_is_returned_drawn_on_given_axes_and_saved_only_if_asked(
        tmp_path):
    from matplotlib.figure import Figure

    run = _grid(tmp_path / "run", 2, 2)
    ds = seedgrid.open_cube(run).load()
    final = ds.seedgrid.final()
    fig = figures.grid_heatmap(final)  # a notebook shows it
    assert isinstance(fig, Figure) and not list(tmp_path.glob("*.png"))
    mine = Figure(figsize=(8, 3))
    left, right = mine.subplots(1, 2)
    assert figures.grid_heatmap(final, ax=left) is mine  # one panel of the user's figure
    assert figures.std_distribution(final, ax=right) is mine
    assert left.images and right.get_lines()
    assert isinstance(figures.expected_max_curves(ds.seedgrid.expected_max(), final.name,
                                                  tmp_path / "fig1.png"), Figure)
    assert (tmp_path / "fig1.png").read_bytes().startswith(b"\x89PNG")
