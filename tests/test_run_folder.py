"""A run folder others can write to (a co-user of a shared cluster filesystem): a write replaces
only what is its own, and nothing seedgrid reads from the folder executes."""

import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from seedgrid.grid import status as status_module
from seedgrid.grid.profile import Profile
from seedgrid.cube import collect
from seedgrid.report import MANIFEST
from seedgrid.rundir import guard_line, shard_path
from seedgrid.files import atomic_path, read_json
from seedgrid.store import read_shard, write_atomic

from conftest import REPO, run_cli, tiny_raw, write_toml
from test_cube import _run, _shard
from test_faults import _Planted


def _one_line_refusal(result, *words):
    """Bad input: exit status 2, one line on stderr naming the problem, nothing on stdout."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seedgrid: error:"), result.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert result.stdout == ""


def _tree(folder):
    """Every path under ``folder`` with the bytes of each file (links as their targets)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[key] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                found[key] = open(path, "rb").read()
            else:
                found[key] = "dir"
    return found


# --- a write replaces only what is its own -------------------------------------------------

def test_report_into_a_users_folder_keeps_every_file_of_theirs(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    paper = tmp_path / "mypaper"
    (paper / "run").mkdir(parents=True)  # the report's per-run figure folder, already there
    (paper / "run/notes.txt").write_text("mine")
    (paper / "draft.tex").write_text("mine too")
    for _ in range(2):  # and again: the second report replaces the first one's files only
        result = run_cli("report", str(run), "--out", str(paper), "--samples", "50")
        assert result.returncode == 0, result.stderr
    assert (paper / "run/notes.txt").read_text() == "mine"
    assert (paper / "draft.tex").read_text() == "mine too"
    assert (paper / "report.md").exists() and (paper / "run/fig2_grid.png").exists()
    written = json.loads((paper / MANIFEST).read_text())["seedgrid_report_files"]
    assert "report.md" in written and "run/notes.txt" not in written
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary left


@pytest.mark.parametrize("in_the_way", ["report.md", "run/fig2_grid.png", "run"])
def test_report_refuses_to_replace_what_it_did_not_write(tmp_path, in_the_way):
    run, _ = _run(tmp_path, [(1, 1), (1, 2)], n=2)
    collect(run)
    paper = tmp_path / "mypaper"
    paper.mkdir()
    (paper / "keep.txt").write_text("mine")
    if in_the_way == "run":  # a file where the report's run folder goes
        (paper / "run").write_text("my file named run")
    else:
        (paper / in_the_way).parent.mkdir(parents=True, exist_ok=True)
        (paper / in_the_way).write_text("my own")
    before = _tree(paper)
    result = run_cli("report", str(run), "--out", str(paper), "--samples", "50")
    _one_line_refusal(result, str(paper / in_the_way), "choose another --out")
    assert _tree(paper) == before  # nothing moved in, nothing replaced


@pytest.mark.parametrize("link_to", ["a folder of the user's", "the run folder's parent"])
def test_a_link_planted_as_the_report_folder_is_refused(tmp_path, link_to):
    run, _ = _run(tmp_path, [(1, 1), (1, 2)], n=2)
    collect(run)
    if link_to == "a folder of the user's":
        target = tmp_path / "precious"
        target.mkdir()
        (target / "report.md").write_text("the user's own")
        (target / "thesis.tex").write_text("years of work")
        (run / "report").symlink_to(target)
    else:
        (run / "report").symlink_to("..")
        target = tmp_path
    before = _tree(target) if link_to != "the run folder's parent" else _tree(run)
    result = run_cli("report", str(run), "--samples", "50")
    _one_line_refusal(result, "symbolic link", "give --out")
    assert (_tree(target) if link_to != "the run folder's parent" else _tree(run)) == before
    assert (run / "cube.nc").exists() and (run / "report").is_symlink()


def _special(path, kind):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:  # a socket
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()


def _timed(*args):
    """run_cli, which must not hang: a FIFO is refused at once, never opened for writing."""
    started = time.monotonic()
    result = run_cli(*args)
    assert time.monotonic() - started < 60
    return result


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket"])
def test_outputs_refuse_a_fifo_a_folder_or_a_socket(tmp_path, kind):
    run, _ = _run(tmp_path, [(1, 1), (1, 2)], n=2)
    collect(run)
    for option, command in (("--json", ["status", str(run), "--json"]),
                            ("--to", ["export", str(run), "--to"])):
        target = tmp_path / f"out_{option.strip('-')}.{'csv' if option == '--to' else 'json'}"
        _special(target, kind)
        _one_line_refusal(_timed(*command, str(target)), option, str(target))
    history = tmp_path / "history.jsonl"
    _special(history, kind)
    _one_line_refusal(_timed("regress", "--baseline", str(run), "--candidate", str(run),
                             "--history", str(history)),
                      "--history", str(history))
    cube = run / "cube.nc"  # an internal file: a FIFO planted in its place
    cube.unlink()
    _special(cube, kind)
    _one_line_refusal(_timed("collect", str(run)), str(cube))


def test_outputs_write_through_a_link_to_a_regular_file(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2)], n=2)
    collect(run)
    shared = tmp_path / "shared"
    shared.mkdir()
    for name, command in (("status.json", ["status", str(run), "--json"]),
                          ("table.csv", ["export", str(run), "--to"])):
        (shared / name).write_text("old")
        (tmp_path / name).symlink_to(shared / name)
        result = run_cli(*command, str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / name).is_symlink() and (shared / name).read_text() != "old"
    (tmp_path / "history.jsonl").symlink_to(shared / "history.jsonl")  # not made yet
    for night in (1, 2):  # the shared history keeps growing through the link
        result = run_cli("regress", "--baseline", str(run), "--candidate", str(run), "--history",
                         str(tmp_path / "history.jsonl"))
        assert result.returncode in (0, 1), result.stderr
        assert (tmp_path / "history.jsonl").is_symlink()
        assert len((shared / "history.jsonl").read_text().splitlines()) == night


