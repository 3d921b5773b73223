"""A regression task (GLUE STS-B): one real output per example, Pearson/Spearman against scipy,
CON/CCON undefined (null, never a number), and a cell end to end: shard, cube, report, compare,
regress."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from seedgrid import compare, metrics
from seedgrid.config import TaskConfig
from seedgrid.errors import UsageError
from seedgrid.splits import load_splits
from seedgrid.tasks import TASKS

from conftest import run_cli, tiny_raw, train_twice, write_toml


def _stsb_frame(n, rng):
    """Rows in the hub's STS-B columns: sentence1, sentence2, a float label in [0, 5], idx."""
    words = np.array(["red", "blue", "cat", "dog", "runs", "sleeps", "big", "small"])
    first = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    # the score follows word overlap, so that a model can learn something
    second = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    overlap = [len(set(a.split()) & set(b.split())) for a, b in zip(first, second)]
    return pd.DataFrame({"sentence1": first, "sentence2": second,
                         "label": np.round(np.array(overlap) * 5 / 3, 2),
                         "idx": 100 + np.arange(n)})


def test_pearson_and_spearman_against_scipy_with_ties_constants_and_missing_runs():
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(0, 5, 30), 1)
    labels[:6] = 2.5  # ties in the gold scores
    pred = rng.normal(size=(5, 30))
    pred[1] = np.round(pred[1])  # ties in the outputs
    pred[2] = 0.7  # a constant output: 0 by convention (scipy says nan)
    pred[3] = labels * 2 + 1  # perfect
    for p in pred:
        constant = np.ptp(p) == 0
        want_r = 0.0 if constant else scipy.stats.pearsonr(p, labels).statistic
        want_rho = 0.0 if constant else scipy.stats.spearmanr(p, labels).statistic
        assert metrics.pearson(p, labels) == pytest.approx(want_r, abs=1e-12)
        assert metrics.spearman(p, labels) == pytest.approx(want_rho, abs=1e-12)
    np.testing.assert_allclose(metrics.pearson(pred.reshape(5, 1, 30), labels)[:, 0],
                               [metrics.pearson(p, labels) for p in pred])
    with_missing = pred.copy()
    with_missing[4, 3] = np.nan  # a run without an evaluation: NaN, never a number
    got = metrics.score_predictions(with_missing, labels, "spearman")
    assert np.isnan(got[4]) and np.isfinite(got[:4]).all()
    assert metrics.majority_baseline(labels, "pearson") == 0.0
    # logits of a regression cube: one output per example, taken as it is
    assert metrics.score(pred[..., None], labels, "pearson") == pytest.approx(
        metrics.pearson(pred, labels))


def test_the_bootstrap_of_a_correlation_resamples_examples_as_a_loop_would():
    rng = np.random.default_rng(1)
    labels = np.round(rng.uniform(0, 5, 12), 0)  # many ties
    a, b = rng.normal(size=(4, 12)), rng.normal(size=(4, 12)) + labels
    draws = 7
    w_ex = rng.multinomial(12, np.full(12, 1 / 12), size=draws).astype(float)
    w_run = rng.multinomial(4, np.full(4, 1 / 4), size=draws).astype(float)
    for metric, fn in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr)):
        got = compare.bootstrap(a, b, labels, metric, paired=True, n_boot=draws,
                                draws=(w_ex, w_run, w_run))
        diffs = []
        for d in range(draws):
            idx = np.repeat(np.arange(12), w_ex[d].astype(int))
            per_run = {side: np.array([0.0 if np.ptp(x[idx]) == 0 else fn(x[idx], labels[idx])
                                       .statistic for x in runs])
                       for side, runs in (("a", a), ("b", b))}
            diffs.append(np.average(per_run["b"], weights=w_run[d])
                         - np.average(per_run["a"], weights=w_run[d]))
        lo, hi = np.quantile(diffs, [0.025, 0.975])
        assert got["ci"] == pytest.approx([lo, hi], abs=1e-12), metric
        assert got["difference"] == pytest.approx(
            np.mean([fn(x, labels).statistic for x in b])
            - np.mean([fn(x, labels).statistic for x in a]), abs=1e-12)


