"""Preemption on the real dev SLURM: a signalled or requeued cell resumes from its checkpoint
and its shard equals the uninterrupted one bitwise (CPU, deterministic)."""

import json
import subprocess

import pytest
import torch

from seedgrid.rundir import task_log
from seedgrid.store import read_shard

from conftest import REPO, run_cli, sacct_states, wait_until

DEV = str(REPO / "slurm/dev.toml")
# 1,000 updates (~35 s): longer than SLURM takes to kill a requeued job (KillWait 5 s + srun's
# 7 s; submitit ignores the SIGTERM), so the old process cannot finish the cell first.
LONGER = {"task": {"train_size": 800},
          "train": {"batch_size": 8, "evals_per_epoch": 2, "epochs": 10}}


def _submit(tiny_toml, out, **runtime):
    config = tiny_toml(f"{out.name}.toml", grid={"n_wi": 1, "n_do": 1},
                       runtime={"deterministic": True, **runtime}, **LONGER)
    result = run_cli("submit", "--config", str(config), "--cluster", DEV, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"][0]["task_ids"][0]


def _log(out, job):
    path = task_log(out, job)  # the task's stderr, where progress goes
    return path.read_text(errors="replace") if path.exists() else ""


def _wait(predicate, what, seconds=180):
    wait_until(predicate, what, seconds, every=0.2)


def _wait_for_shard(out):
    _wait(lambda: (out / "shards/wi1_do1.nc").exists(), "the shard", 300)
    return read_shard(out / "shards/wi1_do1.nc")


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory, request):
    """The same cell trained by SLURM without interruption."""
    out = tmp_path_factory.mktemp("plain") / "plain"
    from conftest import tiny_raw, write_toml

    def tiny_toml(name, **sections):
        return write_toml(out.parent / name, tiny_raw(**sections))
    _submit(tiny_toml, out)
    return _wait_for_shard(out)


def _assert_same(shard, reference):
    assert shard.status.item() == "done"
    for name in ("logits", "train_loss"):
        assert shard[name].values.tobytes() == reference[name].values.tobytes(), name


def test_usr2_checkpoints_requeues_and_resumes_bitwise(slurm, tmp_path, tiny_toml, uninterrupted):
    out = tmp_path / "signalled"
    job = _submit(tiny_toml, out)
    _wait(lambda: "update 50/1000" in _log(out, job), "the first evaluation")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _wait(lambda: "resumed from" in _log(out, job), "the requeued task to resume")
    shard = _wait_for_shard(out)
    assert "checkpoints/wi1_do1.pt at update " in _log(out, job)
    assert not (out / "checkpoints/wi1_do1.pt").exists()  # removed once the shard was written
    _assert_same(shard, uninterrupted)


def test_a_plain_requeue_resumes_from_the_last_periodic_checkpoint(slurm, tmp_path, tiny_toml,
                                                                   uninterrupted):
    out = tmp_path / "requeued"
    job = _submit(tiny_toml, out, checkpoint_every_evals=1)
    _wait(lambda: (out / "checkpoints/wi1_do1.pt").exists(), "a periodic checkpoint")
    subprocess.run(["scontrol", "requeue", job], check=True)  # no USR2: only SLURM's SIGTERM
    _wait(lambda: "resumed from" in _log(out, job), "the requeued task to resume")
    _assert_same(_wait_for_shard(out), uninterrupted)


def test_scancel_saves_a_checkpoint_and_resume_goes_on_from_it(slurm, tmp_path, tiny_toml,
                                                               uninterrupted):
    # no periodic checkpoints: only the SIGTERM that scancel sends can save the work done
    out = tmp_path / "cancelled"
    job = _submit(tiny_toml, out)
    _wait(lambda: "update 50/1000" in _log(out, job), "the first evaluation")
    subprocess.run(["scancel", job], check=True)
    wait_until(lambda: sacct_states(job.split("_")[0]).get(job) == "CANCELLED",
               "sacct to record the task CANCELLED")
    assert "SIGTERM: saved" in _log(out, job)
    saved = torch.load(out / "checkpoints/wi1_do1.pt", weights_only=True)
    assert 50 <= saved["update"] < 1000
    resumed = run_cli("submit", "--resume", str(out), "--cluster", DEV, "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = json.loads((out / "jobs.json").read_text())["submissions"][-1]["arrays"][0]
    assert f"at update {saved['update']}/1000" in _log(out, again["task_ids"][0])
    _assert_same(read_shard(out / "shards/wi1_do1.nc"), uninterrupted)