def test_files_of_the_run_folder_replace_a_planted_link_never_its_target(tmp_path):
    run, cfg = _run(tmp_path, [(1, 1)], n=1)
    victim = tmp_path / "bashrc"
    victim.write_text("the user's own")
    for planted in (run / "cube.nc", shard_path(run, 1, 2)):  # links where seedgrid writes
        planted.symlink_to(victim)
    collect(run)
    import numpy as np

    write_atomic(_shard(cfg, 1, 2, np.random.default_rng(1)), shard_path(run, 1, 2))
    assert victim.read_text() == "the user's own"
    for written in (run / "cube.nc", shard_path(run, 1, 2)):
        assert not written.is_symlink() and written.stat().st_size > 1000


def test_temporaries_are_made_exclusively_and_killed_writers_leftovers_removed(tmp_path):
    target = tmp_path / "cube.nc"
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale_file = tmp_path / f".cube.nc.{host}.{dead}.abc123.tmp"  # a killed collect's
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".cube.nc.{host}.{dead}.def456.tmp"  # a killed report's
    (stale_dir / "sub").mkdir(parents=True)
    live = tmp_path / f".cube.nc.otherhost.{os.getpid()}.ghi789.tmp"  # another host's writer
    live.write_bytes(b"y")
    old_style = tmp_path / f".cube.nc.{dead}.tmp"  # an earlier seedgrid's name
    old_style.write_bytes(b"z")
    seen = []
    with atomic_path(target) as tmp:
        seen.append(tmp)
        st = os.lstat(tmp)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size == 0
        assert tmp.name.startswith(f".cube.nc.{host}.{os.getpid()}.")
        tmp.write_text("new")
    assert target.read_text() == "new" and not seen[0].exists()
    assert not stale_file.exists() and not stale_dir.exists() and not old_style.exists()
    assert live.exists()


def test_a_temporary_swapped_for_a_link_while_written_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("the user's own")
    target = tmp_path / "jobs.json"
    with pytest.raises(Exception, match="replaced by someone else"):
        with atomic_path(target) as tmp:
            tmp.unlink()
            tmp.symlink_to(victim)  # what a co-user racing the write would do
    assert victim.read_text() == "the user's own" and not target.exists()


