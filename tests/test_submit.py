"""submit / status / --resume against the real dev SLURM (slurm/) and the local executor."""

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest

from seedgrid.rundir import task_log
from seedgrid.store import read_shard

from conftest import REPO, queued, run_cli, sacct_states, wait_until

DEV = str(REPO / "slurm/dev.toml")


def _grid_toml(tiny_toml, n_wi, n_do):
    return str(tiny_toml(grid={"n_wi": n_wi, "n_do": n_do}))


def _sacct_tasks(job_id):
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Start,End", "-j", job_id],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def _all_completed(job_id, n):
    """sacct's rows of the job once it shows ``n`` tasks all COMPLETED (accounting lags)."""
    rows = _sacct_tasks(job_id)
    return rows if len(rows) == n and all(r[1] == "COMPLETED" for r in rows) else None


def _max_overlap(rows):
    """Most tasks running at the same time, from sacct's Start/End."""
    spans = [(datetime.fromisoformat(s), datetime.fromisoformat(e)) for _, _, s, e in rows]
    return max(sum(a <= t < b for a, b in spans) for t, _ in spans)


def test_a_4x4_grid_as_8_tasks_with_at_most_4_at_once(slurm, tmp_path, tiny_toml):
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", _grid_toml(tiny_toml, 4, 4), "--cluster", DEV,
                     "--array", "8", "--parallel", "4", "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 task(s) of up to 2 cell(s), at most 4 at once" in result.stdout
    assert "done 16" in result.stdout
    shards = sorted((out / "shards").glob("*.nc"))
    assert len(shards) == 16
    for path in shards:
        assert read_shard(path).status.item() == "done"
    jobs = json.loads((out / "jobs.json").read_text())
    (array,) = jobs["submissions"][0]["arrays"]
    assert [len(t) for t in array["tasks"]] == [2] * 8
    rows = wait_until(lambda: _all_completed(array["job_id"], 8), "8 COMPLETED tasks in sacct")
    assert _max_overlap(rows) <= 4

    again = run_cli("submit", "--resume", str(out), "--cluster", DEV)
    assert "all 16 cells have shards; nothing to submit" in again.stdout


