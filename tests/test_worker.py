"""What runs on a compute node (seedgrid.grid.worker), run as a node runs it: submitit's own
entry point loading a task's pickle from the run folder's logs/."""

import base64
import os
import pickle
import subprocess
import sys

from seedgrid.config import config_from_dict
from seedgrid.rundir import shard_path, write_config
from seedgrid.store import read_shard

from conftest import REPO, run_cli, tiny_raw, write_toml

#: What submitit wrote to a run folder's logs/ before seedgrid.grid: ``cloudpickle_dump`` of
#: ``DelayedSubmission(seedgrid.dispatch.ArrayTask(threads=2, pack=1, pack_as="stacked"),
#: "RUN_DIR", [(1, 2)])``, made by seedgrid at commit 3e45208 (its ArrayTask then held
#: ``_checkpointers`` and ``_children`` too). A requeued task of such a folder unpickles it.
OLD_TASK = (
    "gAWVFwEAAAAAAACME3N1Ym1pdGl0LmNvcmUudXRpbHOUjBFEZWxheWVkU3VibWlzc2lvbpSTlCmBlH2UKIwIZnVuY3Rp"
    "b26UjBFzZWVkZ3JpZC5kaXNwYXRjaJSMCUFycmF5VGFza5STlCmBlH2UKIwOX2NoZWNrcG9pbnRlcnOUXZSMB3RocmVh"
    "ZHOUSwKMBHBhY2uUSwGMB3BhY2tfYXOUjAdzdGFja2VklIwJX2NoaWxkcmVulH2UdWKMBGFyZ3OUjAdSVU5fRElSlF2U"
    "SwFLAoaUYYaUjAZrd2FyZ3OUfZSMB19yZXN1bHSUTowFX2RvbmWUiYwMX3RpbWVvdXRfbWlulEsAjBJfdGltZW91dF9j"
    "b3VudGRvd26USwB1Yi4=")


def test_a_task_pickled_as_seedgrid_dispatch_arraytask_still_trains_its_cell(tmp_path):
    raw = tiny_raw(grid={"n_wi": 1, "n_do": 2})
    run = tmp_path / "RUN_DIR"  # the folder the old pickle names (relative to the task's cwd)
    write_config(run, config_from_dict(raw, source="tiny"))
    (run / "logs").mkdir()
    (run / "logs" / "77_submitted.pkl").write_bytes(base64.b64decode(OLD_TASK))
    env = {**os.environ, "SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "77",
           "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_NODEID": "0",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_GLOBALID": "0",
           "SUBMITIT_LOCAL_LOCALID": "0", "PYTHONPATH": str(REPO)}
    node = subprocess.run([sys.executable, "-m", "submitit.core._submit", "RUN_DIR/logs"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert node.returncode == 0, node.stdout + node.stderr
    with open(run / "logs" / "77_0_result.pkl", "rb") as f:  # (the test's own file)
        assert pickle.load(f) == ("success", ["done"])
    assert not shard_path(run, 1, 1).exists()  # only the task's own cell
    old = read_shard(shard_path(run, 1, 2))
    assert old.attrs["torch_threads"] == 2  # its pickled settings were read

    config = write_toml(tmp_path / "tiny.toml", raw)  # the same cell trained by `run` today
    result = run_cli("run", "--config", str(config), "--wi", "1", "--do", "2", "--out",
                     str(tmp_path / "today"))
    assert result.returncode == 0, result.stderr
    today = read_shard(shard_path(tmp_path / "today", 1, 2))
    for name in ("logits", "train_loss"):
        assert old[name].values.tobytes() == today[name].values.tobytes(), name


def test_a_phase_one_waiting_for_its_decider_is_refused_with_a_pasteable_status_hint(tmp_path):
    import pytest

    from seedgrid.errors import UsageError
    from seedgrid.grid.cells import cells_to_resume

    run = tmp_path / "a b;rm x"  # a folder name a shell would split
    record = {"continued_cells": None, "decider_job": "999999999", "phase_one": [[1, 1]]}
    with pytest.raises(UsageError) as refused:  # (sacct knows no such job: not settled)
        cells_to_resume(run, record)
    assert f"status '{run}'" in str(refused.value) and "scancel 999999999" in str(refused.value)