def test_records_read_from_the_run_folder_never_block(tmp_path):
    fifo = tmp_path / "jobs.json"
    os.mkfifo(fifo)
    done = []
    thread = threading.Thread(target=lambda: done.append(read_json(fifo, "default")),
                              daemon=True)
    thread.start()
    thread.join(30)
    assert done == ["default"]  # set aside, never waited on
    assert (tmp_path / "jobs.json.damaged").exists() and not os.path.lexists(fifo)


def test_a_huge_task_log_is_read_from_its_end(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    log = run / "logs/77_0_log.err"
    with open(log, "wb") as f:
        f.truncate(2 << 30)  # 2 GB (sparse): read whole, status would take seconds and GBs
        f.seek(0, 2)
        f.write(b"\nValueError: \x1b[31mthe reason\n")
    started = time.monotonic()
    line = status_module.last_log_line(run, "77")
    assert time.monotonic() - started < 5
    assert line == "log: ValueError: \\x1b[31mthe reason"  # an escape shown, never sent raw


# --- nothing executes from the run folder --------------------------------------------------

def test_submit_wait_never_unpickles_a_task_result(tmp_path):
    config = write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "run"
    first = run_cli("submit", "--config", str(config), "--out", str(out), "--parallel", "2",
                    "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    marker = tmp_path / "PWNED"
    import submitit

    submission = json.loads((out / "jobs.json").read_text())["submissions"][-1]
    task_ids = [t for a in submission["arrays"] for t in a["task_ids"]]
    jobs = []
    for task in task_ids:  # a co-user swaps each task's result pickle
        job = submitit.local.local.LocalJob(out / "logs", task)
        with open(job.paths.result_pickle, "wb") as f:
            pickle.dump(("success", _Planted(marker)), f)
        jobs.append(job)
    status_module.wait_and_report(jobs, out, [(1, 1), (1, 2)], Profile())
    assert not marker.exists()


@pytest.mark.parametrize("where", ["run folder", "logs", "folder above"])
def test_submit_refuses_a_folder_others_can_write(tmp_path, where):
    config = write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 1, "n_do": 1}))
    above = tmp_path / "team"
    out = above / "run"
    (out / "logs").mkdir(parents=True)
    shared = {"run folder": out, "logs": out / "logs", "folder above": above}[where]
    shared.chmod(0o775 if where != "folder above" else 0o777)
    before = _tree(above)
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--wait")
    _one_line_refusal(result, str(shared), "writable by", "runs code as you")
    assert _tree(above) == before
    above.chmod(0o1777)  # sticky, as /tmp: others cannot swap what is yours
    for folder in (out, out / "logs"):
        folder.chmod(0o755)
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_new_run_folder_is_made_writable_by_its_owner_only(tmp_path):
    config = write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 1, "n_do": 1}))
    out = tmp_path / "new/run"
    script = (f"import os, sys; os.umask(0o002); sys.argv = ['seedgrid', 'submit', '--config', "
              f"{str(config)!r}, '--out', {str(out)!r}, '--wait']; "
              "from seedgrid.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in (out.parent, out, out / "logs"):
        assert folder.stat().st_mode & 0o022 == 0, folder
    assert read_shard(shard_path(out, 1, 1)).status.item() == "done"


def test_each_task_checks_its_folder_before_loading_a_pickle(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    line = guard_line(run)
    ok = subprocess.run(["bash", "-c", line + "; echo started"], capture_output=True, text=True)
    assert ok.stdout.strip() == "started", ok.stderr
    (run / "logs").chmod(0o777)  # opened up after submission, before the task started
    refused = subprocess.run(["bash", "-c", line + "; echo started"], capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "started" not in refused.stdout
    assert refused.stderr.startswith("seedgrid: error:") and "writable by others" in refused.stderr


def test_the_sbatch_script_checks_the_folder_before_submitit_starts(tmp_path, slurm):
    config = write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 1, "n_do": 1}))
    out = tmp_path / "run"
    profile = tmp_path / "dev-more.toml"  # with sbatch options of the site's own (any sbatch
    profile.write_text((REPO / "slurm/dev.toml").read_text()  # option; submitit's name too)
                       + 'slurm_additional_parameters = {comment = "seedgrid-test"}\n')
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--cluster",
                     str(profile), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    script = next((out / "logs").glob("*_submission.sh")).read_text()
    assert "#SBATCH --comment=seedgrid-test" in script  # and the real SLURM ran it
    guard, start = script.index(guard_line(out)), script.index("submitit.core._submit")
    assert guard < start


