"""The cube and shard files as other tools read them (schema 2): CF metadata, status as a flag
variable, per-cell provenance, lazy (dask) reading, and schema 1 files still opening."""

import netCDF4
import numpy as np
import pytest
import xarray as xr

import seedgrid
from seedgrid.cube import collect
from seedgrid.rundir import shard_path, write_config
from seedgrid.store import STATUS, VARIABLES, write_atomic

from conftest import tiny_config
from test_cube import _run, _shard

CELLS = [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)]
#: one diverged cell, so that lazy and eager reading must agree on status too
DIVERGED = {(2, 3): {"status": "diverged"}}


def test_the_cube_follows_the_cf_conventions(tmp_path):
    run, _ = _run(tmp_path, CELLS, shard_args=DIVERGED)
    path = collect(run).path
    with netCDF4.Dataset(path) as nc:
        assert nc.getncattr("Conventions").startswith("CF-")
        assert nc.getncattr("schema_version") == 2
        for name, var in nc.variables.items():
            assert var.getncattr("long_name"), name  # every variable and coordinate
        assert nc["wall_time_s"].units == "s" and nc["train_loss"].units == "1"
        status = nc["status"]
        assert status.dtype == np.int8  # a byte flag variable, not a string
        assert list(status.flag_values) == list(range(len(STATUS)))
        assert status.flag_meanings.split() == list(STATUS)
        codes = status[:]
        assert codes[1, 2] == STATUS.index("diverged")
        assert (np.delete(codes.ravel(), 5) == STATUS.index("done")).all()
    raw = xr.open_dataset(path)  # plain xarray, not open_cube
    assert "epoch" in raw.coords and "epoch" not in raw.data_vars
    np.testing.assert_allclose(raw.epoch, [0, 1, 2])
    raw.close()


def test_status_is_by_name_in_memory_and_by_code_on_disk(tmp_path):
    run, _ = _run(tmp_path, CELLS[:4], shard_args={(1, 2): {"status": "diverged"}})
    with netCDF4.Dataset(shard_path(run, 1, 2)) as nc:
        assert nc["status"][0, 0] == STATUS.index("diverged")
    collect(run)
    ds = seedgrid.open_cube(run)
    expected = [["done", "diverged", "done"], ["done", "missing", "missing"],
                ["missing"] * 3]
    assert ds.status.values.tolist() == expected
    assert (ds.status == "missing").sum() == 5


def test_label_names_are_flag_meanings_of_label(tmp_path):
    cfg = tiny_config()
    ds = _shard(cfg, 1, 1, np.random.default_rng(0))
    named = ds.assign(label=ds.label.assign_attrs(flag_values=np.array([0, 1]),
                                                  flag_meanings="negative positive"))
    run = tmp_path / "run"
    write_config(run, cfg)
    write_atomic(named, shard_path(run, 1, 1))
    with netCDF4.Dataset(collect(run).path) as nc:
        assert nc["label"].flag_meanings == "negative positive"
        assert list(nc["label"].flag_values) == [0, 1]


def test_every_cell_keeps_where_and_with_what_it_trained(tmp_path):
    hosts = {cell: f"node{cell[0]}{cell[1]}" for cell in CELLS[:3]}
    cfg = tiny_config(grid={"n_wi": 3, "n_do": 3})
    run = tmp_path / "run"
    write_config(run, cfg)
    rng = np.random.default_rng(0)
    gpus = ",".join(f"GPU-{k:08x}-1a2b-3c4d-5e6f-{k:012x}" for k in range(8))  # 8 UUIDs
    for (wi, do), host in hosts.items():
        ds = _shard(cfg, wi, do, rng)
        ds.attrs.update(host=host, device="NVIDIA H100" if do == 2 else "cpu",
                        torch_version=f"2.{do}", torch_threads=do, gpu=gpus)
        write_atomic(ds, shard_path(run, wi, do))
    cube = seedgrid.open_cube(collect(run).path)
    for (wi, do), host in hosts.items():
        cell = cube.sel(seed_wi=wi, seed_do=do)
        assert cell.host.item() == host
        assert cell.device.item() == ("NVIDIA H100" if do == 2 else "cpu")
        assert cell.versions.item() == f"torch 2.{do}"
        assert cell.torch_threads.item() == do
        assert cell.gpu.item() == gpus and len(gpus) > 256  # sized to its content, not cut
    missing = cube.sel(seed_wi=3, seed_do=3)
    assert missing.host.item() == "" and np.isnan(missing.torch_threads.item())  # fill value
    assert not any(k in cube.attrs for k in ("host", "device", "torch_version"))


@pytest.mark.parametrize("metric", ["accuracy", "mcc"])
def test_a_lazily_opened_cube_gives_the_eager_numbers(tmp_path, metric):
    run, _ = _run(tmp_path, CELLS[:7], shard_args=DIVERGED | {(1, 1): {"metric": metric}})
    path = collect(run).path
    eager = seedgrid.open_cube(path)
    for lazy in (xr.open_dataset(path, chunks={}), seedgrid.open_cube(path, chunks={})):
        assert lazy.logits.chunks is not None  # dask-backed
        for best in (False, True):
            xr.testing.assert_allclose(lazy.seedgrid.final(best=best).compute(),
                                       eager.seedgrid.final(best=best))
        xr.testing.assert_equal(lazy.seedgrid.status(), eager.status)
        xr.testing.assert_allclose(lazy.seedgrid.consistency().compute(),
                                   eager.seedgrid.consistency())
        lazy.load()  # nothing lazy was cached: loading afterwards works
        xr.testing.assert_allclose(lazy.seedgrid.final(), eager.seedgrid.final())


