"""Bui et al.'s tables across runs: the training-size coefficients per model family (Figs. 2
and 4), normalised ζ (Fig. 3), and accuracy with F1 in the macro view, against scipy and loops."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr

from seedgrid import analysis
from seedgrid.report import write

from test_compare import _cube


def test_training_size_coefficients_per_family_against_scipy():
    rng = np.random.default_rng(0)
    rows = [{"task": f"t{i}", "model": model, "n_train": n, "metric": "accuracy", "runs": 10,
             "var": rng.random(), "con": rng.random(), "ccon": rng.random()}
            for model in ("llama", "roberta") for i, n in enumerate((100, 2_500, 8_000, 400_000))]
    rows += [{"task": "a", "model": "solo", "n_train": 10, "metric": "accuracy", "runs": 3,
              "var": 0.1, "con": 0.5, "ccon": 0.4},
             {"task": "b", "model": "solo", "n_train": 20, "metric": "accuracy", "runs": 3,
              "var": 0.2, "con": 0.6, "ccon": 0.3}]
    table = pd.DataFrame(rows)
    got = analysis.training_size_correlation(table).set_index(["model", "quantity"])
    for model in ("llama", "roberta"):
        group = table[table.model == model]
        for q in ("var", "con", "ccon"):
            x = np.log10(group.n_train.to_numpy(float))
            assert got.loc[(model, q), "pearson"] == pytest.approx(
                scipy.stats.pearsonr(x, group[q]).statistic)
            assert got.loc[(model, q), "spearman"] == pytest.approx(
                scipy.stats.spearmanr(x, group[q]).statistic)
            assert got.loc[(model, q), "cubes"] == 4
    assert got.loc[("solo", "var")].isna()[["pearson", "spearman"]].all()  # two cubes: n/a


def test_an_undefined_cube_is_left_out_of_the_coefficients_not_poisoning_them():
    """Bui's study as shipped: STS-B (regression: CON, CCON undefined) among the llama runs."""
    rng = np.random.default_rng(1)
    rows = [{"task": f"t{i}", "model": "llama", "n_train": n, "metric": "accuracy", "runs": 10,
             "var": rng.random(), "con": rng.random(), "ccon": rng.random()}
            for i, n in enumerate((100, 2_500, 8_000, 400_000))]
    rows.append({"task": "stsb", "model": "llama", "n_train": 5_749, "metric": "pearson",
                 "runs": 10, "var": rng.random(), "con": np.nan, "ccon": np.nan})
    table = pd.DataFrame(rows)
    got = analysis.training_size_correlation(table).set_index(["model", "quantity"])
    defined = table[table.task != "stsb"]
    for q, used in (("var", table), ("con", defined), ("ccon", defined)):
        x = np.log10(used.n_train.to_numpy(float))
        assert got.loc[("llama", q), "pearson"] == pytest.approx(
            scipy.stats.pearsonr(x, used[q]).statistic)
        assert got.loc[("llama", q), "spearman"] == pytest.approx(
            scipy.stats.spearmanr(x, used[q]).statistic)
        assert got.loc[("llama", q), "cubes"] == len(used)


def test_a_run_without_scores_is_left_out_of_the_seeds_across_tasks():
    wi, do = [1, 2, 3, 4], [1, 2]
    rng = np.random.default_rng(2)
    a = _metric(rng.random((4, 2)), wi, do)
    b = _metric(rng.random((4, 2)), wi, do)
    failed = _metric(np.full((4, 2), np.nan), wi, do)  # every run of it failed
    got = analysis.seeds_across_tasks({"a": a, "b": b, "failed": failed})
    assert list(got["task"].values) == ["a", "b"] and list(got["seed_wi"].values) == wi
    means = np.stack([a.mean("seed_do").values, b.mean("seed_do").values])
    np.testing.assert_allclose(got["mean"].values, means)
    assert float(got["correlation"].sel(task="a", task_other="b")) == pytest.approx(
        scipy.stats.spearmanr(means[0], means[1]).statistic)


def _metric(values, wi, do):
    return xr.DataArray(np.asarray(values, float), dims=("seed_wi", "seed_do"),
                        coords={"seed_wi": wi, "seed_do": do}, name="accuracy")


def test_zeta_against_a_loop_for_coupled_and_crossed_grids():
    rng = np.random.default_rng(1)
    coupled = _metric(np.where(np.eye(4), rng.random((4, 4)), np.nan), [1, 2, 3, 4], [1, 2, 3, 4])
    crossed = _metric(rng.random((4, 3)), [1, 2, 3, 4], [7, 8, 9])
    flat = _metric(np.where(np.eye(4), 0.5, np.nan), [1, 2, 3, 4], [1, 2, 3, 4])
    z = analysis.zeta({"rte": coupled, "cola": crossed, "flat": flat},
                      {"rte": True, "cola": False, "flat": True})
    assert z.dims == ("task", "seed") and z["seed"].values.tolist() == [1, 2, 3, 4]
    for task, scores in (("rte", [coupled.sel(seed_wi=k, seed_do=k).item() for k in range(1, 5)]),
                         ("cola", [crossed.sel(seed_wi=k).mean().item() for k in range(1, 5)])):
        lo, hi = min(scores), max(scores)
        for k, s in zip(range(1, 5), scores):
            assert z.sel(task=task, seed=k).item() == pytest.approx((s - lo) / (hi - lo))
    assert z.sel(task="rte").max() == 1 and z.sel(task="rte").min() == 0
    assert z.sel(task="flat").isnull().all()  # every seed alike: ζ undefined


