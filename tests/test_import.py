"""Runs trained elsewhere: ``seedgrid import`` builds a cube from a long table of predictions.
A grid seedgrid trained, written out as such a table and imported back, gives the same report;
a table of predictions only is scored as scikit-learn scores it; every table that cannot be a
grid is one line, exit 2, nothing written."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.metrics import accuracy_score

from seedgrid.cube import collect

from conftest import run_cli
from test_cube import _run


def _long_table(cube: xr.Dataset) -> pd.DataFrame:
    """A cube as the long table another trainer would write: a row per run, example, step."""
    logits = cube.logits.to_dataframe().logits.unstack("class")
    logits.columns = [f"logit_{c}" for c in logits.columns]
    table = logits.reset_index()
    table["step"] = cube.step.values.astype(int)[pd.factorize(table["step"], sort=True)[0]]
    labels = cube.label.to_series()
    table["label"] = labels.loc[table["example"]].to_numpy()
    table["epoch"] = cube.epoch.to_series().loc[table["step"]].to_numpy()
    return table.dropna()


def test_a_grid_written_as_a_table_and_imported_reports_the_same(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    with xr.open_dataset(run / "cube.nc") as cube:
        table = _long_table(cube.load())
    table.to_csv(tmp_path / "predictions.csv", index=False)
    imported = run_cli("import", str(tmp_path / "predictions.csv"), "--out",
                       str(tmp_path / "elsewhere"), "--task", "mr")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"wrote {tmp_path / 'elsewhere/cube.nc'} (imported): 4 "
                                      "cells, 0 missing")
    for folder in (run, tmp_path / "elsewhere"):
        result = run_cli("report", str(folder), "--samples", "50", "--no-figures")
        assert result.returncode == 0, result.stderr
    ours, theirs = (json.loads((f / "report/report.json").read_text())["runs"]
                    for f in (run, tmp_path / "elsewhere"))
    ours, theirs = ours[run.name], theirs["elsewhere"]
    for key in ("macro", "micro", "regimes"):
        assert json.dumps(ours[key], sort_keys=True) == json.dumps(theirs[key], sort_keys=True)
    with xr.open_dataset(tmp_path / "elsewhere/cube.nc") as cube:
        assert "predictions.csv" in cube.attrs["imported"] and cube.sizes["update"] == 0
    compared = run_cli("compare", str(run), str(tmp_path / "elsewhere"))
    assert compared.returncode == 0, compared.stderr  # the same runs: nothing changed
    assert "paired over 4 shared cells" in compared.stdout
    gate = run_cli("regress", "--baseline", str(run), "--candidate", str(tmp_path / "elsewhere"),
                   "--history", str(tmp_path / "history.jsonl"))
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_predictions_only_and_one_seed_are_scored_as_sklearn_scores_them(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    rows = []
    for seed in (11, 12, 13):  # three runs of one seed each: seed_do constant
        for step in (100, 200):
            pred = np.where(rng.random(30) < 0.7, labels, rng.integers(0, 3, 30))
            rows += [{"seed_wi": seed, "seed_do": 0, "example": f"ex{i}", "step": step,
                      "label": labels[i], "prediction": pred[i]} for i in range(30)]
    table = pd.DataFrame(rows)
    table.to_parquet(tmp_path / "runs.parquet")
    done = run_cli("import", str(tmp_path / "runs.parquet"), "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    exported = run_cli("export", str(tmp_path / "r"), "--to", "-")
    got = pd.read_csv(pd.io.common.StringIO(exported.stdout))
    for (seed, step), group in table.groupby(["seed_wi", "step"]):
        row = got[(got.seed_wi == seed) & (got["update"] == step)]
        assert row.accuracy.item() == pytest.approx(accuracy_score(group.label,
                                                                   group.prediction))


def _table(**change):
    rows = [{"seed_wi": w, "seed_do": d, "example": e, "step": s, "label": e % 2,
             "logit_0": 0.1 * e, "logit_1": -0.1 * e}
            for w in (1, 2) for d in (1, 2) for e in range(4) for s in (0, 10)]
    frame = pd.DataFrame(rows)
    kind = change.get("kind")
    if kind == "repeated row":
        frame = pd.concat([frame, frame.iloc[[5]]])
    elif kind == "a run missing rows":
        frame = frame.drop(index=[3])
    elif kind == "two labels":
        frame.loc[0, "label"] = 1
    elif kind == "no label column":
        frame = frame.drop(columns="label")
    elif kind == "a seed that is not an integer":
        frame["seed_wi"] = frame["seed_wi"].astype(str) + "a"
    elif kind == "no outputs":
        frame = frame.drop(columns=["logit_0", "logit_1"])
    elif kind == "logits numbered with a gap":
        frame = frame.rename(columns={"logit_1": "logit_2"})
    elif kind == "a label that is no class":
        frame.loc[frame.example == 3, "label"] = 5
    return frame


@pytest.mark.parametrize("kind, message", [
    ("repeated row", "repeats run (seed_wi 1, seed_do 1), example 2, step 10"),
    ("a run missing rows", "has 7 of the 8 (example, step) rows"),
    ("two labels", "example 0 has two labels"),
    ("no label column", "has no column 'label'"),
    ("a seed that is not an integer", "column 'seed_wi'"),
    ("no outputs", "neither logit_0.. nor prediction"),
    ("logits numbered with a gap", "number them logit_0 .. logit_1"),
    ("a label that is no class", "label 5"),
])
def test_a_table_that_cannot_be_a_grid_is_one_line(tmp_path, kind, message):
    _table(kind=kind).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "r"
    result = run_cli("import", str(tmp_path / "t.csv"), "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert not (out / "cube.nc").exists()


def test_a_whole_run_absent_is_missing_as_in_a_trained_cube(tmp_path):
    frame = _table()
    frame = frame[~((frame.seed_wi == 2) & (frame.seed_do == 2))]
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    result = run_cli("import", str(tmp_path / "t.csv.gz"), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert "3 cells, 1 missing" in result.stdout
    with xr.open_dataset(tmp_path / "r/cube.nc") as cube:
        assert np.isnan(cube.logits.sel(seed_wi=2, seed_do=2)).all()
