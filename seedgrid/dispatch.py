"""Send a grid's cells to a cluster as array tasks (submitit), and the worker each task runs.

One submission = the cells of the grid that have no shard yet, spread over ``n_tasks`` array
tasks (consecutive cells share a task and run one after the other). On SLURM, one sbatch array
per submission (split into several when it has more tasks than the cluster's MaxArraySize).
``jobs.json`` in the run folder records every submission: array job ids, each task's job id and
its cells, so that ``status`` and ``--resume`` work from any shell.

The shards on disk are the truth: a worker skips cells whose shard exists, so a rerun or a
resumed submission never trains a finished cell again.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from seedgrid.cluster import Profile
from seedgrid.config import Config, load_config
from seedgrid.errors import UsageError
from seedgrid.rundir import CONFIG, write_config
from seedgrid.store import shard_path, shard_status, write_atomic, write_text_atomic

JOBS = "jobs.json"
Cell = tuple[int, int]


def grid_cells(cfg: Config) -> list[Cell]:
    """All cells of the config's grid, WI-major (row by row of the WI × DO map)."""
    return [(wi, do) for wi in cfg.grid.seeds_wi for do in cfg.grid.seeds_do]


def missing_cells(cfg: Config, run_dir: Path) -> list[Cell]:
    return [c for c in grid_cells(cfg) if not shard_path(run_dir, *c).exists()]


def pack(cells: list[Cell], n_tasks: int) -> list[list[Cell]]:
    """Consecutive cells into ``n_tasks`` tasks whose sizes differ by at most one."""
    size, extra = divmod(len(cells), n_tasks)
    bounds = [0]
    for i in range(n_tasks):
        bounds.append(bounds[-1] + size + (i < extra))
    return [cells[a:b] for a, b in zip(bounds, bounds[1:])]


def train_and_store(cfg: Config, run_dir: str | Path, seed_wi: int, seed_do: int, checkpointer,
                    stop_fraction: float | None = None):
    """Train a cell (resuming from ``checkpointer``'s file), write its shard, drop the checkpoint
    — unless the cell stopped early (``stop_fraction``): then the checkpoint stays, to continue.

    Returns the shard on the main process, None on the others.
    """
    from seedgrid.trainer import train_cell  # torch: imported only where a cell trains

    shard = train_cell(cfg, seed_wi, seed_do, checkpointer=checkpointer,
                       stop_fraction=stop_fraction)
    if shard is not None:  # the main process writes, once every input has proved valid
        write_config(Path(run_dir), cfg)  # (a run folder made by submit has it already)
        write_atomic(shard, shard_path(run_dir, seed_wi, seed_do))
        if shard.status.item() != "stopped":
            checkpointer.remove()
    return shard


class ArrayTask:
    """What one array task runs: train each of its cells that has no shard yet.

    A cell resumes from its checkpoint when it has one. On preemption or time limit, submitit
    calls :meth:`checkpoint` (in its USR2 handler): the running cell's state is saved and the
    task requeued with the same cells; finished cells are skipped on restart.
    """

    def __init__(self) -> None:
        self._checkpointer = None  # the running cell's Checkpointer

    def __call__(self, run_dir: str, cells: list[Cell]) -> list[str]:
        import submitit

        from seedgrid.checkpoint import Checkpointer, checkpoint_path

        if submitit.JobEnvironment().num_tasks > 1:  # several processes train each cell (DDP)
            # SLURM already limits the task to its GPUs; Accelerate takes cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                  overwrite=True)
        from seedgrid import policy

        cfg = load_config(Path(run_dir) / CONFIG)
        plan = policy.read(Path(run_dir))  # early stopping: phase one stops, phase two goes on
        statuses = []
        for wi, do in cells:
            path = shard_path(run_dir, wi, do)
            if path.exists() and not (policy.to_continue(plan, (wi, do))
                                      and shard_status(path) == "stopped"):
                statuses.append("done")
                continue
            self._checkpointer = Checkpointer(checkpoint_path(run_dir, wi, do))
            shard = train_and_store(cfg, run_dir, wi, do, self._checkpointer,
                                    stop_fraction=policy.fraction_for(plan, (wi, do)))
            if shard is not None:
                statuses.append(str(shard.status.item()))
        return statuses

    def checkpoint(self, run_dir: str, cells: list[Cell]):
        import submitit

        if self._checkpointer is not None:
            self._checkpointer.save()
        return submitit.helpers.DelayedSubmission(ArrayTask(), run_dir, cells)