def test_stsb_local_files_keep_real_scores_and_refuse_labels_that_are_not_numbers(tmp_path):
    rng = np.random.default_rng(2)
    files = {}
    for split, n in (("train", 10), ("validation", 8)):
        files[split] = str(tmp_path / f"{split}.tsv")
        _stsb_frame(n, rng).to_csv(files[split], sep="\t", index=False)
    train, val = load_splits(TaskConfig(name="stsb", data_files=files))
    expected = pd.read_csv(files["validation"], sep="\t")
    assert val.labels.dtype == np.float64 and TASKS["stsb"].regression
    np.testing.assert_array_equal(val.labels, expected["label"])
    np.testing.assert_array_equal(val.ids, expected["idx"])
    for bad, message in (({"label": "high"}, "are not numbers"),
                         ({"label": np.nan}, "is not a finite number")):
        frame = _stsb_frame(6, rng).assign(**{k: [v] * 6 for k, v in bad.items()})
        frame.to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(UsageError, match=message):
            load_splits(TaskConfig(name="stsb", data_files={"train": str(tmp_path / "bad.csv"),
                                                            "validation": files["validation"]}))


def test_a_regression_grid_trains_collects_reports_compares_and_gates(tmp_path):
    import seedgrid

    rng = np.random.default_rng(3)
    files = {}
    for split, n in (("train", 32), ("validation", 20)):
        files[split] = str(tmp_path / f"stsb-{split}.csv")
        _stsb_frame(n, rng).to_csv(files[split], index=False)
    config = write_toml(tmp_path / "stsb.toml", tiny_raw(
        task={"name": "stsb", "data_files": files, "train_size": 0, "validation_size": 0}))
    train_twice(tmp_path, config)
    ds = seedgrid.open_cube(tmp_path / "a")
    assert ds.sizes["class"] == 1 and ds.label.dtype == np.float64
    assert ds.attrs["metric"] == "pearson" and ds.seedgrid.regression
    assert (ds.status == "done").all()
    final = ds.seedgrid.final()
    for wi in (1, 2):
        for do in (1, 2):
            out = ds.logits.sel(seed_wi=wi, seed_do=do).isel(step=-1, **{"class": 0}).values
            assert final.sel(seed_wi=wi, seed_do=do) == pytest.approx(
                scipy.stats.pearsonr(out, ds.label.values).statistic, abs=1e-6)
    with pytest.raises(UsageError, match="regression task"):
        ds.seedgrid.consistency()
    with pytest.raises(UsageError, match="'accuracy' is not a metric of a regression task"):
        ds.seedgrid.metric("accuracy")

    report = run_cli("report", str(tmp_path / "a"), "--no-figures", "--samples", "50")
    assert report.returncode == 0, report.stderr
    assert "CON, CCON: n/a (a regression task" in report.stdout
    written = json.loads((tmp_path / "a/report/report.json").read_text())
    run = next(iter(written["runs"].values()))
    assert run["micro"] is None and set(run["macro"]["by_metric"]) == {"pearson", "spearman"}
    spearman = ds.seedgrid.final("spearman").values.ravel()
    assert run["macro"]["by_metric"]["spearman"]["mean"] == pytest.approx(spearman.mean())
    assert "CON, CCON and agreement: n/a" in (tmp_path / "a/report/report.md").read_text()
    both = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--samples", "50",
                   "--out", str(tmp_path / "both"))  # with figures, Bui's Fig. 3 on Pearson
    assert both.returncode == 0, both.stderr
    zeta = json.loads((tmp_path / "both/report.json").read_text())["across"]["zeta"]
    assert set(zeta["values"]) == {"a", "b"} and (tmp_path / "both/bui_fig3_zeta.png").exists()
    bui = subprocess.run([sys.executable, "-m", "seedgrid.papers.bui2025", str(tmp_path / "a")],
                         capture_output=True, text=True, timeout=300)
    assert bui.returncode == 0, bui.stderr
    assert f"pearson {final.mean().item():.4f}" in bui.stdout and "n/a (a regression" in bui.stdout

    compared = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", "-",
                       "--boot", "200")
    assert compared.returncode in (0, 1), compared.stderr
    result = json.loads(compared.stdout)
    assert result["churn"] is None and result["metric"] == "pearson"
    assert result["difference"] == pytest.approx(0.0, abs=1e-12)  # the same cells, twice
    gate = run_cli("regress", "--baseline", str(tmp_path / "a"), "--candidate",
                   str(tmp_path / "b"), "--history", str(tmp_path / "h/history.jsonl"))
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "CON: n/a" in gate.stdout
    night = json.loads((tmp_path / "h/history.jsonl").read_text())
    assert night["con_candidate"] is None and night["less_consistent"] is False

    for args in (["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "accuracy"],
                 ["export", str(tmp_path / "a"), "--to", str(tmp_path / "t.csv"), "--metric",
                  "f1"]):
        refused = run_cli(*args)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "is not a metric of a regression task" in refused.stderr
        assert "pearson, spearman" in refused.stderr
    assert not (tmp_path / "t.csv").exists()
