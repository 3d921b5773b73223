"""collect → cube.nc → open_cube and the ds.seedgrid accessor, on real netCDF4 files.

Shards here carry random logits (no training needed to test the data path); every number is
checked against the shards themselves, scikit-learn, or a plain loop.
"""

import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import accuracy_score, matthews_corrcoef

import seedgrid
from seedgrid.cli import main
from seedgrid.cube import collect
from seedgrid.errors import UsageError
from seedgrid.rundir import shard_path, write_config
from seedgrid.store import SCHEMA_VERSION, cell_dataset, read_shard, write_atomic

from conftest import tiny_config

STEPS = np.array([0, 5, 10])


def _shard(cfg, wi, do, rng, status="done", metric=None):
    logits = rng.normal(size=(3, 30, 2))
    if status == "diverged":
        logits[2] = np.nan
    return cell_dataset(seed_wi=wi, seed_do=do, logits=logits, labels=np.arange(30) % 2,
                        example_ids=np.arange(100, 130), steps=STEPS, epochs=STEPS / 5.0,
                        train_loss=rng.random(10), status=status, wall_time_s=float(wi + do),
                        attrs={"task": "mr", "metric": metric or "accuracy", "model": "tiny",
                               "majority_baseline": 0.5, "config_hash": cfg.hash, "n_train": 40,
                               "config": cfg.to_toml(), "host": "h"})


def _run(tmp_path, cells, n=3, shard_args=None):
    cfg = tiny_config(grid={"n_wi": n, "n_do": n})
    run = tmp_path / "run"
    write_config(run, cfg)
    rng = np.random.default_rng(0)
    for wi, do in cells:
        write_atomic(_shard(cfg, wi, do, rng, **(shard_args or {}).get((wi, do), {})),
                     shard_path(run, wi, do))
    return run, cfg


def test_a_full_grid_collects_into_a_cube_equal_to_its_shards(tmp_path):
    run, cfg = _run(tmp_path, [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)])
    done = collect(run)
    assert done.counts["done"] == 9 and done.counts["missing"] == 0 and not done.damaged
    ds = seedgrid.open_cube(run)
    assert ds.logits.dims == ("seed_wi", "seed_do", "example", "step", "class")
    assert dict(ds.sizes) == {"seed_wi": 3, "seed_do": 3, "example": 30, "step": 3, "class": 2,
                              "update": 10}
    assert ds.attrs["schema_version"] == SCHEMA_VERSION and ds.attrs["config_hash"] == cfg.hash
    assert "host" not in ds.attrs  # per-cell facts are not cube facts
    for wi in (1, 2, 3):
        for do in (1, 2, 3):
            shard = read_shard(shard_path(run, wi, do))
            cell = ds.sel(seed_wi=wi, seed_do=do)
            np.testing.assert_array_equal(cell.logits, shard.logits.isel(seed_wi=0, seed_do=0))
            np.testing.assert_array_equal(cell.train_loss, shard.train_loss[0, 0])
            assert cell.status.item() == "done" and cell.wall_time_s.item() == wi + do
    np.testing.assert_array_equal(ds.example, np.arange(100, 130))
    np.testing.assert_array_equal(ds.step, STEPS)
    np.testing.assert_allclose(ds.epoch, STEPS / 5.0)


def test_a_partial_grid_keeps_missing_cells_as_nan(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (2, 3)], shard_args={(2, 3): {"status": "diverged"}})
    done = collect(run)
    assert done.counts == {"done": 1, "failed": 0, "diverged": 1, "stopped": 0, "missing": 7,
                           "unused": 0}
    ds = seedgrid.open_cube(run)
    assert ds.status.sel(seed_wi=3, seed_do=3).item() == "missing"
    assert ds.logits.sel(seed_wi=3, seed_do=3).isnull().all()
    assert ds.status.sel(seed_wi=2, seed_do=3).item() == "diverged"
    assert ds.logits.sel(seed_wi=2, seed_do=3).isel(step=2).isnull().all()  # the data: NaN
    metric = ds.seedgrid.metric()
    # a diverged run is a failed classifier, not a missing one: after it diverged it predicts
    # the majority label (labels 0/1 tied: 0) and scores what that scores
    labels = np.arange(30) % 2
    assert metric.sel(seed_wi=2, seed_do=3).isel(step=2).item() == pytest.approx(
        accuracy_score(labels, np.zeros(30)))
    assert int(metric.notnull().sum()) == 3 + 3
    assert ds.seedgrid.final().count() == 2  # it counts in the end-of-training statistics


