"""What `pip install seedgrid` gets: the wheel's contents and metadata, and an environment that
`pip check` accepts (the offline assets live in a folder of their own)."""

import email
import subprocess
import sys
import zipfile

from conftest import REPO


def test_the_wheel_carries_profiles_types_license_and_metadata(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                            str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("seedgrid-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("seedgrid/py.typed", "seedgrid/profiles/local.toml",
                 "seedgrid/profiles/example-gpu.toml",
                 "seedgrid/presets/demo.toml", "seedgrid/scripts/nightly.sh",
                 "seedgrid/scripts/gate.sh", "seedgrid/papers/dodge2020.py",
                 "seedgrid/papers/bui2025.py"):
        assert path in names, path
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(info))
    assert meta["License-Expression"] == "MIT"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(info.replace("METADATA", "entry_points.txt"))
    assert b"seedgrid-nightly = seedgrid.nightly:main" in entry_points


def test_pip_check_passes_where_make_installed_the_offline_assets():
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_packaged_profiles_are_found_by_name_outside_a_checkout(tmp_path, monkeypatch):
    from seedgrid.grid import profile as cluster

    monkeypatch.chdir(tmp_path)  # no ./cluster here
    assert cluster.load_profile("example-gpu").executor == "slurm"
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "example-gpu.toml").write_text('executor = "local"\n')
    assert cluster.load_profile("example-gpu").executor == "local"  # a site's own one wins


def test_the_installed_nightly_script_runs_the_packaged_one():
    from pathlib import Path

    script = Path(sys.executable).parent / "seedgrid-nightly"
    result = subprocess.run([str(script), "--config", "demo"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("usage: seedgrid-nightly --config")