def submit(cfg: Config, profile: Profile, run_dir: Path, cells: list[Cell], n_tasks: int,
           parallel: int) -> tuple[dict, list]:
    """Submit ``cells`` as ``n_tasks`` array tasks; returns the jobs.json record and the jobs."""
    import submitit

    check_executor(profile)
    _leave_job_environment()
    tasks = pack(cells, n_tasks)
    executor = submitit.AutoExecutor(folder=run_dir / "logs", cluster=profile.executor)
    executor.update_parameters(**profile.submitit_parameters(f"seedgrid-{run_dir.name}", parallel))
    limit = len(tasks)
    if profile.executor == "slurm":
        limit = profile.max_array_size or max_array_size()
    arrays, jobs = [], []
    for start in range(0, len(tasks), limit):  # one array per MaxArraySize tasks
        chunk = tasks[start:start + limit]
        try:  # submitit echoes sbatch's stderr; a refusal is reported once, below
            with contextlib.redirect_stderr(io.StringIO()):
                array_jobs = executor.map_array(ArrayTask(), [str(run_dir)] * len(chunk), chunk)
        except submitit.core.utils.FailedJobError as e:  # sbatch refused what the profile asks
            if arrays:
                _record_submission(run_dir, cfg, profile, arrays)  # keep what was accepted
            said = " ".join(str(e).split())  # sbatch's own words
            raise UsageError(f"sbatch refused the array ({said[:200]}): fix cluster profile "
                             f"{profile.name!r} (partition, account, qos, resources)") from None
        jobs += array_jobs
        # submitit's id of each task: "<array>_<index>", or "<job>" when it sent a single job
        arrays.append({"job_id": array_jobs[0].job_id.split("_")[0],
                       "task_ids": [j.job_id for j in array_jobs],
                       "tasks": [[list(c) for c in task] for task in chunk]})
    record = _record_submission(run_dir, cfg, profile, arrays)
    return record, jobs


def _leave_job_environment() -> None:
    """Submitting from inside a SLURM job (the --early-stop decider): sbatch would export that
    job's SLURM_* variables to the new one, where srun refuses them ("SLURM_MEM_PER_CPU,
    SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"). Drop them."""
    if "SLURM_JOB_ID" in os.environ:
        for key in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_"))]:
            if key != "SLURM_CONF":
                del os.environ[key]


def check_executor(profile: Profile) -> None:
    """Refuse a SLURM profile where SLURM cannot be reached (before anything is written)."""
    if profile.executor == "slurm" and shutil.which("sbatch") is None:
        raise UsageError(f"cluster profile {profile.name!r} needs SLURM but sbatch is not on "
                         "PATH: use --cluster local, or run where SLURM is installed")


def max_array_size() -> int:
    """The cluster's MaxArraySize (the largest array index is one less); 1001 if unknown."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1001
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def read_jobs(run_dir: Path) -> dict:
    path = run_dir / JOBS
    return json.loads(path.read_text()) if path.exists() else {"submissions": []}


def _record_submission(run_dir: Path, cfg: Config, profile: Profile, arrays: list[dict]) -> dict:
    record = read_jobs(run_dir)
    record.update(config_hash=cfg.hash)
    record["submissions"].append({
        "submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cluster": profile.name, "executor": profile.executor, "arrays": arrays})
    write_text_atomic(run_dir / JOBS, json.dumps(record, indent=1))
    return record
