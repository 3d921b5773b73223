"""benchmarks/gpu.py, the command a lent GPU runs, at tiny shapes on this CPU (--smoke): it runs
where seedgrid's analysis dependencies are absent (a GPU node has torch and transformers, not
netCDF4, cftime, tomli-w, submitit or datasets), and it cannot pass silently."""

import json
import subprocess
import sys

from conftest import REPO

#: runs a script with the packages a GPU node lacks made unimportable
WITHOUT = """
import importlib.abc, runpy, sys
ABSENT = {"netCDF4", "cftime", "tomli_w", "submitit", "datasets"}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _gpu_py(*args):
    return subprocess.run([sys.executable, "-c", WITHOUT, "benchmarks/gpu.py", "--smoke", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_the_gpu_benchmark_runs_without_the_analysis_dependencies():
    result = _gpu_py("--only", "tiny:stock,tiny:K1,tiny:K2,tiny:K2nodrop,tinyllama:K2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    variants = [x for x in lines if "variant" in x and "ms_update" in x]
    assert [(x["shape"], x["variant"]) for x in variants] == [
        ("tiny", "stock"), ("tiny", "K1"), ("tiny", "K2"), ("tiny", "K2nodrop"),
        ("tinyllama", "K2")]
    for x in variants:
        assert x["ms_update"] > 0 and x["cell_updates_per_s"] > 0 and x["estimate_gb"] > 0
        parts = x["ms_fwd_bwd"] + x["ms_clip"] + x["ms_optimizer"]
        assert abs(x["ms_update"] - parts) < 0.2  # (each part rounded on its own)
    grids = [x["dodge_rte_grid"] for x in lines if "dodge_rte_grid" in x]
    assert [g["variant"] for g in grids] == ["stock", "K1", "K2", "K2nodrop"]
    assert [g["packs"] for g in grids] == [625, 625, 313, 313]


def test_a_failing_variant_fails_the_command_and_the_others_still_print():
    result = _gpu_py("--only", "tiny:K2,nosuch:K1")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(x.get("variant") == "K2" and "ms_update" in x for x in lines)
    assert any(x.get("shape") == "nosuch" and "KeyError" in x["error"] for x in lines)
    assert "1 of 2 variant(s) failed" in result.stderr
