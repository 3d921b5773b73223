"""Two installs: ``pip install seedgrid`` is the analysis, ``seedgrid[train]`` adds what trains.
With torch, transformers, accelerate, datasets, peft and submitit unimportable (an analysis-only
install), the analysis commands work on a real cube, and each training command says in one line
which extra to install (exit 2)."""

import tomllib

import pytest

from seedgrid.cube import collect

from conftest import REPO, run_cli
from test_cube import _run

TRAINING = {"torch", "transformers", "accelerate", "datasets", "peft", "submitit"}
#: python -m seedgrid with the training packages made unimportable
WITHOUT_TRAINING = f"""
import importlib.abc, runpy, sys
ABSENT = {TRAINING!r}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Absent())
sys.argv = ["seedgrid", *sys.argv[1:]]
runpy.run_module("seedgrid", run_name="__main__")
"""


def _analysis_only(*args, cwd=REPO):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", WITHOUT_TRAINING, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_the_base_install_has_no_training_package_and_the_extra_has_them_all():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda needs: {n.split(">=")[0].split("[")[0].lower() for n in needs}  # noqa: E731
    assert not names(project["dependencies"]) & TRAINING
    assert names(project["optional-dependencies"]["train"]) == TRAINING
    assert "seedgrid[train,dask]" in project["optional-dependencies"]["dev"]


def test_the_analysis_works_without_the_training_packages(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    for args in (["report", str(run), "--samples", "50"], ["status", str(run)],
                 ["export", str(run), "--to", str(tmp_path / "t.csv")], ["presets"],
                 ["compare", str(run), str(run)],
                 ["regress", "--baseline", str(run), "--candidate", str(run), "--history",
                  str(tmp_path / "h.jsonl")]):
        result = _analysis_only(*args)
        assert result.returncode == 0, (args, result.stderr)


@pytest.mark.parametrize("command", ["run", "submit", "continue"])
def test_a_training_command_names_the_extra_in_one_line(tmp_path, command):
    out = str(tmp_path / "x")
    args = {"run": ["--config", "demo", "--wi", "1", "--do", "1", "--out", out],
            "submit": ["--config", "demo", "--out", out], "continue": [out]}[command]
    result = _analysis_only(command, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{command} trains models" in lines[0]
    assert "pip install 'seedgrid[train]'" in lines[0]
    assert not (tmp_path / "x").exists()