def test_shards_open_together_with_open_mfdataset(tmp_path):
    run, _ = _run(tmp_path, CELLS, shard_args=DIVERGED)
    eager = seedgrid.open_cube(collect(run).path)
    shards = xr.open_mfdataset(str(run / "shards" / "*.nc"), data_vars="minimal",
                               coords="minimal", compat="override")  # (given: no FutureWarning)
    xr.testing.assert_allclose(shards.seedgrid.final().compute(), eager.seedgrid.final())


def test_a_schema_1_cube_and_shards_still_open_and_collect(tmp_path):
    cfg = tiny_config(grid={"n_wi": 2, "n_do": 1})
    run = tmp_path / "run"
    write_config(run, cfg)
    rng = np.random.default_rng(0)
    for wi, status in ((1, "done"), (2, "diverged")):  # as seedgrid 0.1 wrote them
        old = _shard(cfg, wi, 1, rng, status=status)
        old.attrs["schema_version"] = 1
        path = shard_path(run, wi, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        old.to_netcdf(path, engine="netcdf4")
    with netCDF4.Dataset(shard_path(run, 2, 1)) as nc:
        assert nc["status"].dtype is str  # really the old string form
    done = collect(run)
    assert done.counts["done"] == 1 and done.counts["diverged"] == 1
    old_cube = xr.open_dataset(done.path).load()  # a schema 1 cube: strings, version 1
    old_cube = old_cube.assign(status=seedgrid.open_cube(done.path).status)
    old_cube.attrs["schema_version"] = 1
    old_cube.to_netcdf(tmp_path / "v1.nc", engine="netcdf4")
    v1 = seedgrid.open_cube(tmp_path / "v1.nc")
    assert v1.status.values.tolist() == [["done"], ["diverged"]]
    assert set(VARIABLES) <= set(v1.variables)
    xr.testing.assert_allclose(v1.seedgrid.final(), seedgrid.open_cube(done.path).seedgrid.final())


def test_a_status_outside_the_flags_is_refused_not_misread(tmp_path):
    from seedgrid.errors import UsageError

    run, cfg = _run(tmp_path, CELLS[:1])
    bad = _shard(cfg, 1, 2, np.random.default_rng(0))
    bad["status"] = bad["status"].copy(data=np.array([["finished"]], dtype=object))
    with pytest.raises(ValueError, match="status 'finished' is not one of"):
        write_atomic(bad, tmp_path / "never.nc")  # never written as "done" (code 0)
    assert not (tmp_path / "never.nc").exists()
    path = collect(run).path
    with netCDF4.Dataset(path, "a") as nc:
        nc["status"][0, 0] = 9  # a code no flag names
    with pytest.raises(UsageError, match="status code 9 is not one of its flag_values"):
        seedgrid.open_cube(path)


def _cf_tables(folder):
    """The tables cfchecks reads besides the file (it would download them): seedgrid's files
    use no standard names, area types or region names, so empty tables check them fully."""
    tables = {}
    for option, root in (("-s", "standard_name_table"), ("-a", "area_type_table"),
                         ("-r", "region_table")):
        path = folder / f"{root}.xml"
        path.write_text(f'<?xml version="1.0"?>\n<{root}><version_number>1</version_number>'
                        f"<date>2026-01-01</date><last_modified>2026-01-01</last_modified>"
                        f"</{root}>\n")
        tables[option] = str(path)
    return [a for option, path in tables.items() for a in (option, path)]


def test_the_cf_communitys_checker_finds_nothing_in_a_trained_shard_and_its_cube(tmp_path):
    import os
    import re
    import shutil
    import subprocess
    import sys

    from seedgrid.trainer import train_cell

    cfchecks = shutil.which("cfchecks", path=os.path.dirname(sys.executable))
    probe = subprocess.run([sys.executable, "-c", "import cfunits"], capture_output=True,
                           text=True) if cfchecks else None
    if not cfchecks or probe.returncode:
        why = "cfchecker is not installed" if not cfchecks else probe.stderr.strip()[-200:]
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the CF checker must run: {why}")
        pytest.skip(f"no CF checker here ({why}; make test installs it)")
    cfg = tiny_config(grid={"n_wi": 1, "n_do": 2})
    run = tmp_path / "run"
    write_config(run, cfg)
    for do in (1, 2):  # real (tiny) cells, written as seedgrid writes them
        write_atomic(train_cell(cfg, 1, do, log=lambda _: None), shard_path(run, 1, do))
    cube = collect(run).path
    for path in (shard_path(run, 1, 1), cube):
        checked = subprocess.run([cfchecks, *_cf_tables(tmp_path), str(path)],
                                 capture_output=True, text=True)
        said = checked.stdout
        counts = {k: int(n) for k, n in re.findall(r"(ERRORS|WARNINGS|INFORMATION)\D*(\d+)",
                                                    said)}
        assert counts == {"ERRORS": 0, "WARNINGS": 0, "INFORMATION": 0}, said[-3000:]
        assert "Checking against CF Version CF-1.8" in said
        with netCDF4.Dataset(path) as nc:
            assert nc.getncattr("title").startswith("seedgrid ") and nc.getncattr("history")
