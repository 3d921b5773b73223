"""analysis/: the notebooks (jupytext percent scripts) users open to analyse a cube run, top to
bottom, on a real collected cube, and print what the accessor computes."""

import os
import re
import subprocess
import sys

import pytest

import seedgrid
from seedgrid.cube import collect

from conftest import REPO
from test_cube import _run

NOTEBOOKS = sorted(p.name for p in (REPO / "analysis").glob("*.py"))


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    run, _ = _run(tmp_path_factory.mktemp("nb"), [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)])
    collect(run)
    return run


def _execute(name: str, cube) -> str:
    result = subprocess.run([sys.executable, str(REPO / "analysis" / name)], cwd=cube,
                            env={**os.environ, "SEEDGRID_CUBE": str(cube), "MPLBACKEND": "Agg"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_notebook_is_run_here():
    assert NOTEBOOKS == ["bui2025.py", "dodge2020.py"]
    for name in NOTEBOOKS:
        assert (REPO / "analysis" / name).read_text().startswith("# %% [markdown]")


def test_the_dodge_notebook_prints_the_accessors_numbers(cube):
    out = _execute("dodge2020.py", cube)
    ds = seedgrid.open_cube(cube)
    best = float(ds.seedgrid.regimes().sel(regime="every").max())
    assert re.search(rf"^every\s+{best:.4f}$", out, re.MULTILINE), out
    total = ds.seedgrid.decoupled_std()["total"]
    assert f"'total': {round(total, 4)}" in out
    assert "relative_error_reduction" in out  # the early-stopping table, to its end


def test_the_bui_notebook_prints_the_accessors_numbers(cube):
    out = _execute("bui2025.py", cube)
    ds = seedgrid.open_cube(cube)
    final = ds.seedgrid.final("accuracy").values.ravel()
    assert f"accuracy: mean {final.mean():.4f}, VAR {final.var():.6f} over 9 runs" in out
    grid = ds.seedgrid.consistency()
    assert f"'con': {round(float(grid['con']), 4)}" in out
    assert "agreement  both_correct" in out and "step_other" in out  # Fig. 1, the dynamics
