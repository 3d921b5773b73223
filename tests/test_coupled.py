"""Bui et al.'s runs as they ran them: a coupled grid, run k with seed k for everything."""

import json

import numpy as np
import pytest

import seedgrid

from conftest import run_cli, tiny_raw, write_toml


def test_a_coupled_grid_trains_the_diagonal_and_reports_over_its_runs(tmp_path):
    config = write_toml(tmp_path / "coupled.toml", tiny_raw(grid={"n_wi": 3, "n_do": 3,
                                                                  "coupled": True}))
    out = tmp_path / "run"
    submitted = run_cli("submit", "--config", str(config), "--out", str(out), "--parallel", "2",
                        "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitted 3 of 3 cells" in submitted.stdout
    assert sorted(p.name for p in (out / "shards").glob("*.nc")) == [
        "wi1_do1.nc", "wi2_do2.nc", "wi3_do3.nc"]
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert status["counts"]["done"] == 3 and status["counts"]["unused"] == 6
    assert status["counts"]["missing"] == 0
    collected = run_cli("collect", str(out))
    assert collected.returncode == 0 and "done 3, unused 6" in collected.stdout
    ds = seedgrid.open_cube(out)
    assert ds.attrs["coupled"] == 1
    assert ds.status.values.tolist() == [["done", "unused", "unused"],
                                         ["unused", "done", "unused"],
                                         ["unused", "unused", "done"]]
    reported = run_cli("report", str(out), "--no-figures", "--samples", "50")
    assert reported.returncode == 0, reported.stderr
    report = json.loads((out / "report" / "report.json").read_text())["runs"]["run"]
    assert report["coupled"] is True and report["macro"]["end"]["n"] == 3
    assert report["macro"]["decoupled_std"] is None and report["macro"]["anova"] is None
    # CON and CCON over the three runs, by a loop
    pred = ds.seedgrid.predictions().isel(step=-1)
    runs = [pred.sel(seed_wi=k, seed_do=k).values for k in (1, 2, 3)]
    labels = ds.label.values
    con = np.mean([len({r[e] for r in runs}) == 1 for e in range(len(labels))])
    ccon = np.mean([all(r[e] == labels[e] for r in runs) for e in range(len(labels))])
    assert report["micro"]["grid"]["runs"] == 3
    assert report["micro"]["grid"]["con"] == pytest.approx(con)
    assert report["micro"]["grid"]["ccon"] == pytest.approx(ccon)
    markdown = (out / "report" / "report.md").read_text()
    assert "A coupled grid (Bui et al.): run k used seed k for everything, 3 runs" in markdown
    assert "Table 3" not in markdown


@pytest.mark.parametrize("grid, message", [
    ({"n_wi": 3, "n_do": 4, "coupled": True}, "gives 3 WI and 4 DO seeds"),
    ({"seeds_wi": [1, 2], "seeds_do": [1, 3], "coupled": True}, "that differ"),
    ({"n_wi": 3, "n_do": 3, "coupled": "yes"}, "[grid] coupled = 'yes' should be true or false"),
])
def test_bad_coupled_grids_are_one_line_exit_2(tmp_path, grid, message):
    raw = tiny_raw()
    raw["grid"] = grid  # in place of the tiny config's own
    config = write_toml(tmp_path / "bad.toml", raw)
    result = run_cli("submit", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("seedgrid: error:") and message in line
    assert not (tmp_path / "run").exists()


def test_a_coupled_and_a_crossed_grid_never_share_a_run_folder(tmp_path):
    from seedgrid.config import config_from_dict
    from seedgrid.errors import UsageError
    from seedgrid.rundir import check_config, write_config

    crossed = config_from_dict(tiny_raw(grid={"n_wi": 2, "n_do": 2}))
    coupled = config_from_dict(tiny_raw(grid={"n_wi": 2, "n_do": 2, "coupled": True}))
    assert crossed.hash == coupled.hash  # the grid is not what a cell is
    write_config(tmp_path, crossed)
    with pytest.raises(UsageError, match="holds a WI x DO grid"):
        check_config(tmp_path, coupled)
    assert coupled.grid.cells() == [(1, 1), (2, 2)] and len(crossed.grid.cells()) == 4