def test_cancelled_tasks_are_shown_with_why_and_resume_reruns_only_them(slurm, tmp_path, tiny_toml):
    out = tmp_path / "grid"
    config = tiny_toml(grid={"n_wi": 1, "n_do": 3}, train={"epochs": 20})  # 100 updates a cell
    result = run_cli("submit", "--config", str(config), "--cluster", DEV, "--parallel", "1",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    job = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"][0]["job_id"]
    subprocess.run(["scancel", f"{job}_2"], check=True)  # still pending: never starts
    log = task_log(out, f"{job}_0")  # its stderr: progress
    # cancel task 0 while it trains: once its first evaluation is logged, not merely RUNNING
    # (a SIGTERM during submitit's start-up is ignored, and a tiny cell then just finishes)
    wait_until(lambda: log.exists() and " update " in log.read_text(), "task 0 to train")
    subprocess.run(["scancel", f"{job}_0"], check=True)
    # wait on states, not on time: the queue empty, and accounting caught up with both ends
    wait_until(lambda: not queued(job), "the array to leave the queue")
    wait_until(lambda: sacct_states(job).get(f"{job}_0") == "CANCELLED"
               and sacct_states(job).get(f"{job}_1") == "COMPLETED",
               "sacct to record task 0 CANCELLED and task 1 COMPLETED")

    status = run_cli("status", str(out), "--cluster", DEV)
    assert status.returncode == 0, status.stderr
    text = status.stdout
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((out / "logs").glob("*_log.*")))
    assert "done 1" in text and "failed 1" in text and "missing 1" in text, text + logs
    from test_readme import assert_shapes, example

    assert_shapes(example("runs/tiny: config"), text)  # docs/cluster.md shows this status
    assert f"failed (wi=1, do=1) task {job}_0: CANCELLED; log: " in text
    assert "no log" not in text.split(f"task {job}_0:")[1].splitlines()[0]
    assert f"missing (wi=1, do=3) task {job}_2: unknown to sacct" in text
    assert f"python -m seedgrid submit --resume {out} --cluster {DEV}" in text
    done_before = (out / "shards/wi1_do2.nc").stat().st_mtime_ns

    resumed = run_cli("submit", "--resume", str(out), "--cluster", DEV, "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "submitted 2 of 3 cells" in resumed.stdout and "done 3" in resumed.stdout
    last = json.loads((out / "jobs.json").read_text())["submissions"][-1]["arrays"][0]["tasks"]
    assert sorted(c for t in last for c in t) == [[1, 1], [1, 3]]
    assert (out / "shards/wi1_do2.nc").stat().st_mtime_ns == done_before  # never trained again


def test_local_executor_runs_the_grid_without_slurm(tmp_path, tiny_toml):
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", _grid_toml(tiny_toml, 1, 2), "--cluster", "local",
                     "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 task(s) of up to 2 cell(s)" in result.stdout
    assert len(list((out / "shards").glob("*.nc"))) == 2


@pytest.mark.parametrize("args, message", [
    (["--array", "0"], "--array 0 is out of range: give 1 to"),
    (["--array", "5"], "--array 5 must be between 1 and the 4 cells to run"),
    (["--parallel", "0"], "--parallel 0 is out of range: give 1 to"),
    (["--cluster", "nosuchsite"], "unknown cluster profile 'nosuchsite': choose one of"),
])
def test_bad_submit_input_submits_nothing(tmp_path, tiny_toml, args, message):
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", _grid_toml(tiny_toml, 2, 2), "--out", str(out),
                     *(["--cluster", DEV] if "--cluster" not in args else []), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (out / "jobs.json").exists() and not (out / "shards").exists()


def test_resume_with_a_changed_config_is_refused(tmp_path, tiny_toml):
    from seedgrid.config import load_config
    from seedgrid.rundir import write_config

    out = tmp_path / "grid"
    write_config(out, load_config(_grid_toml(tiny_toml, 2, 2)))  # as submit froze it
    changed = tiny_toml("changed.toml", train={"learning_rate": 0.5})
    result = run_cli("submit", "--resume", str(out), "--config", str(changed), "--cluster", DEV)
    assert result.returncode == 2 and "holds cells of config" in result.stderr
    assert "[train] learning_rate 0.001 -> 0.5" in result.stderr
    assert not (out / "jobs.json").exists()


def test_a_slurm_profile_without_sbatch_suggests_the_local_cluster(tmp_path, tiny_toml):
    env = dict(os.environ, PATH=str(tmp_path))  # no sbatch anywhere on PATH
    result = subprocess.run([sys.executable, "-m", "seedgrid", "submit", "--config",
                     _grid_toml(tiny_toml, 1, 1), "--cluster", DEV, "--out", str(tmp_path / "g")],
                    cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "sbatch is not on PATH: use --cluster local" in result.stderr
    assert not (tmp_path / "g").exists()  # nothing written


def _profile(tmp_path, **fields):
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in
             {"executor": "slurm", "partition": "debug", "cpus_per_task": 1, "mem_gb": 1,
              "time_min": 10, **fields}.items()]
    path = tmp_path / "profile.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_two_processes_train_one_cell_inside_one_slurm_task(slurm, tmp_path, tiny_toml):
    from seedgrid.trainer import train_cell

    from conftest import tiny_config

    out = tmp_path / "ddp"
    config = tiny_toml(grid={"n_wi": 1, "n_do": 1}, train={"dropout": 0.0})
    result = run_cli("submit", "--config", str(config), "--cluster",
                     _profile(tmp_path, processes_per_cell=2), "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    shard = read_shard(out / "shards/wi1_do1.nc")
    assert shard.attrs["num_processes"] == 2
    alone = train_cell(tiny_config(train={"dropout": 0.0}), 1, 1, log=lambda _: None)
    # the same global batches: the same losses up to the order of float sums
    import numpy as np
    np.testing.assert_allclose(shard.train_loss.values, alone.train_loss.values, rtol=1e-4,
                               atol=1e-5)


def test_one_fake_gpu_per_cell_runs_two_cells_at_once(slurm, tmp_path, tiny_toml):
    out = tmp_path / "gpus"
    result = run_cli("submit", "--config", _grid_toml(tiny_toml, 1, 4), "--cluster",
                     _profile(tmp_path, gpus_per_cell=1), "--parallel", "4", "--out", str(out),
                     "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    job = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"][0]["job_id"]
    rows = wait_until(lambda: _all_completed(job, 4), "4 COMPLETED tasks in sacct")
    assert _max_overlap(rows) <= 2  # the node has two GPUs
    tres = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "AllocTRES", "-j", job],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(tres) == 4 and all("gres/gpu=1" in t for t in tres)


def test_arrays_past_max_array_size_are_split(slurm, tmp_path, tiny_toml):
    out = tmp_path / "split"
    result = run_cli("submit", "--config", _grid_toml(tiny_toml, 1, 5), "--cluster",
                     _profile(tmp_path, max_array_size=2), "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    arrays = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"]
    assert [len(a["tasks"]) for a in arrays] == [2, 2, 1]
    assert len({a["job_id"] for a in arrays}) == 3 and "done 5" in result.stdout


def test_array_n_squared_without_a_grid_means_seeds_1_to_n(tmp_path):
    from conftest import tiny_raw, write_toml
    from seedgrid.config import load_config

    raw = tiny_raw()
    del raw["grid"]
    config = str(write_toml(tmp_path / "nogrid.toml", raw))
    bad = run_cli("submit", "--config", config, "--array", "5", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "has no [grid] and --array 5 is not a square" in bad.stderr
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", config, "--array", "4", "--cluster", "local",
                     "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    frozen = load_config(out / "config.toml")
    assert frozen.grid.seeds_wi == frozen.grid.seeds_do == (1, 2)
    assert len(list((out / "shards").glob("*.nc"))) == 4


def test_a_profile_that_sbatch_refuses_is_one_line_and_leaves_nothing(slurm, tmp_path, tiny_toml):
    out = tmp_path / "refused"
    result = run_cli("submit", "--config", _grid_toml(tiny_toml, 1, 2), "--cluster",
                     _profile(tmp_path, partition="nosuchpartition"), "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "sbatch refused the array" in result.stderr and "invalid partition" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("command", [["status"], ["collect"], ["submit", "--resume"]])
def test_a_folder_that_is_not_a_run_is_named(tmp_path, command):
    result = run_cli(*command, str(tmp_path))
    assert result.returncode == 2
    assert f"'{tmp_path}' is not a run folder (no config.toml)" in result.stderr


def _submit_with_gpus(gpus: str, *args: str) -> subprocess.CompletedProcess:
    """``submit`` on this machine as if it had the GPUs ``gpus`` (CUDA_VISIBLE_DEVICES)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}
    return subprocess.run([sys.executable, "-m", "seedgrid", "submit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_local_executor_gives_each_task_its_gpu_and_shards_record_it(tmp_path, tiny_toml):
    """This machine has no GPU: fake ones (CUDA_VISIBLE_DEVICES) must reach the tasks, one per
    task in turn (submitit's local executor alone hides every GPU), and each shard records the
    GPU it trained with and when it started; the cube keeps both per cell."""
    config = tiny_toml(grid={"n_wi": 2, "n_do": 2})
    out = tmp_path / "gpus"
    result = _submit_with_gpus("3,5", "--config", str(config), "--cluster", "local",
                               "--parallel", "2", "--out", str(out), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    (array,) = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"]
    assert len(array["tasks"]) == 2
    for task, gpu in zip(array["tasks"], ("3", "5")):
        for wi, do in task:
            attrs = read_shard(out / f"shards/wi{wi}_do{do}.nc").attrs
            assert attrs["gpu"] == gpu and attrs["device"] == "cpu"  # (a CPU torch here)
            assert attrs["started"] <= attrs["created"]
    assert "torch sees no CUDA device" in task_log(out, array["task_ids"][0]).read_text()
    assert run_cli("collect", str(out)).returncode == 0
    import seedgrid

    cube = seedgrid.open_cube(out)
    assert sorted(set(cube["gpu"].values.ravel().tolist())) == ["3", "5"]
    none = _submit_with_gpus("", "--config", str(config), "--cluster", "local", "--out",
                             str(tmp_path / "none"), "--wait")  # set but empty: no GPU
    assert none.returncode == 0, none.stdout + none.stderr
    assert read_shard(tmp_path / "none/shards/wi1_do1.nc").attrs["gpu"] == ""


def test_more_gpus_per_cell_than_the_machine_shows_is_bad_input(tmp_path, tiny_toml):
    profile = tmp_path / "twogpus.toml"
    profile.write_text('executor = "local"\ngpus_per_cell = 2\n')
    out = tmp_path / "run"
    result = _submit_with_gpus("0", "--config", str(tiny_toml()), "--cluster", str(profile),
                               "--out", str(out))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "gpus_per_cell = 2, but this machine shows 1 GPU(s)" in result.stderr
    assert not out.exists()
