"""Several cells at once in one array task (cells_per_gpu, submit --pack K): each cell in its own
process on the task's GPU, side by side; a crashed cell leaves its neighbour's shard intact;
on the dev SLURM (two fake GPUs as gres), a preempted packed task checkpoints every running
cell and the requeued task resumes them."""

import json
import os
import signal
import subprocess
import sys

import numpy as np

from seedgrid.rundir import task_log
from seedgrid.store import read_shard

from conftest import REPO, run_cli, wait_until

DEV_PROFILE = 'executor = "slurm"\npartition = "debug"\ncpus_per_task = 2\nmem_gb = 2\n' \
              'time_min = 30\ngpus_per_cell = 1\ncells_per_gpu = 2\n'


def _submit(gpus, *args, wait=True):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}
    command = [sys.executable, "-m", "seedgrid", "submit", *args] + (["--wait"] if wait else [])
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _interval(path):
    attrs = read_shard(path).attrs
    return attrs["started"], attrs["created"], attrs["gpu"]


def test_packed_cells_train_side_by_side_on_the_tasks_gpu_as_lone_cells_do(tmp_path, tiny_toml):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 2}, train={"epochs": 12})
    out = tmp_path / "packed"
    result = _submit("7", "--config", str(config), "--cluster", "local", "--pack", "2",
                     "--parallel", "2", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 task(s) of up to 2 cell(s)" in result.stdout
    (array,) = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"]
    for task in array["tasks"]:
        (s1, c1, g1), (s2, c2, g2) = (_interval(out / f"shards/wi{wi}_do{do}.nc")
                                      for wi, do in task)
        assert s1 < c2 and s2 < c1, (task, s1, c1, s2, c2)  # they trained at the same time
        assert g1 == g2 == "7"
    alone = run_cli("run", "--config", str(config), "--wi", "2", "--do", "1", "--out",
                    str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr
    packed, lone = (read_shard(d / "shards/wi2_do1.nc") for d in (out, tmp_path / "alone"))
    for name in ("logits", "train_loss"):  # the seed contract holds for a packed cell
        np.testing.assert_allclose(packed[name].values, lone[name].values, atol=1e-5)


def test_a_crashed_packed_cell_leaves_its_neighbour_and_is_shown_failed(tmp_path, tiny_toml):
    config = tiny_toml(grid={"n_wi": 1, "n_do": 2}, train={"epochs": 40})
    out = tmp_path / "crash"
    proc = _submit("0", "--config", str(config), "--cluster", "local", "--pack", "2", "--out",
                   str(out), wait=False)
    markers = [out / "running/wi1_do1.json", out / "running/wi1_do2.json"]
    wait_until(lambda: all(m.exists() for m in markers), "both cells to train at once", 300)
    os.kill(json.loads(markers[0].read_text())["pid"], signal.SIGKILL)  # cell (1, 1) crashes
    proc.communicate(timeout=120)
    wait_until(lambda: (out / "shards/wi1_do2.nc").exists(), "the neighbour's shard", 600)
    assert read_shard(out / "shards/wi1_do2.nc").status.item() == "done"
    wait_until(lambda: "failed 1" in run_cli("status", str(out)).stdout, "the task to end", 120)
    status = run_cli("status", str(out)).stdout
    assert "done 1" in status and "(wi=1, do=1)" in status and "ended without a shard" in status


def test_packing_without_gpus_or_with_multi_process_cells_is_bad_input(tmp_path, tiny_toml):
    config = str(tiny_toml())
    multi = tmp_path / "multi.toml"
    multi.write_text('executor = "local"\ngpus_per_cell = 2\n')
    cases = [("", ["--cluster", "local", "--pack", "2"], "its tasks get no GPU to share"),
             ("0,1", ["--cluster", str(multi), "--pack", "2"], "gpus_per_cell = 2, "
                                                                "processes_per_cell = 0"),
             ("0", ["--cluster", "local", "--pack", "0"], "--pack 0 is out of range")]
    for gpus, args, message in cases:
        out = tmp_path / "run"
        result = _submit(gpus, "--config", config, "--out", str(out), *args, wait=False)
        _, err = result.communicate(timeout=120)
        assert result.returncode == 2 and err.count("\n") == 1 and message in err, err
        assert not out.exists()


# 1,000 updates a cell (~35 s alone): time to signal the task while both its cells train
LONGER = {"task": {"train_size": 800},
          "train": {"batch_size": 8, "evals_per_epoch": 2, "epochs": 10}}


def test_a_preempted_packed_task_checkpoints_every_cell_and_the_requeue_resumes_them(
        slurm, tmp_path, tiny_toml):
    profile = tmp_path / "packed.toml"
    profile.write_text(DEV_PROFILE)
    config = tiny_toml(grid={"n_wi": 1, "n_do": 2}, runtime={"deterministic": True}, **LONGER)
    out = tmp_path / "packed"
    submitted = run_cli("submit", "--config", str(config), "--cluster", str(profile), "--out",
                        str(out))
    assert submitted.returncode == 0, submitted.stderr
    (array,) = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"]
    (task,) = array["task_ids"]  # two cells, one task
    log = task_log(out, task)

    def said(text, times=2):
        return log.exists() and log.read_text(errors="replace").count(text) >= times

    wait_until(lambda: said("update 50/1000"), "both cells to evaluate once", 300)
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    wait_until(lambda: said("resumed from"), "the requeued task to resume both cells", 300)
    assert said("SIGTERM: saved")  # each cell saved its own checkpoint
    wait_until(lambda: all((out / f"shards/wi1_do{d}.nc").exists() for d in (1, 2)),
               "both shards", 600)
    (s1, c1, g1), (s2, c2, g2) = (_interval(out / f"shards/wi1_do{d}.nc") for d in (1, 2))
    assert s1 < c2 and s2 < c1 and g1 == g2 != ""  # side by side, on the task's one GPU
    assert not list((out / "checkpoints").glob("*.pt"))
    # the same cell alone, with the one thread a packed child had (2 CPUs / 2 cells): the
    # preempted, resumed, packed cell is bitwise the uninterrupted one
    alone = subprocess.run([sys.executable, "-m", "seedgrid", "run", "--config", str(config),
                            "--wi", "1", "--do", "2", "--out", str(tmp_path / "alone")],
                           cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr
    resumed, lone = (read_shard(d / "shards/wi1_do2.nc") for d in (out, tmp_path / "alone"))
    assert resumed.status.item() == "done"
    for name in ("logits", "train_loss"):
        assert resumed[name].values.tobytes() == lone[name].values.tobytes(), name
