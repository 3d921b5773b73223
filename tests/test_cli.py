"""What scripts read from the CLI: its version, and status as JSON."""

import json
import tomllib

from conftest import REPO, run_cli
from test_cube import _run


def test_version_is_pyprojects():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"seedgrid {version}"


def test_status_json_counts_every_cell(tmp_path):
    run, cfg = _run(tmp_path, [(1, 1), (2, 3)], n=3, shard_args={(2, 3): {"status": "diverged"}})
    result = run_cli("status", str(run), "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["config_hash"] == cfg.hash and len(got["cells"]) == 9
    assert got["counts"]["done"] == 1 and got["counts"]["diverged"] == 1
    assert got["counts"]["missing"] == 7 and sum(got["counts"].values()) == 9
    states = {(c["seed_wi"], c["seed_do"]): c["state"] for c in got["cells"]}
    assert states[2, 3] == "diverged" and states[3, 3] == "missing"