def test_the_report_gives_accuracy_and_f1_and_fig3_across_runs(tmp_path):
    runs = [_cube(tmp_path / name, rate, seed=i) for i, (name, rate) in
            enumerate((("small", 0.6), ("medium", 0.7), ("large", 0.8)))]
    out, report = write(runs, tmp_path / "report", samples=50)
    assert json.loads((out / "report.json").read_text()) == report
    small = report["runs"]["small"]["macro"]["by_metric"]
    assert set(small) == {"accuracy", "f1"}
    assert small["accuracy"]["mean"] == pytest.approx(report["runs"]["small"]["macro"]["end"]["mean"])
    z = report["across"]["zeta"]
    assert z["seeds"] == [1, 2, 3, 4] and set(z["values"]) == {"small", "medium", "large"}
    assert all(0 <= v <= 1 for vs in z["values"].values() for v in vs if v is not None)
    assert (out / "bui_fig3_zeta.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "Normalised ζ (Bui Fig. 3)" in text and "f1 at the end" in text


def test_a_training_size_sweep_is_one_run_folder_per_size_reported_together(tmp_path):
    from conftest import run_cli, tiny_raw, write_toml

    config = write_toml(tmp_path / "sweep.toml", tiny_raw(grid={"n_wi": 2, "n_do": 1}))
    out = tmp_path / "sweep"
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--train-sizes",
                     "16,40", "--parallel", "2", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    folders = [out / "n16", out / "n40"]
    assert f"report them together: python -m seedgrid report {folders[0]} {folders[1]}" \
        in result.stdout
    from seedgrid.rundir import load_run_config

    hashes = set()
    for folder, size in zip(folders, (16, 40)):
        cfg = load_run_config(folder)
        assert cfg.task.train_size == size and len(list((folder / "shards").glob("*.nc"))) == 2
        hashes.add(cfg.hash)
        assert run_cli("collect", str(folder)).returncode == 0
    assert len(hashes) == 2  # each size is its own config
    written, _ = write(folders, tmp_path / "report", figures_too=False, samples=20)
    sizes = json.loads((written / "report.json").read_text())["across"]["by_training_size"]
    assert [s["n_train"] for s in sizes] == [16, 40]
    again = run_cli("submit", "--config", str(config), "--out", str(out), "--train-sizes",
                    "16,40")
    assert again.returncode == 0 and again.stdout.count("nothing to submit") == 2
    bad = run_cli("submit", "--config", str(config), "--train-sizes", "16,16")
    assert bad.returncode == 2 and "must be distinct positive sizes" in bad.stderr


def test_training_size_is_a_figure_per_model_a_line_per_task_and_zeta_says_what_it_left_out(
        tmp_path):
    """Bui draws Fig. 2 for RoBERTa-large and Fig. 4 for Llama: a figure per model found, each
    line one task of that model over its training sizes; a model of neither (a Dodge grid's
    BERT) is drawn apart and said to be neither. ζ is over the seeds every run has: the others
    are listed by run."""
    import netCDF4

    from seedgrid import figures

    runs = []
    for i, (model, task, n_train, n_wi) in enumerate([
            ("roberta-large", "rte", 100, 4), ("roberta-large", "rte", 1000, 4),
            ("roberta-large", "cola", 100, 4), ("meta-llama/Llama-3.2-3B", "rte", 100, 4),
            ("meta-llama/Llama-3.2-3B", "rte", 1000, 4), ("bert-large-uncased", "rte", 100, 6)]):
        path = _cube(tmp_path / f"run{i}", 0.7, seed=i, task="mr", n_wi=n_wi)
        with netCDF4.Dataset(path / "cube.nc", "a") as nc:
            nc.setncatts({"model": model, "task": task, "n_train": n_train})
        runs.append(path)
    drawn = {}
    real = figures._save

    def keep(fig, where):
        drawn[where.name] = fig
        return real(fig, where)

    figures._save = keep
    try:
        out, report = write(runs, tmp_path / "report", samples=20)
    finally:
        figures._save = real
    expected = {"bui_training_size_roberta-large.png": (["cola", "rte"], "Fig. 2 (RoBERTa)"),
                "bui_training_size_meta-llama_Llama-3.2-3B.png": (["rte"], "Fig. 4 (Llama)"),
                "bui_training_size_bert-large-uncased.png": (["rte"], "not a model of Bui")}
    for name, (tasks, title) in expected.items():
        fig = drawn[name]
        assert title in fig._suptitle.get_text()
        for ax in fig.axes:
            assert [line.get_label() for line in ax.get_lines()] == tasks
    text = (out / "report.md").read_text()
    assert all(f"]({name})" in text for name in expected)
    left = report["across"]["zeta"]["left_out"]
    assert left["run5"] == [5, 6] and all(not left[f"run{i}"] for i in range(5))
    assert "left out: run5: seeds 5, 6" in text
