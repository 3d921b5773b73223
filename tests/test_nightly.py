"""seedgrid-nightly on the real dev SLURM: the gate runs only after the array succeeded, and is
cancelled by SLURM (not left pending) when the array fails."""

import json
import os
import subprocess
import sys
from datetime import datetime

from conftest import REPO, run_cli, wait_until

DEV = str(REPO / "slurm/dev.toml")
NIGHTLY = [sys.executable, "-m", "seedgrid.nightly"]  # what the installed seedgrid-nightly runs
# a baseline folder whose name a shell would misread, and would run a command from
BASE = "bob's base $(touch PWNED) `touch PWNED2`"


def _nightly(tmp_path, config, name, *extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}  # its own Python, as installed
    result = subprocess.run(
        [*NIGHTLY, "--config", str(config), "--cluster", DEV, "--array", "4",
         "--baseline", str(tmp_path / BASE), "--out-root", str(tmp_path), "--name", name,
         "--history", str(tmp_path / "gate/history.jsonl"), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / name
    gate = (run / "gate_job").read_text().strip()
    jobs = json.loads((run / "jobs.json").read_text())
    (array,) = jobs["submissions"][0]["arrays"]
    return run, gate, array["job_id"]


def _sacct(job, fields="JobID,State,ExitCode,Start,End"):
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", fields, "-j", job],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def _wait_state(job, states):
    return wait_until(lambda: next((r for r in _sacct(job)[:1] if r[1].split()[0] in states),
                                   None), f"job {job} to be in {states} in sacct")


def test_nightly_gate_runs_after_the_array_and_is_cancelled_when_it_fails(slurm, tmp_path,
                                                                           tiny_toml):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 2})
    base = run_cli("submit", "--config", str(config), "--cluster", DEV, "--out",
                   str(tmp_path / BASE), "--wait")
    assert base.returncode == 0, base.stdout + base.stderr
    assert run_cli("collect", str(tmp_path / BASE)).returncode == 0

    # a good night: same config, deterministic: the gate passes, after every array task
    run, gate, array = _nightly(tmp_path, config, "night1")
    row = _wait_state(gate, {"COMPLETED", "FAILED", "CANCELLED"})
    assert row[1] == "COMPLETED" and row[2] == "0:0", (run / "gate.log").read_text()
    tasks = _sacct(array)
    assert len(tasks) == 4 and all(t[1] == "COMPLETED" for t in tasks)
    assert datetime.fromisoformat(row[3]) >= max(datetime.fromisoformat(t[4]) for t in tasks)
    history = [json.loads(line) for line in
               (tmp_path / "gate/history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["regression"] is False
    assert "pass" in (run / "gate.log").read_text()
    assert (tmp_path / "gate/history.md").exists()
    assert not list(REPO.glob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))  # nothing ran

    # a bad night: a task is cancelled before it ran; the gate must not wait forever
    run, gate, array = _nightly(tmp_path, config, "night2", "--parallel", "1")
    subprocess.run(["scancel", f"{array}_3"], check=True)
    def gate_cancelled():
        shown = subprocess.run(["scontrol", "show", "job", gate], capture_output=True,
                               text=True).stdout
        return shown if "JobState=CANCELLED" in shown else None

    shown = wait_until(gate_cancelled, "SLURM to cancel the gate")
    subprocess.run(["scancel", array], check=False)
    assert "Dependency" in shown or "dependency" in shown.lower()
    assert len((tmp_path / "gate/history.jsonl").read_text().splitlines()) == 1  # no verdict


def test_nightly_refuses_bad_input(slurm, tmp_path):
    result = subprocess.run([*NIGHTLY, "--config", "demo", "--cluster", DEV,
                             "--array", "4", "--baseline", str(tmp_path / "none")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "no baseline at" in result.stderr
    assert not (REPO / "runs/nightly").exists() or not any((REPO / "runs/nightly").iterdir())
    local = subprocess.run([*NIGHTLY, "--config", "demo", "--cluster", "local", "--array", "4",
                            "--baseline", str(REPO)], cwd=REPO, capture_output=True, text=True)
    assert local.returncode == 2 and "must be a SLURM profile" in local.stderr, local.stderr