def test_a_truncated_shard_is_reported_and_counted_missing(tmp_path, capsys):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 2)])
    bad = shard_path(run, 1, 2)
    bad.write_bytes(bad.read_bytes()[:500])  # a copy cut short
    main(["collect", str(run)])
    out = capsys.readouterr().out
    assert "done 2, missing 7" in out
    assert f"damaged (wi=1, do=2) {bad}: unreadable" in out
    assert f"rm {bad} && python -m seedgrid submit --resume {run}" in out
    ds = seedgrid.open_cube(run)
    assert ds.status.sel(seed_wi=1, seed_do=2).item() == "missing"


def test_a_shard_of_another_config_refuses_the_collect(tmp_path, capsys):
    run, _ = _run(tmp_path, [(1, 1)])
    other = tiny_config(train={"learning_rate": 0.5})
    write_atomic(_shard(other, 2, 2, np.random.default_rng(1)), shard_path(run, 2, 2))
    with pytest.raises(SystemExit) as exit_:
        main(["collect", str(run)])
    assert exit_.value.code == 2
    assert "wi2_do2.nc' is of config" in capsys.readouterr().err
    assert not (run / "cube.nc").exists()


def test_seeds_outside_the_config_grid_are_kept(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (7, 1)], n=2)
    collect(run)
    ds = seedgrid.open_cube(run)
    assert ds.seed_wi.values.tolist() == [1, 2, 7]
    assert ds.status.sel(seed_wi=7, seed_do=1).item() == "done"


def test_compression_round_trips_exactly(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (2, 2)])
    collect(run)
    plain = seedgrid.open_cube(run).load()
    collect(run, compress=True)
    packed = seedgrid.open_cube(run)
    assert packed.logits.encoding["zlib"]
    xr.testing.assert_identical(plain.drop_attrs(), packed.load().drop_attrs())


@pytest.mark.parametrize("metric, reference", [("accuracy", accuracy_score),
                                               ("mcc", matthews_corrcoef)])
def test_accessor_metric_and_best_so_far_against_a_loop(tmp_path, metric, reference):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1)], n=2)
    collect(run)
    ds = seedgrid.open_cube(run)
    got = ds.seedgrid.metric(metric)
    best = ds.seedgrid.best_so_far(metric)
    assert got.dims == ("seed_wi", "seed_do", "step")
    for wi in (1, 2):
        for do in (1, 2):
            logits = ds.logits.sel(seed_wi=wi, seed_do=do).values  # (example, step, class)
            running = -np.inf
            for s in range(3):
                if np.isnan(logits).all():
                    assert np.isnan(got.sel(seed_wi=wi, seed_do=do).values[s])
                    continue
                value = reference(ds.label.values, logits[:, s].argmax(-1))
                assert got.sel(seed_wi=wi, seed_do=do).values[s] == pytest.approx(value)
                if ds.step.values[s] == 0:  # before training: not a found model
                    assert np.isnan(best.sel(seed_wi=wi, seed_do=do).values[s])
                    continue
                running = max(running, value)
                assert best.sel(seed_wi=wi, seed_do=do).values[s] == pytest.approx(running)
    correct = ds.seedgrid.correct()
    np.testing.assert_allclose(correct.mean("example"), ds.seedgrid.metric("accuracy"))


def test_open_cube_refuses_what_is_not_a_cube(tmp_path):
    with pytest.raises(UsageError, match="no cube at"):
        seedgrid.open_cube(tmp_path)
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(UsageError, match="is not a readable netCDF4 file"):
        seedgrid.open_cube(tmp_path / "junk.nc")
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(tmp_path / "foreign.nc")
    with pytest.raises(UsageError, match="no schema_version attribute"):
        seedgrid.open_cube(tmp_path / "foreign.nc")
    run, _ = _run(tmp_path, [(1, 1)])
    collect(run)
    future = seedgrid.open_cube(run).load()
    future.attrs["schema_version"] = SCHEMA_VERSION + 1
    future.to_netcdf(tmp_path / "future.nc")
    with pytest.raises(UsageError, match=f"schema version {SCHEMA_VERSION + 1}, this seedgrid"):
        seedgrid.open_cube(tmp_path / "future.nc")


def test_collect_of_a_folder_without_shards_is_a_usage_error(tmp_path, capsys):
    run, _ = _run(tmp_path, [])
    with pytest.raises(SystemExit) as exit_:
        main(["collect", str(run)])
    assert exit_.value.code == 2 and "no shards in" in capsys.readouterr().err