# --- what a file says is checked, not trusted ----------------------------------------------

def _trained(tmp_path, cells=((1, 1), (1, 2)), **sections):
    """A tiny run folder whose cells trained (local executor), and its config file."""
    n_do = max(do for _, do in cells)
    config = write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 1, "n_do": n_do},
                                                          **sections))
    out = tmp_path / "run"
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    return out, config


def test_shards_that_are_not_whole_shards_of_their_cell_are_damaged(tmp_path):
    import netCDF4

    out, _ = _trained(tmp_path)
    good = shard_path(out, 1, 1)
    copied = shard_path(out, 1, 2)
    copied.write_bytes(good.read_bytes())  # a shard copied under another cell's name
    status_only = shard_path(out, 1, 3)
    with netCDF4.Dataset(status_only, "w") as nc:  # nothing but a status saying done
        for dim in ("seed_wi", "seed_do"):
            nc.createDimension(dim, 1)
        nc.createVariable("status", "i1", ("seed_wi", "seed_do"))[:] = 0
    fifo = shard_path(out, 2, 2)
    os.mkfifo(fifo)
    status = _timed("status", str(out))
    assert status.returncode == 0 and "damaged 3" in status.stdout, status.stdout
    collected = _timed("collect", str(out))
    assert collected.returncode == 0, collected.stderr
    assert "damaged (wi=1, do=2)" in collected.stdout
    assert "not the one its name says" in collected.stdout
    from seedgrid.cube import open_cube

    cube = open_cube(out)
    assert cube.status.sel(seed_wi=1, seed_do=1).item() == "done"
    assert cube.status.sel(seed_wi=1, seed_do=2).item() == "missing"  # not the copy's cell


@pytest.mark.parametrize("edit", ["update 10**9", "negative update", "wrong shape",
                                  "another cell", "a fifo"])
def test_a_checkpoint_that_cannot_be_its_cells_is_set_aside_and_the_cell_trains(tmp_path, edit):
    import torch

    from seedgrid.checkpoint import Checkpointer
    from seedgrid.trainer import train_cell

    from conftest import tiny_config

    cfg = tiny_config()
    path = tmp_path / "cell.pt"
    if edit == "a fifo":
        os.mkfifo(path)
    else:
        checkpointer = Checkpointer(path)

        class Stop(Exception):
            pass

        def stop(update, _):
            if update == 3:
                checkpointer.save()
                raise Stop

        with pytest.raises(Stop):  # (another cell: (1, 2)'s checkpoint at (1, 1)'s name)
            train_cell(cfg, 1, 2 if edit == "another cell" else 1, checkpointer=checkpointer,
                       on_update=stop, log=lambda _: None)
        state = torch.load(path, weights_only=True)
        if edit == "update 10**9":
            state["update"] = 10**9
        elif edit == "negative update":
            state["update"] = -4
        elif edit == "wrong shape":
            state["model"]["classifier.weight"] = torch.zeros(3, 32)
        torch.save(state, path)
    said = []
    done = []
    thread = threading.Thread(daemon=True, target=lambda: done.append(train_cell(
        cfg, 1, 1, checkpointer=Checkpointer(path, log=said.append), log=said.append)))
    thread.start()
    thread.join(300)
    assert done, "training hung"
    shard = done[0]
    assert shard.status.item() == "done"
    assert np.isfinite(shard.train_loss.values).all()  # every update trained, from the start
    assert any("moved to cell.pt.damaged" in line for line in said), said
    whole = train_cell(cfg, 1, 1, log=lambda _: None)
    assert shard.train_loss.values.tobytes() == whole.train_loss.values.tobytes()


