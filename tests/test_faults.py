"""Damaged and foreign files, hostile checkpoints, kills and a full disk: no command crashes on
them, no cell is blocked forever, nothing planted runs, and nothing finished is lost."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from seedgrid.cli import main
from seedgrid.cube import collect, open_cube
from seedgrid.rundir import shard_path
from seedgrid.files import DiskFullError
from seedgrid.store import read_shard, write_atomic

from conftest import REPO, run_cli, tiny_raw, wait_until, write_toml
from test_cube import _run, _shard


class _Planted:
    """A pickle that runs a shell command when it is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_cell(tmp_path, out, *extra):
    config = write_toml(tmp_path / "tiny.toml", tiny_raw())
    return run_cli("run", "--config", str(config), "--wi", "1", "--do", "1", "--out", str(out),
                   *extra)


@pytest.mark.parametrize("damage", ["planted code", "truncated", "not a checkpoint",
                                    "missing keys"])
def test_a_hostile_or_damaged_checkpoint_is_set_aside_and_the_cell_trains(tmp_path, damage):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    path = out / "checkpoints/wi1_do1.pt"
    path.parent.mkdir(parents=True)
    if damage == "planted code":
        torch.save({"model": _Planted(marker)}, path)
    elif damage == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}, "update": 3}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "not a checkpoint":
        path.write_bytes(b"hello")
    else:
        torch.save({"model": {}, "update": 3}, path)
    stale = path.with_name(f".{path.name}.999999.tmp")  # a save that was killed
    stale.write_bytes(b"x" * 1000)
    result = _one_cell(tmp_path, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists()  # the planted command never ran
    assert "is damaged" in result.stdout and "the cell starts from the beginning" in result.stdout
    assert (out / "checkpoints/wi1_do1.pt.damaged").exists() and not stale.exists()
    assert read_shard(out / "shards/wi1_do1.nc").status.item() == "done"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_bitwise(tmp_path, signum):
    raw = tiny_raw(train={"epochs": 12})  # 60 updates: time to be signalled mid-training
    config = write_toml(tmp_path / "long.toml", raw)
    args = ["run", "--config", str(config), "--wi", "1", "--do", "1"]
    twin = run_cli(*args, "--out", str(tmp_path / "twin"))
    assert twin.returncode == 0, twin.stderr
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "seedgrid", *args, "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the first evaluation during training (progress: stderr)
        if " update " in line:
            break
    proc.send_signal(signum)
    stderr = line + proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signum, stderr + proc.stdout.read()
    assert f"seedgrid: warning: {signal.Signals(signum).name}: saved" in stderr
    assert proc.stdout.read() == ""
    saved = torch.load(out / "checkpoints/wi1_do1.pt", weights_only=True)
    assert 0 < saved["update"] < 60
    again = run_cli(*args, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert f"at update {saved['update']}/60" in again.stderr
    a, b = read_shard(out / "shards/wi1_do1.nc"), read_shard(tmp_path / "twin/shards/wi1_do1.nc")
    for name in ("logits", "train_loss"):
        assert a[name].values.tobytes() == b[name].values.tobytes()


def test_damaged_shards_jobs_and_policy_files_never_crash_status_or_collect(tmp_path, capsys):
    run, cfg = _run(tmp_path, [(1, 1), (1, 2), (2, 1)], n=2)
    good = shard_path(run, 1, 1).read_bytes()
    shard_path(run, 1, 2).write_bytes(good[:400])  # cut short
    (run / "shards/wi1_do1.bak.nc").write_bytes(good)  # a copy a user made: not a shard
    shard_path(run, 9, 9).write_bytes(b"garbage")  # unreadable and outside the grid
    (run / "jobs.json").write_text('{"submissions": [')  # cut short
    (run / "early_stop.json").write_text("{not json")
    main(["status", str(run)])
    captured = capsys.readouterr()
    assert "damaged 2" in captured.out and "? damaged" in captured.out
    assert "submit --resume" in captured.out
    assert "jobs.json was damaged" in captured.err and "early_stop.json was damaged" in captured.err
    assert (run / "jobs.json.damaged").exists() and (run / "early_stop.json.damaged").exists()
    main(["collect", str(run)])
    out = capsys.readouterr().out
    assert "done 2" in out and "damaged (wi=1, do=2)" in out and "damaged (wi=9, do=9)" in out
    ds = open_cube(run)
    assert ds.sizes["seed_wi"] == ds.sizes["seed_do"] == 2  # the unreadable 9,9 adds no row


def test_a_damaged_shard_is_set_aside_and_trained_again_by_resume(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "grid"
    first = run_cli("submit", "--config", str(config), "--out", str(out), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    damaged = shard_path(out, 1, 2)
    damaged.write_bytes(damaged.read_bytes()[:300])
    status = run_cli("status", str(out))
    assert "damaged 1" in status.stdout and "--cluster local" in status.stdout
    again = run_cli("submit", "--resume", str(out), "--cluster", "local", "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "submitted 1 of 2 cells" in again.stdout and "done 2" in again.stdout
    assert damaged.with_name(damaged.name + ".damaged").exists()


def test_status_of_a_run_folder_without_a_grid(tmp_path):
    raw = tiny_raw()
    raw.pop("grid")
    out = tmp_path / "one"
    result = run_cli("run", "--config", str(write_toml(tmp_path / "nogrid.toml", raw)),
                     "--wi", "3", "--do", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    status = run_cli("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "1 x 1 cells" in status.stdout and "done 1" in status.stdout


def _submit_in_background(tmp_path, *args):
    """``submit`` with the local executor, its output in a file: the local tasks inherit the
    command's output, so capturing it in a pipe would wait for the tasks to end."""
    with open(tmp_path / "submit.log", "w") as log:
        result = subprocess.run([sys.executable, "-m", "seedgrid", "submit", *args], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert result.returncode == 0, (tmp_path / "submit.log").read_text()


def test_status_tells_running_local_cells_from_missing_ones(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(train={"epochs": 30},
                                                         grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "grid"
    _submit_in_background(tmp_path, "--config", str(config), "--out", str(out))
    status = run_cli("status", str(out)).stdout
    assert "missing 0" in status and "resubmit" not in status, status
    assert "running 1  pending 1" in status or "pending 2" in status, status
    # the running cell says where it trains (this machine: no GPU, so the CPU)
    where = f": on {socket.gethostname()}, CPU"
    wait_until(lambda: "running 1" in (text := run_cli("status", str(out)).stdout)
               and where in text.split("running (wi=1, do=")[-1], "a running cell", 300)
    wait_until(lambda: "done 2" in run_cli("status", str(out)).stdout, "both cells", 600)


def test_a_killed_task_is_failed_with_its_error_line(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(train={"epochs": 30}, grid={"n_wi": 1, "n_do": 1}))
    out = tmp_path / "grid"
    _submit_in_background(tmp_path, "--config", str(config), "--out", str(out))
    task = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"][0]["task_ids"][0]
    marker = out / "running/wi1_do1.json"
    wait_until(marker.exists, "the cell to start", 120)
    os.kill(json.loads(marker.read_text())["pid"], signal.SIGKILL)  # the process training it
    wait_until(lambda: "failed 1" in run_cli("status", str(out)).stdout, "the failed state", 60)
    status = run_cli("status", str(out)).stdout
    assert f"process {task}) ended without its shard" in status


def test_wait_interrupted_says_what_keeps_running(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "grid"
    proc = subprocess.Popen([sys.executable, "-m", "seedgrid", "submit", "--config", str(config),
                             "--out", str(out), "--wait"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (out / "jobs.json").exists(), "the submission", 120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "stopped waiting; 1 of 1 task(s) keep running" in err and "status" in err
    wait_until(lambda: "done 2" in run_cli("status", str(out)).stdout, "the task to finish", 300)


def test_ctrl_c_during_a_local_wait_saves_the_tasks_cells_and_says_so(tmp_path):
    # a Ctrl-C in a terminal reaches the whole foreground process group: the local tasks too
    config = write_toml(tmp_path / "long.toml", tiny_raw(
        grid={"n_wi": 1, "n_do": 2}, task={"train_size": 400}, train={"epochs": 4}))
    out = tmp_path / "grid"
    proc = subprocess.Popen([sys.executable, "-m", "seedgrid", "submit", "--config", str(config),
                             "--out", str(out), "--wait"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "logs"
    wait_until(lambda: any("update 50/200" in p.read_text(errors="replace")
                           for p in log.glob("*_log.err")), "the first cell to evaluate", 300)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopped waiting; 0 of 1 task(s) keep running, 1 ended (local tasks take the " \
           "Ctrl-C too: their cells saved checkpoints)" in err, err
    saved = torch.load(out / "checkpoints/wi1_do1.pt", weights_only=True)["update"]
    assert 50 <= saved < 200
    again = run_cli("submit", "--resume", str(out), "--cluster", "local", "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    said = "".join(p.read_text() for p in log.glob("*_log.err"))
    assert f"resumed from {out / 'checkpoints/wi1_do1.pt'} at update {saved}/200" in said


def test_every_cell_diverged_is_exit_1_and_still_reported(tmp_path):
    config = write_toml(tmp_path / "bad.toml", tiny_raw(train={"learning_rate": 1e8,
                                                               "max_grad_norm": 0.0}))
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "diverged 4" in result.stdout
    assert run_cli("collect", str(out)).returncode == 0
    report = run_cli("report", str(out), "--samples", "100", "--no-figures")
    assert report.returncode == 0, report.stderr
    r = json.loads((out / "report/report.json").read_text())["runs"]["grid"]
    assert r["macro"]["end"]["n"] == 4 and r["status"]["diverged"] == 4
    assert r["macro"]["end"]["mean"] == pytest.approx(open_cube(out).seedgrid.majority_baseline())


def test_local_tasks_use_their_share_of_the_cores(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", str(config), "--out", str(out), "--parallel", "2",
                     "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = max(1, min(2, (os.cpu_count() or 1) // 2))  # local profile: cpus_per_task 2
    for do in (1, 2):
        assert read_shard(shard_path(out, 1, do)).attrs["torch_threads"] == expected


def test_concurrent_submissions_keep_every_record(tmp_path):
    run, cfg = _run(tmp_path, [], n=2)
    code = ("import sys; from pathlib import Path; from seedgrid.grid import jobs; "
            "from seedgrid.grid.profile import Profile; from seedgrid.config import load_config; "
            "run = Path(sys.argv[1]); cfg = load_config(run / 'config.toml')\n"
            "for i in range(10): jobs.record(run, cfg, Profile(), "
            "[{'job_id': sys.argv[2] + '.' + str(i), 'task_ids': [], 'tasks': []}])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(run), str(k)], cwd=REPO)
             for k in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    ids = [a["job_id"] for s in json.loads((run / "jobs.json").read_text())["submissions"]
           for a in s["arrays"]]
    assert sorted(ids) == sorted(f"{k}.{i}" for k in range(4) for i in range(10))


def test_a_broken_pipe_and_an_unexpected_error(monkeypatch, capsys):
    piped = subprocess.run(f"{sys.executable} -m seedgrid presets | head -1", shell=True,
                           cwd=REPO, capture_output=True, text=True)
    assert piped.stderr == "" and len(piped.stdout.splitlines()) == 1
    import seedgrid.cli as cli

    def boom(args):
        raise RuntimeError("something inside broke")

    monkeypatch.setitem(cli.COMMANDS, "presets", (boom, *cli.COMMANDS["presets"][1:]))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["presets"])
    assert exit_.value.code == 3  # never 0, 1 or 2: those are verdicts and bad input
    assert "unexpected error (RuntimeError: something inside broke)" in capsys.readouterr().err


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs (root only); skipped where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the disk-full tests must run: {made.stderr.decode()}")
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # a file still open: lazily


def _fill(mount):
    """Write a filler file until the file system is full."""
    f = open(mount / "filler", "wb", buffering=0)
    try:
        while True:
            f.write(b"\0" * 4096)
    except OSError:
        pass
    finally:
        f.close()


def test_a_full_disk_is_named_and_leaves_no_partial_file(full_disk, tmp_path, capsys):
    run, cfg = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    big = _shard(cfg, 1, 1, np.random.default_rng(0)).pad(example=(0, 200_000), mode="edge")
    with pytest.raises(DiskFullError, match="no space left on the device of"):
        write_atomic(big, full_disk / "shards" / "wi1_do1.nc")
    assert not list((full_disk / "shards").iterdir())
    collect(run)
    config = tmp_path / "tiny.toml"
    config.write_text(cfg.to_toml())
    _fill(full_disk)
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--to", str(full_disk / "table.csv")])
    assert exit_.value.code == 3
    assert "no space left on the device" in capsys.readouterr().err
    for argv in (["status", str(run), "--json", str(full_disk / "status.json")],
                 ["report", str(run), "--out", str(full_disk / "report"), "--samples", "10"],
                 ["submit", "--config", str(config), "--cluster", "local", "--out",
                  str(full_disk / "run")],
                 ["regress", "--baseline", str(run), "--candidate", str(run), "--history",
                  str(full_disk / "h.jsonl")]):
        with pytest.raises(SystemExit) as exit_:  # every write the disk refuses: said so
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 3 and "no space left on the device" in err, err
        assert "please report" not in err and "Traceback" not in err
    assert [p.name for p in full_disk.iterdir()] == ["filler", "shards"]


def test_a_periodic_checkpoint_that_cannot_be_written_does_not_kill_the_cell(full_disk):
    from seedgrid.checkpoint import Checkpointer
    from seedgrid.trainer import train_cell

    from conftest import tiny_config

    _fill(full_disk)
    said = []
    cfg = tiny_config(runtime={"checkpoint_every_evals": 1})
    shard = train_cell(cfg, 1, 1, log=said.append,
                       checkpointer=Checkpointer(full_disk / "wi1_do1.pt", log=said.append))
    assert shard.status.item() == "done"
    assert any("could not write checkpoint" in line for line in said)


def test_an_early_stop_run_recovers_phase_one_and_never_trains_unused_cells(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(grid={"n_wi": 2, "n_do": 2}))
    out = tmp_path / "es"
    _submit_in_background(tmp_path, "--config", str(config), "--out", str(out),
                          "--early-stop", "started=3,fraction=0.5,continue=1")
    phase_one = [(1, 1), (1, 2), (2, 1)]
    task = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"][0]["task_ids"][0]
    wait_until(lambda: not _alive(int(task)), "the phase-one task to end", 300)
    assert "phase one has ended" in run_cli("status", str(out)).stdout
    shard_path(out, 1, 2).unlink()  # one phase-one cell lost (as if its task had failed)
    status = run_cli("status", str(out)).stdout
    assert "stopped 2" in status and "unused 1" in status and "failed 1" in status, status
    assert f"python -m seedgrid continue {out} --cluster local" in status
    resumed = run_cli("submit", "--resume", str(out), "--cluster", "local", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "submitted 1 of 4 cells" in resumed.stdout  # only the lost phase-one cell
    assert "done 1" in resumed.stdout and "stopped 2" in resumed.stdout
    assert not shard_path(out, 2, 2).exists()  # outside phase one: never trained
    assert sorted(c for c in phase_one if shard_path(out, *c).exists()) == phase_one


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_continue_says_which_cells_start_again_without_their_checkpoint(tmp_path):
    config = write_toml(tmp_path / "grid.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}))
    out = tmp_path / "es"
    _submit_in_background(tmp_path, "--config", str(config), "--out", str(out),
                          "--early-stop", "started=2,fraction=0.5,continue=2")
    wait_until(lambda: "phase one has ended" in run_cli("status", str(out)).stdout,
               "phase one to end", 300)
    (out / "checkpoints/wi1_do2.pt").unlink()
    result = run_cli("continue", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(1 from their checkpoints; 1 from the beginning, their checkpoints are gone: (1,2))" \
        in result.stdout
    assert "done 2" in result.stdout


def test_a_damaged_regress_history_never_stops_the_gate(tmp_path, capsys):
    from test_compare import _cube

    base = _cube(tmp_path / "base", 0.75, seed=0)
    history = tmp_path / "h.jsonl"
    history.write_text('{"date": "x", "mean_candidate": NaN\n{"cut short\n'
                       '{"date": "y", "mean_candidate": NaN, "difference": 1, "p_worse": 1, "con_candidate": 1, "p_less_consistent": 1}\n')
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_:
            main(["regress", "--baseline", str(base), "--candidate", str(base),
                  "--history", str(history)])
        assert exit_.value.code == 0
    assert "3 line(s) of" in capsys.readouterr().err
    assert len(history.read_text().splitlines()) == 2  # the two good nights
    assert (tmp_path / "h.jsonl.damaged").exists() and (tmp_path / "h.md").exists()