def test_export_writes_one_row_per_cell_and_evaluation(tmp_path, capsys):
    import pandas as pd

    run, _ = _run(tmp_path, [(1, 1), (2, 2)], n=2)
    main(["collect", str(run)])
    summary = capsys.readouterr().out
    finals = [accuracy_score(np.arange(30) % 2,
                             read_shard(shard_path(run, s, s)).logits.values[0, 0, :, -1].argmax(-1))
              for s in (1, 2)]
    assert f"accuracy at the end: mean {np.mean(finals):.4f}, sample std {np.std(finals, ddof=1):.4f}" \
        in summary
    for name in ("t.csv", "t.parquet"):
        main(["export", str(run), "--to", str(tmp_path / name)])
        table = (pd.read_csv if name.endswith("csv") else pd.read_parquet)(tmp_path / name)
        assert list(table.columns) == ["seed_wi", "seed_do", "update", "epoch", "accuracy",
                                       "best_accuracy", "status", "wall_time_s"]
        assert len(table) == 2 * 2 * 3
        row = table[(table.seed_wi == 2) & (table.seed_do == 2) & (table["update"] == 5)].iloc[0]
        logits = read_shard(shard_path(run, 2, 2)).logits.values[0, 0, :, 1]
        assert row.accuracy == pytest.approx(accuracy_score(np.arange(30) % 2, logits.argmax(-1)))
        assert row.epoch == 1.0 and row.status == "done"
        missing = table[(table.seed_wi == 1) & (table.seed_do == 2)]
        assert set(missing.status) == {"missing"} and missing.accuracy.isna().all()
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--to", str(tmp_path / "t.xlsx")])
    assert exit_.value.code == 2
    main(["export", str(run), "--out", str(tmp_path / "same.csv")])  # --out, as elsewhere
    assert (tmp_path / "same.csv").read_text() == (tmp_path / "t.csv").read_text()


def test_divergence_flags_against_a_loop(tmp_path):
    cfg = tiny_config(grid={"n_wi": 2, "n_do": 2})
    run = tmp_path / "run"
    write_config(run, cfg)
    labels = np.arange(30) % 2  # balanced: always predicting one class scores 0.5
    rng = np.random.default_rng(3)
    good = np.stack([np.stack([labels == 0, labels == 1], -1) * 5.0] * 3)  # (step, example, class)
    collapsed = good.copy()
    collapsed[-1] = np.array([2.0, 0.0])  # the last evaluation predicts class 0 everywhere
    cells = {(1, 1): (good, "done"), (1, 2): (collapsed, "done"),
             (2, 1): (rng.normal(size=(3, 30, 2)), "diverged")}
    for (wi, do), (logits, status) in cells.items():
        ds = cell_dataset(seed_wi=wi, seed_do=do, logits=logits, labels=labels,
                          example_ids=np.arange(30), steps=STEPS, epochs=STEPS / 5.0,
                          train_loss=np.ones(10), status=status, wall_time_s=1.0,
                          attrs={"task": "mr", "metric": "accuracy", "model": "t",
                                 "majority_baseline": 0.5, "config_hash": cfg.hash, "n_train": 40,
                                 "config": cfg.to_toml()})
        write_atomic(ds, shard_path(run, wi, do))
    collect(run)
    flags = seedgrid.open_cube(run).seedgrid.diverged()
    assert flags.dims == ("seed_wi", "seed_do")
    expected = {}
    for (wi, do), (logits, status) in cells.items():  # the definition, written out
        final = accuracy_score(labels, logits[-1].argmax(-1))
        expected[wi, do] = 1.0 if status == "diverged" or final <= 0.5 else 0.0
    for (wi, do), value in expected.items():
        assert flags.sel(seed_wi=wi, seed_do=do).item() == value
    assert np.isnan(flags.sel(seed_wi=2, seed_do=2).item())  # missing: unknown, not "fine"
    assert expected == {(1, 1): 0.0, (1, 2): 1.0, (2, 1): 1.0}


def test_the_accessor_is_never_stale_after_the_cube_changes(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1)], n=2)
    collect(run)
    c = seedgrid.open_cube(run).load()
    before = float(c.seedgrid.final().mean())
    c["label"] = 1 - c["label"]  # every gold label flipped: accuracy becomes 1 - accuracy
    assert float(c.seedgrid.final().mean()) == pytest.approx(1 - before)
    c["logits"] = -c["logits"]  # every prediction flipped too: back to the first accuracy
    assert float(c.seedgrid.final().mean()) == pytest.approx(before)
    status = c.status.values.astype(object)  # (a fixed-width string array holds no longer word)
    status[0, 1] = "diverged"  # a diverged cell is scored by its failed evaluations
    c["status"] = (c.status.dims, status)
    c["logits"][0, 1, :, -1] = np.nan
    labels = c.label.values
    expected = accuracy_score(labels, np.full_like(labels, np.bincount(labels).argmax()))
    assert c.seedgrid.final().sel(seed_wi=1, seed_do=2).item() == pytest.approx(expected)