def test_records_of_the_wrong_shape_are_set_aside_and_never_widen_the_grid(tmp_path):
    out, _ = _trained(tmp_path)
    (out / "jobs.json").write_text(json.dumps({"submissions": [{"arrays": 5}]}))
    plan = {"started": 2, "fraction": 0.5, "continued": 1, "phase": 1, "source": "given",
            "phase_one": [[1, 1], [7, 7]], "continued_cells": None}
    (out / "early_stop.json").write_text(json.dumps(plan))
    status = _timed("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "jobs.json is not a record of submissions" in status.stderr
    assert "cell (wi=7, do=7) is not of the frozen grid" in status.stderr
    assert (out / "jobs.json.damaged").exists() and (out / "early_stop.json.damaged").exists()
    again = _timed("submit", "--resume", str(out), "--cluster", "local", "--wait")
    assert again.returncode == 0 and "all 2 cells have shards" in again.stdout, again.stdout
    assert not shard_path(out, 7, 7).exists()
    from seedgrid.rundir import load_run_config

    grid = load_run_config(out).grid
    assert grid.seeds_wi == (1,) and grid.seeds_do == (1, 2)  # not widened to (7, 7)


def test_what_a_marker_says_reaches_the_terminal_escaped(tmp_path):
    out, _ = _trained(tmp_path)
    shard_path(out, 1, 2).unlink()
    marker = out / "running/wi1_do2.json"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid(), "host": "evil\x1b]2;pwned\x07",
                                  "gpu": "\x1b[31m", "started": 0}))
    jobs = json.loads((out / "jobs.json").read_text())
    jobs["submissions"][-1]["host"] = socket.gethostname()
    jobs["submissions"][-1]["arrays"][0]["task_ids"] = [str(os.getpid())]
    (out / "jobs.json").write_text(json.dumps(jobs))
    status = run_cli("status", str(out))
    assert "\x1b" not in status.stdout and "\\x1b]2;pwned\\x07" in status.stdout, status.stdout


# --- one trainer per cell --------------------------------------------------------------------

LONG = {"task": {"train_size": 400}, "train": {"batch_size": 8, "epochs": 6}}


def _started(log_text: str) -> dict:
    """How many times each cell started training, from the lines its trainer logs first."""
    import re

    counts: dict = {}
    for wi, do in re.findall(r"\[wi=(\d+) do=(\d+)\] mr: ", log_text):
        counts[int(wi), int(do)] = counts.get((int(wi), int(do)), 0) + 1
    return counts


def _logs(out) -> str:
    return "".join(p.read_text(errors="replace") for p in (out / "logs").glob("*_log.err"))


def test_a_second_run_of_a_training_cell_leaves_it_to_the_first(tmp_path):
    from conftest import wait_until

    config = write_toml(tmp_path / "long.toml", tiny_raw(**LONG))
    out = tmp_path / "run"
    args = [sys.executable, "-m", "seedgrid", "run", "--config", str(config), "--wi", "1",
            "--do", "1", "--out", str(out)]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    wait_until(lambda: (out / "running/wi1_do1.json").exists(), "the first run to claim it")
    second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and "another process is training it" in second.stderr
    out_first, err_first = first.communicate(timeout=600)
    assert first.returncode == 0, err_first
    assert read_shard(shard_path(out, 1, 1)).status.item() == "done"
    assert not (out / "running/wi1_do1.json").exists()


