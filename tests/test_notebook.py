"""What a notebook user gets from a cube: metric arrays labelled as what they are (never as the
logits they came from), tables as pandas and xarray objects, compare on cubes in memory — the
same numbers as from their files."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import seedgrid
from seedgrid.compare import compare
from seedgrid.cube import collect

from test_cube import _run


@pytest.fixture
def cube(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)], n=3)
    collect(run)
    return run, seedgrid.open_cube(run).load()


def test_metric_arrays_are_labelled_as_themselves(cube):
    _, ds = cube
    acc = ds.seedgrid
    logits_words = ds.logits.attrs.get("long_name", "logits")
    for array, word in [(acc.metric(), "accuracy"), (acc.final(), "last evaluation"),
                        (acc.final(best=True), "best accuracy found"),
                        (acc.best_so_far(), "best accuracy so far"),
                        (acc.regimes(), "epoch ends"), (acc.predictions(), "predicted class"),
                        (acc.correct(), "gold label"), (acc.diverged(), "diverged")]:
        assert word in array.attrs["long_name"], array.attrs
        assert logits_words not in array.attrs["long_name"]
        assert set(array.attrs) <= {"long_name", "units"}


def test_tables_come_as_pandas_and_xarray(cube):
    _, ds = cube
    acc = ds.seedgrid
    assert isinstance(acc.decoupled_std(), pd.Series)
    assert set(acc.decoupled_std().index) == {"wi", "do", "total"}
    for table in (acc.anova(), acc.permutation_test(n_resamples=200)):
        assert isinstance(table, pd.DataFrame) and list(table.columns) == ["seed_wi", "seed_do"]
    assert acc.anova()["seed_wi"]["best"] in ds["seed_wi"].values  # a seed, not a float copy
    assert isinstance(acc.consistency(), xr.Dataset)
    assert isinstance(acc.run_pairs(), pd.DataFrame) and isinstance(acc.table(), pd.DataFrame)


def test_compare_takes_cubes_in_memory_with_the_numbers_of_their_files(tmp_path):
    from test_compare import _cube

    a, b = tmp_path / "runs/a", tmp_path / "runs/b"
    _cube(a, 0.7, seed=0)
    _cube(b, 0.7, seed=0, better=30)
    from_files = compare(a, b, n_boot=200)
    in_memory = compare(seedgrid.open_cube(a).load(), seedgrid.open_cube(b).load(), n_boot=200)
    for key in ("difference", "p", "rank_p", "ci", "d_z", "significant", "paired_cells"):
        assert np.allclose(in_memory[key], from_files[key], equal_nan=True), key
    assert in_memory["a"].startswith("a cube in memory (mr, config ")


def test_the_accessors_docstrings_give_the_dimensions_it_returns(cube):
    """Each method whose docstring names its result's dimensions — "(seed_wi, seed_do, step)"
    — returns them, in that order."""
    import inspect
    import re

    _, ds = cube
    acc = ds.seedgrid
    names = {"seed_wi", "seed_do", "step", "example", "regime", "class", "run", "n"}
    checked = 0
    for name, method in inspect.getmembers(type(acc), inspect.isfunction):
        if name.startswith("_") or not method.__doc__:
            continue
        said = next((tuple(d.strip() for d in m.split(","))
                     for m in re.findall(r"\(([a-z_]+(?:, [a-z_]+)+)\)", method.__doc__)
                     if set(d.strip() for d in m.split(",")) <= names), None)
        if said is None:
            continue
        result = getattr(acc, name)()
        if not isinstance(result, xr.DataArray):  # (a table's rows named in its docstring)
            continue
        assert tuple(result.dims) == said, (name, result.dims, said)
        checked += 1
    assert checked >= 4
