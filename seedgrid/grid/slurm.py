"""The SLURM backend (``executor = "slurm"``): one sbatch array per submission through submitit
(split into several when it has more tasks than the cluster's MaxArraySize), the --early-stop
decider job, and what the queue says of them. Every sbatch, scontrol and sacct call of seedgrid
is in this module.

The same functions as :mod:`seedgrid.grid.local` (the other backend): ``check``,
``task_layout``, ``on_cpu``, ``parameters``, ``threads``, ``array_limit``, ``submit_tasks``,
``settle``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from seedgrid import rundir
from seedgrid.errors import UsageError
from seedgrid.grid.profile import SBATCH_FIELDS, Profile

#: SLURM states of a task that has not started, or will start again
WAITING = {"PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}


def installed() -> bool:
    """Whether SLURM's commands are at hand here (sbatch on PATH): a login node, or a node."""
    return shutil.which("sbatch") is not None


def check(profile: Profile) -> list[str]:
    """Refuse the profile where SLURM cannot be reached; [] (no local GPU groups)."""
    if not installed():
        raise UsageError(f"cluster profile {profile.name!r} needs SLURM but sbatch is not on "
                         "PATH: use --cluster local, or run where SLURM is installed")
    return []


def task_layout(profile: Profile, n_tasks: int, parallel: int | None) -> tuple[int, int]:
    """A queue: every task is submitted, ``parallel`` (default: the profile's) run at once."""
    return n_tasks, parallel or profile.array_parallelism


def on_cpu(profile: Profile) -> bool:
    return profile.gpus_per_cell == 0


def task_gpus(profile: Profile, groups: list[str]) -> int:
    return profile.gpus_per_cell


def parameters(profile: Profile, parallel: int, first: list[str]) -> dict:
    """submitit's SLURM parameters: the array's throttle, the setup lines (the run folder's
    guard first), the partition, GPUs and every other sbatch option of the profile."""
    extra = {k: getattr(profile, k) for k in SBATCH_FIELDS if getattr(profile, k)}
    extra.update(profile.sbatch)
    params: dict = {"slurm_array_parallelism": parallel,
                    "slurm_setup": first + list(profile.setup),
                    "slurm_additional_parameters": extra}
    if profile.partition:
        params["slurm_partition"] = profile.partition
    if profile.gpus_per_cell:
        params["gpus_per_node"] = profile.gpus_per_cell
    return params


def threads(profile: Profile, tasks_at_once: int) -> int:
    return 0  # the CPUs SLURM gives each task (SLURM_CPUS_PER_TASK): the worker reads them


def array_limit(profile: Profile) -> int:
    return profile.max_array_size or max_array_size()


def submit_tasks(executor, parameters: dict, task: Callable, run_dir: str, chunk: list, *,
                 profile: Profile, groups: list[str]) -> list:
    """One sbatch array of ``chunk``'s tasks; sbatch refusing it: UsageError in its words."""
    import submitit

    try:
        return executor.map_array(task, [run_dir] * len(chunk), chunk)
    except submitit.core.utils.FailedJobError as e:  # sbatch refused what the profile asks
        said = " ".join(str(e).split())  # sbatch's own words
        raise UsageError(f"sbatch refused the array ({said[:200]}): fix cluster profile "
                         f"{profile.name!r} (partition, account, qos, resources)") from None


def settle(submission: dict) -> bool:
    return wait_settled(submission)


def max_array_size() -> int:
    """The cluster's MaxArraySize (the largest array index is one less); 1001 if unknown."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1001
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def submit_decider(run_dir: Path, profile: Profile, arrays: list[str], cluster: str) -> str:
    """The --early-stop decider: a job that runs ``seedgrid continue`` once every phase-one
    array has ended (afterany: a failed or cancelled task cannot block it), submitted held;
    returns its id (the caller records it, then :func:`release` s it). ``cluster`` is the
    profile as the user gave it (a name or a file). Arguments go to sbatch as a list, and the
    command is quoted: no path reaches a shell unquoted."""
    options = [f"--{k}={getattr(profile, k)}" for k in ("partition", "account", "qos")
               if getattr(profile, k)]
    command = shlex.join(["cd", os.getcwd()]) + " && " + shlex.join(
        [sys.executable, "-m", "seedgrid", "continue", str(run_dir), "--cluster", cluster])
    leave_job_environment()
    out = subprocess.run(["sbatch", "--parsable", "--hold",
                          f"--dependency=afterany:{':'.join(arrays)}",
                          f"--job-name={job_name(run_dir, 'continue')}", "--time=30",
                          f"--output={rundir.decider_log(run_dir)}", *options,
                          "--wrap", command], capture_output=True, text=True)
    if out.returncode != 0:
        raise UsageError(f"sbatch refused the decider job ({out.stderr.strip()[:200]}): "
                         f"run {rundir.command('continue', run_dir)} after phase one")
    return out.stdout.strip().split(";")[0]


def job_name(run_dir: Path, role: str = "") -> str:
    """SLURM's job name for the run: ``seedgrid-<folder>``, letters, digits and ``._-`` only
    (it lands in the sbatch script's ``#SBATCH --job-name`` line)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", run_dir.name)[:64]
    return f"seedgrid-{role + '-' if role else ''}{name}"


def release(job: str) -> None:
    subprocess.run(["scontrol", "release", job], check=True, capture_output=True)


def leave_job_environment() -> None:
    """Submitting from inside a SLURM job (the --early-stop decider): sbatch would export that
    job's SLURM_* variables to the new one, where srun refuses them ("SLURM_MEM_PER_CPU,
    SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"). Drop them."""
    if "SLURM_JOB_ID" in os.environ:
        for key in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_"))]:
            if key != "SLURM_CONF":
                del os.environ[key]


def states(job_ids: list[str]) -> tuple[dict[str, str], str]:
    """State of each array task ("<job>_<index>" → "RUNNING", ...) from sacct, and a note when
    sacct could not say."""
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j",
                              ",".join(job_ids)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"sacct unavailable ({e}); states of cells without a shard are unknown"
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no message"])[0][:120]
        return {}, f"sacct failed ({first}); states of cells without a shard are unknown"
    found = {}
    for line in out.stdout.splitlines():
        job, _, state = line.partition("|")
        state = state.split()[0] if state else ""
        base, _, index = job.partition("_")
        if index.startswith("["):  # a pending range: 31_[2-7%4]
            for part in index.strip("[]").split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    found[f"{base}_{i}"] = state
        else:  # one array task, or a plain job (submitit sends a one-task array as a job)
            found[job] = state
    return found, ""


def settled(job_ids: list[str]) -> bool:
    """Whether sacct shows every task of these SLURM jobs ended (False while any runs, waits,
    or is unknown): what --wait waits for before its final status."""
    found, note = states(job_ids)
    return bool(found) and not note and all(
        s != "RUNNING" and s not in WAITING for s in found.values())


def wait_settled(submission: dict, limit_s: float = 120.0) -> bool:
    """After submitit saw a submission's tasks end, wait (up to ``limit_s``) until sacct says so
    too: accounting lags, and a status printed too early calls a failed task "running"."""
    ids = [a["job_id"] for a in submission["arrays"]]
    deadline = time.monotonic() + limit_s
    while not settled(ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True
