"""Every record is checked whole before it is applied. A checkpoint that loads but cannot be its
cell's — any field of it: the optimizer's groups and settings, its state, the schedule, the
loss scale, the wall time — is set aside and the cell trains from the start, equal to a cell
that never had one; a checkpoint of another config or other data is refused in one line naming
the file (a resume would make a cell of neither)."""

import threading

import numpy as np
import pytest
import torch

from seedgrid.checkpoint import Checkpointer
from seedgrid.errors import UsageError
from seedgrid.trainer import train_cell

from conftest import tiny_config


class _Stop(Exception):
    pass


def _checkpoint_at_update_3(path):
    checkpointer = Checkpointer(path)

    def stop(update, _):
        if update == 3:
            checkpointer.save()
            raise _Stop

    with pytest.raises(_Stop):
        train_cell(tiny_config(), 1, 1, checkpointer=checkpointer, on_update=stop,
                   log=lambda _: None)
    return torch.load(path, weights_only=True)


EDITS = {
    "no parameter groups": lambda s: s["optimizer"].update(param_groups=[]),
    "a group of other parameters": lambda s: s["optimizer"]["param_groups"][0].update(
        params=[0, 1]),
    "a learning rate that is text": lambda s: s["optimizer"]["param_groups"][0].update(lr="x"),
    "another optimizer's state": lambda s: s["optimizer"]["state"][0].update(momentum_buffer=1),
    "a schedule of another shape": lambda s: s["scheduler"].update(base_lrs=[1e-3]),
    "a schedule without its step": lambda s: s["scheduler"].update(last_epoch="3"),
    "a wall time that is text": lambda s: s.update(wall_time_s="an hour"),
    "a scaler that is not a state": lambda s: s.update(scaler=[1, 2]),
    "an old dropout state": lambda s: s.update(rng={}),  # (nothing reads it: not a problem)
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_checkpoint_that_cannot_be_applied_is_set_aside_and_the_cell_trains_whole(tmp_path,
                                                                                     edit):
    path = tmp_path / "cell.pt"
    state = _checkpoint_at_update_3(path)
    EDITS[edit](state)
    torch.save(state, path)
    said, done = [], []
    thread = threading.Thread(daemon=True, target=lambda: done.append(train_cell(
        tiny_config(), 1, 1, checkpointer=Checkpointer(path, log=said.append),
        log=said.append)))
    thread.start()
    thread.join(300)
    assert done, "training hung"
    whole = train_cell(tiny_config(), 1, 1, log=lambda _: None)
    if edit == "an old dropout state":  # resumed at update 3, as if it had never stopped
        assert any("resumed from" in line for line in said), said
    else:
        assert any("moved to cell.pt.damaged" in line for line in said), said
        assert (tmp_path / "cell.pt.damaged").exists() and not path.exists()
    assert done[0].train_loss.values.tobytes() == whole.train_loss.values.tobytes()


@pytest.mark.parametrize("other", ["config", "data"])
def test_a_checkpoint_of_another_config_or_other_data_is_refused_naming_it(tmp_path, other):
    path = tmp_path / "cell.pt"
    state = _checkpoint_at_update_3(path)
    if other == "config":
        state["config_hash"] = "0123456789ab"
    else:
        state["data"]["data_train"] = "feedfacefeedface"
    torch.save(state, path)
    with pytest.raises(UsageError, match=f"checkpoint {path} trained"):
        train_cell(tiny_config(), 1, 1, checkpointer=Checkpointer(path), log=lambda _: None)
    assert path.exists()  # a good checkpoint of what it trained: kept, never set aside
    assert torch.load(path, weights_only=True)["update"] == 3
    assert np.isfinite(state["train_loss"][:3]).all()


@pytest.fixture
def read_only(tmp_path):
    """A function making a read-only view of a folder (a bind mount, root only): what a
    teammate without write access sees of a run folder."""
    import os
    import subprocess

    mounted = []

    def view(folder):
        where = tmp_path / f"view{len(mounted)}"
        where.mkdir()
        for command in (["mount", "--bind", str(folder), str(where)],
                        ["mount", "-o", "remount,bind,ro", str(where)]):
            made = subprocess.run(command, capture_output=True)
            if made.returncode != 0:
                if os.environ.get("CI") == "true":
                    pytest.fail(f"under CI a read-only view must be made: {made.stderr}")
                pytest.skip("cannot bind-mount here (needs root)")
        mounted.append(where)
        return where

    yield view
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_teammate_reads_a_damaged_record_and_cannot_collect_in_one_line(tmp_path, read_only):
    """Read-only, a damaged jobs.json is left where it is (not theirs to move) and read as
    absent: status and report go on; collect says in one line it cannot write."""
    from seedgrid.cube import collect

    from conftest import run_cli
    from test_cube import _run

    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    (run / "jobs.json").write_text("{ cut sho")
    view = read_only(run)
    status = run_cli("status", str(view))
    assert status.returncode == 0, status.stderr
    assert "jobs.json was damaged" in status.stderr and "left where it is" in status.stderr
    assert (run / "jobs.json").exists() and not (run / "jobs.json.damaged").exists()
    report = run_cli("report", str(view), "--out", str(tmp_path / "mine"), "--samples", "20")
    assert report.returncode == 0, report.stderr
    collected = run_cli("collect", str(view))
    lines = collected.stderr.strip().splitlines()
    assert collected.returncode == 2 and len(lines) == 1, collected.stderr
    assert "cannot write" in lines[0] and "a copy of this one (cp -r)" in lines[0]


def test_a_damaged_phase_one_shard_counts_as_missing_and_the_decision_goes_on(tmp_path):
    import json

    from conftest import run_cli, tiny_raw, wait_until, write_toml
    from seedgrid.grid.local import alive

    config = write_toml(tmp_path / "c.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    run = tmp_path / "es"
    submitted = run_cli("submit", "--config", str(config), "--cluster", "local", "--out",
                        str(run), "--early-stop", "started=2,fraction=0.5,continue=1",
                        "--parallel", "2")
    assert submitted.returncode == 0, submitted.stderr
    tasks = [t for s in json.loads((run / "jobs.json").read_text())["submissions"]
             for a in s["arrays"] for t in a["task_ids"]]
    wait_until(lambda: all((run / f"shards/wi1_do{d}.nc").exists() for d in (1, 2))
               and not any(alive(t) for t in tasks), "phase one to end", 300)
    shard = run / "shards/wi1_do1.nc"
    shard.write_bytes(shard.read_bytes()[:200])  # cut short (a node died while copying it)
    for _ in range(2):  # every rerun alike: never a traceback
        decided = run_cli("continue", str(run), "--cluster", "local")
        assert decided.returncode == 0, decided.stderr
    assert "its shard" in decided.stderr or "nothing left to continue" in decided.stdout
    record = json.loads((run / "early_stop.json").read_text())
    assert record["missing"] == [[1, 1]] and record["decided_on"] == 1
    assert record["continued_cells"] == [[1, 2]]


@pytest.mark.parametrize("plan", [
    {"phase_one": [[1, 1]] * 5000},  # one cell repeated: a plan is a set of cells
    {"phase_one": [[1, 1], [1, 2]], "continued_cells": [[1, 2], [1, 2]]},
    {"phase_one": [[1, 1], [1, 2]], "decider_job": "42\x1b[2J"},  # shown by status: an id only
    {"phase_one": [[1, 1], [1, 2]], "decider_job": 42},
])
def test_an_early_stop_plan_that_repeats_a_cell_or_names_no_job_id_is_set_aside(tmp_path, plan):
    import json

    from conftest import tiny_raw, write_toml
    from seedgrid.grid import early_stop

    write_toml(tmp_path / "config.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    (tmp_path / "early_stop.json").write_text(json.dumps(
        {"started": 2, "fraction": 0.5, "continued": 1, "phase": 1, "source": "given",
         "continued_cells": None, **plan}))
    assert early_stop.read(tmp_path) is None  # read as a run without a plan,
    assert (tmp_path / "early_stop.json.damaged").exists()  # kept for a look
    assert not (tmp_path / "early_stop.json").exists()


@pytest.mark.parametrize("planted", ["link", "fifo", "folder"])
def test_a_lock_file_that_is_not_a_file_stops_the_submit_before_any_task_starts(tmp_path,
                                                                               planted):
    """jobs.json is written before the tasks start (intent before action): a lock file that
    is a planted link (never opened, let alone truncated), a FIFO or a folder is one line and
    exit 2 with no task started and nothing written through it."""
    import os

    from conftest import run_cli, tiny_raw, write_toml

    config = write_toml(tmp_path / "c.toml", tiny_raw(grid={"n_wi": 1, "n_do": 1}))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    lock = run / "jobs.json.lock"
    {"link": lambda: lock.symlink_to(precious), "fifo": lambda: os.mkfifo(lock),
     "folder": lambda: lock.mkdir()}[planted]()
    submitted = run_cli("submit", "--config", str(config), "--cluster", "local", "--out",
                        str(run))
    assert submitted.returncode == 2, submitted.stderr
    assert "jobs.json.lock" in submitted.stderr and len(submitted.stderr.splitlines()) == 1
    assert precious.read_text() == "years of work"
    assert not (run / "jobs.json").exists() and not list(run.glob("logs/*"))
    assert not (run / "shards").exists() and not (run / "running").exists()


def test_a_submission_cut_short_before_it_recorded_its_jobs_is_said_once(tmp_path):
    """What a crash between starting tasks and recording them leaves in jobs.json (the cells
    it was submitting), the next --resume names once."""
    import json

    from conftest import run_cli, tiny_raw, write_toml

    config = write_toml(tmp_path / "c.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    run = tmp_path / "run"
    first = run_cli("submit", "--config", str(config), "--cluster", "local", "--out", str(run),
                    "--wait")
    assert first.returncode == 0, first.stderr
    jobs = json.loads((run / "jobs.json").read_text())
    jobs["submissions"][-1]["intended"] = [[1, 1], [1, 2]]
    jobs["submissions"][-1]["arrays"][0]["tasks"] = [[[1, 1]]]  # as if cut short after one
    jobs["submissions"][-1]["arrays"][0]["task_ids"] = jobs["submissions"][-1]["arrays"][0][
        "task_ids"][:1]
    (run / "jobs.json").write_text(json.dumps(jobs))
    again = run_cli("submit", "--resume", str(run), "--cluster", "local", "--wait")
    assert again.returncode == 0, again.stderr
    assert "stopped before it recorded its jobs; 1 cell(s)" in again.stderr
    assert json.loads((run / "jobs.json").read_text())["submissions"][0]["unrecorded"] == [[1, 2]]
    third = run_cli("submit", "--resume", str(run), "--cluster", "local")
    assert "stopped before it recorded" not in third.stderr  # said once
