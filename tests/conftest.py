"""Shared test helpers: a tiny config (random 2-layer BERT on a few movie-review sentences)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

# Tests never wait on a hub: an unknown model id fails at once instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "model": {"name": "tiny-random-bert", "max_length": 32},
    "task": {"name": "mr", "train_size": 40, "validation_size": 24},
    "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "evals_per_epoch": 2,
              "dropout": 0.1},
    "runtime": {"deterministic": True, "eval_batch_size": 16},
    "grid": {"n_wi": 2, "n_do": 2},
}


def tiny_raw(**sections) -> dict:
    """The tiny config as a dict, with ``section={key: value}`` overrides merged in."""
    raw = copy.deepcopy(TINY)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def tiny_config(**sections):
    from seedgrid.config import config_from_dict

    return config_from_dict(tiny_raw(**sections), source="tiny")


def write_toml(path: Path, raw: dict) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m seedgrid ARGS`` in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "seedgrid", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=600)


def train_twice(tmp_path: Path, config: Path) -> tuple[Path, Path]:
    """The grid of ``config`` submitted locally, waited for and collected twice (run folders
    ``a`` and ``b``: the same cells, so compare's difference is exactly 0)."""
    runs = (tmp_path / "a", tmp_path / "b")
    for out in runs:
        submitted = run_cli("submit", "--config", str(config), "--out", str(out), "--parallel",
                            "2", "--wait")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert run_cli("collect", str(out)).returncode == 0
    return runs


def wait_until(predicate, what: str, timeout: float = 600, every: float = 0.5):
    """Poll ``predicate`` until it returns something true (returned), else fail naming ``what``.

    Tests wait on states (a shard, a job state in sacct), never for a fixed time: a loaded
    machine only makes them slower. ``timeout`` is a generous bound, not a schedule.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def sacct_states(job: str) -> dict[str, str]:
    """Each task of SLURM job ``job`` ("<job>_<i>", or "<job>") → its state's first word, as
    accounting has it now."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job],
                         capture_output=True, text=True, check=True).stdout
    return {line.split("|")[0]: line.split("|")[1].split()[0]
            for line in out.splitlines() if "|" in line}


def queued(job: str) -> bool:
    """Whether any task of ``job`` is still in SLURM's queue (squeue)."""
    return bool(subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                               text=True).stdout.strip())


SLURM_CONF = Path(os.environ.get("SEEDGRID_SLURM_DIR", "/var/tmp/seedgrid-slurm")) / "etc/slurm.conf"


@pytest.fixture(autouse=True)
def seedgrid_messages():
    """Messages as in seedgrid's own processes (progress and warnings on stderr, at the
    default level), whatever an earlier test set: library calls in tests print as the CLI."""
    from seedgrid import log

    log.configure(0)


def pytest_collection_modifyitems(items):
    """Every test that uses the ``slurm`` fixture carries the ``slurm`` marker, so that
    ``pytest -m "not slurm"`` runs the rest where no SLURM is at hand."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm():
    """The dev SLURM started by slurm/start.sh (``make test`` starts it); SLURM_CONF is set.

    Skips when it is not running, except under CI (CI=true), where SLURM tests must run.
    """
    if SLURM_CONF.exists():
        os.environ["SLURM_CONF"] = str(SLURM_CONF)
    up = subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0 \
        if SLURM_CONF.exists() else False
    if not up:
        reason = f"no SLURM running ({SLURM_CONF} missing or sinfo fails): run slurm/start.sh"
        if os.environ.get("CI") == "true":
            pytest.fail("under CI the SLURM tests must run: " + reason)
        pytest.skip(reason)
    return SLURM_CONF


@pytest.fixture
def tiny_toml(tmp_path):
    """A function writing the tiny config (with overrides) to a TOML file; returns its path."""
    def make(name="tiny.toml", **sections) -> Path:
        return write_toml(tmp_path / name, tiny_raw(**sections))
    return make
