"""A submission: cells sent as array tasks through submitit to the profile's backend, and
recorded in the run folder's ``jobs.json`` (array job ids, each task's job id and its cells), so
that ``status`` and ``--resume`` work from any shell.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import secrets
import socket
from pathlib import Path

from seedgrid import rundir
from seedgrid.config import Config
from seedgrid.errors import UsageError
from seedgrid.files import locked, write_text_atomic
from seedgrid.folders import make_folder
from seedgrid.grid import slurm
from seedgrid.grid.cells import backend, split
from seedgrid.grid.profile import Profile
from seedgrid.grid.worker import ArrayTask
from seedgrid.log import logger
from seedgrid.rundir import JOBS, LOGS, Cell, read_jobs


def parameters(profile: Profile, run_dir: Path, parallel: int, guard: bool = True) -> dict:
    """Keyword arguments for ``submitit.AutoExecutor.update_parameters``: what every task asks
    (time, memory, CPUs, processes), its name, and the backend's own; ``guard``: the run
    folder's guard line first in each task's shell."""
    first = [rundir.guard_line(run_dir)] if guard else []
    return {"timeout_min": profile.time_min, "mem_gb": profile.mem_gb,
            "cpus_per_task": profile.cpus_per_task, "name": slurm.job_name(run_dir),
            "tasks_per_node": profile.processes_per_cell or max(profile.gpus_per_cell, 1),
            **backend(profile).parameters(profile, parallel, first)}


def submit(cfg: Config, profile: Profile, groups: list[str], run_dir: Path, cells: list[Cell],
           n_tasks: int, parallel: int, cluster_set: tuple[str, ...] = ()) -> tuple[dict, list]:
    """Submit ``cells`` as ``n_tasks`` array tasks (``groups``: the GPU groups local tasks get,
    from :func:`seedgrid.grid.cells.check_backend`); returns the jobs.json record and the jobs."""
    import submitit

    runs = backend(profile)
    slurm.leave_job_environment()
    tasks = split(cells, n_tasks)
    array_task = ArrayTask(runs.threads(profile, min(parallel, n_tasks)), profile.cells_per_gpu,
                     profile.pack_as)
    make_folder(run_dir / LOGS)  # (before submitit makes it with the umask's mode)
    rundir.check_private(run_dir)  # the tasks will load pickles from it: nobody else's to write
    executor = submitit.AutoExecutor(folder=run_dir / LOGS, cluster=profile.executor)
    params = parameters(profile, run_dir, parallel)
    logger.debug(f"submitit {profile.executor} executor: {params}")
    executor.update_parameters(**params)
    limit = runs.array_limit(profile)
    arrays: list[dict] = []
    jobs: list = []
    # intent before action: the cells about to be submitted are recorded before any task
    # starts (a record that cannot be written stops the submit with nothing started), and
    # each array as it is accepted; what a crash in between leaves, the next submit names
    entry = record(run_dir, cfg, profile, arrays, cluster_set, intended=cells)["submissions"][
        -1]["id"]
    for start in range(0, len(tasks), limit):  # one array per MaxArraySize tasks
        chunk = tasks[start:start + limit]
        try:  # (submitit echoes sbatch's stderr; a refusal is said once, by the backend)
            with contextlib.redirect_stderr(io.StringIO()):
                array_jobs = runs.submit_tasks(executor, params, array_task, str(run_dir), chunk,
                                               profile=profile, groups=groups)
        except UsageError:  # refused: what was accepted stays recorded, the rest is not
            record(run_dir, cfg, profile, arrays, cluster_set, entry=entry, drop=not arrays)
            raise
        jobs += array_jobs
        # submitit's id of each task: "<array>_<index>", or "<job>" when it sent a single job
        arrays.append({"job_id": array_jobs[0].job_id.split("_")[0],
                       "task_ids": [j.job_id for j in array_jobs],
                       "tasks": [[list(c) for c in task] for task in chunk]})
        record(run_dir, cfg, profile, arrays, cluster_set, entry=entry,
               intended=cells if start + limit < len(tasks) else None)
    return read_jobs(run_dir), jobs


def record(run_dir: Path, cfg: Config, profile: Profile, arrays: list[dict],
           cluster_set: tuple[str, ...] = (), *, entry: str | None = None,
           intended: list[Cell] | None = None, drop: bool = False) -> dict:
    """Append a submission to jobs.json (``entry`` None: a new one, with an id) or update the
    one whose id is ``entry``: its arrays so far, and the cells it is about to submit
    (``intended``; None once all are submitted); ``drop``: remove it (nothing was submitted)."""
    with locked(run_dir / JOBS):  # another submit, or the decider job, may append too
        record = read_jobs(run_dir)
        record.update(config_hash=cfg.hash)
        found = [s for s in record["submissions"] if entry is not None and s.get("id") == entry]
        submission = found[0] if found else {
            "id": secrets.token_hex(6),
            "submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "cluster": profile.name, "executor": profile.executor,
            "host": socket.gethostname(), "cells_per_gpu": profile.cells_per_gpu,
            "pack_as": profile.pack_as,
            **({"cluster_set": list(cluster_set)} if cluster_set else {})}
        if not found:
            record["submissions"].append(submission)
        if drop:
            record["submissions"].remove(submission)
        submission["arrays"] = arrays
        submission.pop("intended", None)
        if intended is not None:
            submission["intended"] = [list(c) for c in intended]
        write_text_atomic(run_dir / JOBS, json.dumps(record, indent=1))
    return record


def unrecorded(run_dir: Path) -> list[tuple[str, list[Cell]]]:
    """Submissions a crash cut short between submitting and recording (jobs.json says which
    cells they were about to submit and not that they did): (when, cells not in their arrays),
    each marked seen so that it is said once."""
    said = []
    with locked(run_dir / JOBS):
        record = read_jobs(run_dir)
        for submission in record["submissions"]:
            if "intended" in submission:
                done = {tuple(c) for a in submission["arrays"] for t in a["tasks"] for c in t}
                cells = [tuple(c) for c in submission.pop("intended") if tuple(c) not in done]
                submission["unrecorded"] = [list(c) for c in cells]
                said.append((submission.get("submitted", "?"), cells))
        if said:
            write_text_atomic(run_dir / JOBS, json.dumps(record, indent=1))
    return said