def test_a_cube_opens_with_dask_chunks_by_row_auto_or_cell_and_gives_the_same_numbers(tmp_path):
    run, _ = _run(tmp_path, [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)])
    collect(run)
    eager = seedgrid.open_cube(run)
    expected = eager.seedgrid.metric().values
    for chunks, logits_chunks in (("rows", ((1, 1, 1), (3,), (30,), (3,), (2,))),
                                  ("auto", ((3,), (3,), (30,), (3,), (2,))),
                                  ({}, ((1, 1, 1), (3,), (30,), (3,), (2,)))):  # on disk: rows
        ds = seedgrid.open_cube(run, chunks=chunks)
        assert ds.logits.chunks == logits_chunks, chunks
        np.testing.assert_array_equal(ds.seedgrid.metric().values, expected)
        assert ds.seedgrid.status().values.tolist() == eager.seedgrid.status().values.tolist()
    with pytest.raises(UsageError, match="chunks='cells': give 'rows', 'auto'"):
        seedgrid.open_cube(run, chunks="cells")


def test_open_shards_gives_the_cube_collect_writes_lazily_and_refuses_what_is_not_one(tmp_path):
    import warnings

    run, cfg = _run(tmp_path, [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)])
    collect(run)
    cube = seedgrid.open_cube(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning of xarray's changing defaults
        ds = seedgrid.open_shards(run)
    assert ds.logits.chunks is not None  # dask: nothing read until asked
    np.testing.assert_array_equal(ds.logits.values, cube.logits.values)
    np.testing.assert_array_equal(ds.seedgrid.metric().values, cube.seedgrid.metric().values)
    assert ds.seedgrid.status().values.tolist() == cube.seedgrid.status().values.tolist()
    assert ds.label.dims == ("example",)  # one label, not one per shard

    shard_path(run, 3, 2).unlink()  # a hole: collect's cube has it missing, open_shards refuses
    with pytest.raises(UsageError, match="leave 1 of 3 x 3 cells empty: open_shards needs"):
        seedgrid.open_shards(run)
    other = tiny_config(train={"learning_rate": 0.5})
    write_atomic(_shard(other, 3, 2, np.random.default_rng(1)), shard_path(run, 3, 2))
    with pytest.raises(UsageError, match="wi3_do2.nc': it is of config"):
        seedgrid.open_shards(run)
    moved = _shard(cfg, 3, 2, np.random.default_rng(1)).assign_coords(example=np.arange(30))
    write_atomic(moved, shard_path(run, 3, 2))  # other validation examples
    with pytest.raises(UsageError, match="do not form one cube"):
        seedgrid.open_shards(run)
    with pytest.raises(UsageError, match="no shards in"):
        seedgrid.open_shards(_run(tmp_path / "empty", [])[0])


def _odd_examples(ds):
    return ds.assign_coords(example=ds.example + 1000)


def _schema_9(ds):
    ds.attrs["schema_version"] = 9
    return ds


def _megabyte_host(ds):
    ds.attrs["host"] = "n" * 1_000_000
    return ds


@pytest.mark.parametrize("odd", [_odd_examples, _schema_9, _megabyte_host])
def test_one_odd_shard_read_first_is_the_one_left_out(tmp_path, capsys, odd):
    """Whatever is odd about the first shard (its examples, its schema version, a huge text
    attribute), it is that shard collect leaves out, never the good ones, and the cube stays
    the size of the good ones."""
    run, cfg = _run(tmp_path, [(1, 2), (2, 2), (3, 3)])
    write_atomic(odd(_shard(cfg, 1, 1, np.random.default_rng(1))), shard_path(run, 1, 1))
    (run / "shards" / "notes.txt").write_text("mine")  # not a shard: named, left out
    done = collect(run)
    assert done.counts["done"] == 3 and [d[:2] for d in done.damaged] == [(1, 1)]
    assert "left out 1 file(s)" in capsys.readouterr().err
    assert (run / "shards" / "notes.txt").read_text() == "mine"
    ds = seedgrid.open_cube(run)
    np.testing.assert_array_equal(ds.example, np.arange(100, 130))
    assert ds.status.sel(seed_wi=1, seed_do=1).item() == "missing"
    assert (run / "cube.nc").stat().st_size < 200_000