def test_resume_while_tasks_run_and_two_submits_at_once_train_each_cell_once(tmp_path):
    from conftest import wait_until

    config = write_toml(tmp_path / "long.toml", tiny_raw(grid={"n_wi": 1, "n_do": 3}, **LONG))
    out = tmp_path / "run"
    submits = [subprocess.Popen([sys.executable, "-m", "seedgrid", "submit", "--config",
                                 str(config), "--out", str(out), "--wait"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]  # two submits at once
    wait_until(lambda: list((out / "running").glob("*.json")), "a cell to train")
    resumed = run_cli("submit", "--resume", str(out), "--cluster", "local", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "still training or queued" in resumed.stdout
    for s in submits:
        s.communicate(timeout=900)
    assert {c: read_shard(shard_path(out, *c)).status.item()
            for c in ((1, 1), (1, 2), (1, 3))} == dict.fromkeys(((1, 1), (1, 2), (1, 3)), "done")
    assert _started(_logs(out)) == dict.fromkeys(((1, 1), (1, 2), (1, 3)), 1)


# --- the config and data a cell trained on are the run's ---------------------------------------

def test_resume_after_config_toml_was_edited_is_refused_naming_the_change(tmp_path):
    out, _ = _trained(tmp_path)
    shard_path(out, 1, 2).unlink()
    frozen = out / "config.toml"
    frozen.write_text(frozen.read_text().replace("learning_rate = 0.001", "learning_rate = 0.5"))
    before = _tree(out)
    result = run_cli("submit", "--resume", str(out), "--cluster", "local")
    _one_line_refusal(result, "was edited since", "[train] learning_rate 0.001 -> 0.5")
    assert _tree(out) == before


def test_data_changed_during_a_grid_is_refused_at_resume_and_never_merged(tmp_path):
    from test_tasks import _pairs

    rng = np.random.default_rng(0)
    files = {split: tmp_path / f"{split}.csv" for split in ("train", "validation")}
    _pairs(40, rng).to_csv(files["train"], index=False)
    _pairs(12, rng).to_csv(files["validation"], index=False)
    config = write_toml(tmp_path / "rte.toml", tiny_raw(
        task={"name": "rte", "train_size": 0, "validation_size": 0,
              "data_files": {k: str(v) for k, v in files.items()}},
        grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "run"
    first = run_cli("run", "--config", str(config), "--wi", "1", "--do", "1", "--out", str(out))
    assert first.returncode == 0, first.stderr
    edited = files["train"].read_text().splitlines()
    edited[1] = edited[1][:-1] + ("0" if edited[1].endswith("1") else "1")  # one label changed
    files["train"].write_text("\n".join(edited) + "\n")
    resumed = run_cli("submit", "--resume", str(out), "--cluster", "local")
    _one_line_refusal(resumed, f"the train data ({files['train']}) changed since")
    second = run_cli("run", "--config", str(config), "--wi", "1", "--do", "2", "--out", str(out))
    _one_line_refusal(second, f"the train data ({files['train']}) changed since")
    other = tmp_path / "other"  # the cell trained elsewhere on the new data, its shard moved in
    third = run_cli("run", "--config", str(config), "--wi", "1", "--do", "2", "--out", str(other))
    assert third.returncode == 0, third.stderr
    shard_path(other, 1, 2).rename(shard_path(out, 1, 2))
    collected = run_cli("collect", str(out))
    _one_line_refusal(collected, "was trained on other train data", "changed during the grid")
    assert not (out / "cube.nc").exists()


def test_hints_are_shell_quoted_so_a_pasted_one_runs_one_command(tmp_path, tiny_toml):
    import shlex

    out = tmp_path / "sp ace;echo X"
    result = run_cli("submit", "--config", str(tiny_toml(grid={"n_wi": 1, "n_do": 1})),
                     "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    (hint,) = [ln for ln in result.stderr.splitlines() if ln.startswith("watch it: ")]
    assert shlex.split(hint.removeprefix("watch it: ")) == [
        "python", "-m", "seedgrid", "status", str(out), "--cluster", "local"]


def test_a_link_loop_as_output_and_a_cube_with_a_repeated_seed_are_one_line(tmp_path):
    import xarray as xr

    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    for args, option in ((["report", str(run), "--out"], "--out"),
                         (["status", str(run), "--json"], "--json"),
                         (["export", str(run), "--to"], "--to")):
        target = tmp_path / ("loop_a" if option != "--to" else "loop_a")
        _one_line_refusal(run_cli(*args, str(target)), option, "loop_a")
    with xr.open_dataset(run / "cube.nc") as ds:
        twice = ds.load().assign_coords(seed_wi=[1, 1])
    twice.to_netcdf(tmp_path / "twice.nc")
    _one_line_refusal(run_cli("report", str(tmp_path / "twice.nc")), "seed_wi 1 is given twice")
