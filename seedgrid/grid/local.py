"""The local backend (``executor = "local"``): array tasks as processes of this machine, through
submitit's local executor — no queue, no throttle: every task starts at once, so a submission
makes no more tasks than ``--parallel`` (default 1) and shares the machine's cores and GPUs
among them. Every decision that depends on *this machine* is here.

The same functions as :mod:`seedgrid.grid.slurm` (the other backend): ``check``,
``task_layout``, ``on_cpu``, ``parameters``, ``threads``, ``array_limit``, ``submit_tasks``,
``settle``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Callable

from seedgrid.errors import UsageError
from seedgrid.grid import slurm
from seedgrid.grid.profile import Profile
from seedgrid.log import logger


def check(profile: Profile) -> list[str]:
    """The GPU groups local tasks get in turn (:func:`gpu_groups`); refuses a profile whose
    cells need more GPUs than this machine shows."""
    return gpu_groups(profile)


def task_layout(profile: Profile, n_tasks: int, parallel: int | None) -> tuple[int, int]:
    """No queue: every task starts at once, so at most ``parallel`` (default 1) tasks."""
    parallel = parallel or 1
    return min(n_tasks, parallel), parallel


def on_cpu(profile: Profile) -> bool:
    """Whether cells train on the CPU here: torch sees no GPU."""
    import torch

    return not torch.cuda.is_available()


def task_gpus(profile: Profile, groups: list[str]) -> int:
    """GPUs a task gets: a group of this machine's (0 without any)."""
    return len(groups)


def parameters(profile: Profile, parallel: int, first: list[str]) -> dict:
    """submitit's local parameters: only the run folder's guard line first (the profile's setup
    lines are for a cluster's nodes)."""
    return {"local_setup": first}


def threads(profile: Profile, tasks_at_once: int) -> int:
    """CPUs for each local task: the profile's cpus_per_task, at most this machine's cores
    shared among the tasks that run at once."""
    return max(1, min(profile.cpus_per_task, (os.cpu_count() or 1) // max(tasks_at_once, 1)))


def array_limit(profile: Profile) -> int:
    return 1 << 30  # no array: any number of tasks


def submit_tasks(executor, parameters: dict, task: Callable, run_dir: str, chunk: list, *,
                 profile: Profile, groups: list[str]) -> list:
    """One process per task; with GPUs, each task its own group of them, in turn (the local
    executor otherwise hides every GPU)."""
    if not groups:
        return executor.map_array(task, [run_dir] * len(chunk), chunk)
    setup = list(parameters["local_setup"])
    jobs = []
    for i, cells in enumerate(chunk):
        executor.update_parameters(local_setup=setup + [
            f"export CUDA_VISIBLE_DEVICES={shlex.quote(groups[i % len(groups)])}"])
        jobs.append(executor.submit(task, run_dir, cells))
    return jobs


def settle(submission: dict) -> bool:
    """A local task has ended when submitit says so."""
    return True


def warn_if_login_node(profile: Profile) -> None:
    """Warn (stderr) when the local executor is about to train where SLURM is at hand — a
    login node, most likely — outside any SLURM job. Called once the input has proved good:
    bad input stays one line."""
    if (profile.executor == "local" and slurm.installed()
            and "SLURM_JOB_ID" not in os.environ):
        logger.warning("training on this machine (--cluster local), where SLURM is installed: "
                       "is this a login node? Give --cluster <your profile> (or set "
                       "SEEDGRID_CLUSTER) to train on the cluster")


def alive(pid: str) -> bool:
    """Whether a local task (its job id is its pid) still runs."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def gpus() -> list[str]:
    """The GPUs of this machine that local tasks may use: the entries of CUDA_VISIBLE_DEVICES
    where it is set (indices or UUIDs, as the user masked them; set but empty: none), else the
    GPUs ``nvidia-smi -L`` lists (none without it). No torch import: submit stays quick."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in listed.splitlines()))]


def gpu_groups(profile: Profile) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each local task in turn: this machine's GPUs in groups of
    ``gpus_per_cell`` (one each when it is 0), so that the local executor (which otherwise hides
    every GPU) trains on them; [] without GPUs. More tasks than groups share them in turn
    (several cells per GPU, as processes). UsageError if a cell needs more GPUs than there are."""
    found = gpus()
    per = max(profile.gpus_per_cell, 1)
    if profile.gpus_per_cell > len(found):
        raise UsageError(f"cluster profile {profile.name!r}: gpus_per_cell = "
                         f"{profile.gpus_per_cell}, but this machine shows {len(found)} GPU(s) "
                         "(CUDA_VISIBLE_DEVICES, nvidia-smi): lower gpus_per_cell, or submit to "
                         "a cluster profile")
    return [",".join(found[i:i + per]) for i in range(0, len(found) - per + 1, per)]
