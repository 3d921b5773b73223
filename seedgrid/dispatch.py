"""Send a grid's cells to a cluster as array tasks (submitit), and the worker each task runs
(what trains one cell, or several at once, inside a task: seedgrid.celltask).

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
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from seedgrid import celltask, cluster, early_stop_run, log, rundir
from seedgrid.cluster import Profile
from seedgrid.config import Config
from seedgrid.errors import UsageError
from seedgrid.log import logger
from seedgrid.rundir import (JOBS, LOGS, Cell, cell_state, checkpoint_path, decider_log,
                             load_run_config,
                             read_jobs)
from seedgrid.files import locked, write_text_atomic

if TYPE_CHECKING:  # torch: imported only where a cell trains
    from seedgrid.checkpoint import Checkpointer

#: SLURM states of a task that has not started, or will start again
WAITING = {"PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}


#: shard states of a cell that trained to its end (well or not): never trained again
FINISHED = ("done", "diverged")


def needs_training(run_dir: str | Path, cell: Cell, plan: dict | None = None) -> bool:
    """Whether ``cell`` still has to train: no shard, a damaged one, or (phase two of
    --early-stop, ``plan``) a stopped shard chosen to continue. The one place this is decided."""
    state = cell_state(run_dir, cell)
    if state == "stopped":
        return early_stop_run.to_continue(plan, cell)
    return state not in FINISHED


def missing_cells(cfg: Config, run_dir: Path, plan: dict | None = None) -> list[Cell]:
    """The grid's cells that still have to train (see :func:`needs_training`)."""
    return [c for c in cfg.grid.cells() if needs_training(run_dir, c, plan)]


def cells_to_resume(run_dir: Path, record: dict) -> list:
    """What an --early-stop run still has to train, in its phase: before the decision, the
    phase-one cells without a finished shard (they will stop at the fraction); after it, the
    continued cells not yet trained to the end. The cells outside phase one are never trained."""
    if record["continued_cells"] is None:
        running = record.get("decider_job")
        if running:
            if not settled([running]):
                raise UsageError(f"{str(run_dir)!r} is in phase one and its decider job "
                                 f"{running} still waits for it: let it finish (python -m "
                                 f"seedgrid status {run_dir}), or scancel {running} first")
        return [tuple(c) for c in record["phase_one"] if needs_training(run_dir, tuple(c))]
    return [tuple(c) for c in record["continued_cells"]
            if needs_training(run_dir, tuple(c), record)]


def task_layout(profile: Profile, n_cells: int, array: int | None,
                parallel: int | None) -> tuple[int, int]:
    """(array tasks, most at once) for ``n_cells``: one task per cell (per ``cells_per_gpu``
    cells when packed) unless ``array`` says fewer; SLURM runs ``parallel`` (default: the profile's) at once, the local executor starts
    every task at once, so it makes no more tasks than ``parallel`` (default 1)."""
    parallel = parallel or (profile.array_parallelism if profile.executor == "slurm" else 1)
    n_tasks = array or -(-n_cells // profile.cells_per_gpu)  # packed: K cells a task
    if profile.executor == "local":  # no queue: every task starts at once
        n_tasks = min(n_tasks, parallel)
    return n_tasks, parallel


def pack(cells: list[Cell], n_tasks: int) -> list[list[Cell]]:
    """Consecutive cells into ``n_tasks`` tasks whose sizes differ by at most one."""
    size, extra = divmod(len(cells), n_tasks)
    bounds = [0]
    for i in range(n_tasks):
        bounds.append(bounds[-1] + size + (i < extra))
    return [cells[a:b] for a, b in zip(bounds, bounds[1:])]


def check_inputs(cfg: Config) -> dict[str, str]:
    """What every cell will need, checked where the user is, before anything is written or
    submitted: the model's files, the data (files readable, columns, labels; downloaded into
    the cache from the hub where there is one) and an evaluation schedule the training set
    can keep. A task that would fail on these fails here instead, once, in one line. Returns
    the data's fingerprints, as shards record them."""
    from seedgrid import data, model, tasks

    model.resolve(cfg.model.name)
    if cfg.lora.rank:
        model.check_lora(cfg.model, cfg.lora)
    train, validation = tasks.load_splits(cfg.task)
    data.evaluation_updates(data.updates_per_epoch(len(train), cfg.train.batch_size),
                            cfg.train.epochs, cfg.train.evals_per_epoch)
    return {"data_train": train.fingerprint(), "data_validation": validation.fingerprint()}


def check_precision(cfg: Config, profile: Profile) -> None:
    """Refuse fp16 where cells train on the CPU: Accelerate silently trains in fp32 there, so
    the config (hashed with fp16) would not say what the cells are."""
    if cfg.train.mixed_precision != "fp16":
        return
    on_cpu = profile.gpus_per_cell == 0 if profile.executor == "slurm" else not _has_cuda()
    if on_cpu:
        raise UsageError(f"[train] mixed_precision = 'fp16' with cluster profile "
                         f"{profile.name!r}, whose cells train on the CPU (no GPU): set "
                         "mixed_precision = 'no' (or 'bf16'), or give the profile gpus_per_cell")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class ArrayTask:
    """What one array task runs: train each of its cells that has no shard yet — one at a time,
    or ``pack`` at once (one stacked model, or with ``pack_as = "processes"`` a process each).

    A cell resumes from its checkpoint when it has one. On preemption or time limit, submitit
    calls :meth:`checkpoint` (in its USR2 handler): the running cells' states are saved and the
    task requeued with the same cells; finished cells are skipped on restart.
    """

    def __init__(self, threads: int = 0, pack: int = 1, pack_as: str = "stacked") -> None:
        self._checkpointers: list[Checkpointer] = []  # the running cells'
        #: torch threads for this task's cells (0: the CPUs SLURM gave it, else torch's own)
        self.threads = threads
        #: cells trained at once (cells_per_gpu), and how: one stacked model, or processes
        self.pack, self.pack_as = pack, pack_as
        self._children: dict = {}  # packed as processes: cell -> its running process

    def __call__(self, run_dir: str, cells: list[Cell]) -> list[str]:
        import submitit

        from seedgrid.checkpoint import Checkpointer

        if submitit.JobEnvironment().num_tasks > 1:  # several processes train each cell (DDP)
            # SLURM already limits the task to its GPUs; Accelerate takes cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                  overwrite=True)
        log.configure()  # this process is seedgrid's: progress and warnings to the task's log
        set_threads(self.threads)
        plan = early_stop_run.read(Path(run_dir))  # early stopping: phase one stops, phase two goes on
        todo = [c for c in cells if needs_training(run_dir, c, plan)]  # a damaged shard trains again
        if self.pack > 1 and self.pack_as == "processes":  # each cell reads the config itself
            return celltask.train_at_once(run_dir, cells, todo, self.pack, self.threads,
                                          self._children)
        cfg = load_run_config(Path(run_dir))
        with celltask.claims(run_dir, todo) as mine:  # one trainer per cell
            # (claimed now: a cell another trainer finished meanwhile has its shard)
            todo = [c for c in mine if needs_training(run_dir, c, plan)]
            checkpointers = [Checkpointer(checkpoint_path(run_dir, *c)) for c in todo]
            for group in celltask.packs(todo, checkpointers, self.pack):
                self._checkpointers = [checkpointers[i] for i in group]
                celltask.train_task_cells(cfg, run_dir, [todo[i] for i in group], plan,
                                          self._checkpointers)
        self._checkpointers = []
        end_distributed()
        return [str(cell_state(run_dir, c)) for c in cells]

    def checkpoint(self, run_dir: str, cells: list[Cell]):
        import submitit

        if self._children:  # packed as processes: each running cell saves on SIGTERM
            celltask.stop_and_save(self._children)
        for checkpointer in self._checkpointers:
            checkpointer.save()
        return submitit.helpers.DelayedSubmission(ArrayTask(self.threads, self.pack,
                                                            self.pack_as), run_dir, cells)


def end_distributed() -> None:
    """Leave the process group (several processes per cell) before the process ends: a gloo
    or NCCL group still alive at exit can abort it ("terminate called without an active
    exception") after the shard was written."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def set_threads(threads: int = 0) -> int:
    """torch's intra-op threads for the cell: the CPUs SLURM gave the task
    (SLURM_CPUS_PER_TASK), else ``threads``, else torch's default. Two cells on one machine
    each using every core oversubscribe it (a demo cell: 293 s instead of 66 s)."""
    import torch

    given = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or threads
    if given:
        torch.set_num_threads(given)
    return torch.get_num_threads()


def submit(cfg: Config, profile: Profile, run_dir: Path, cells: list[Cell], n_tasks: int,
           parallel: int) -> tuple[dict, list]:
    """Submit ``cells`` as ``n_tasks`` array tasks; returns the jobs.json record and the jobs."""
    import submitit

    gpus = check_executor(profile)
    _leave_job_environment()
    tasks = pack(cells, n_tasks)
    local = profile.executor == "local"
    threads = cluster.local_threads(profile, min(parallel, n_tasks)) if local else 0
    per_gpu = profile.cells_per_gpu
    rundir.make_folder(run_dir / LOGS)  # (before submitit makes it with the umask's mode)
    rundir.check_private(run_dir)  # the tasks will load pickles from it: nobody else's to write
    executor = submitit.AutoExecutor(folder=run_dir / LOGS, cluster=profile.executor)
    parameters = profile.submitit_parameters(job_name(run_dir), parallel,
                                             first=rundir.guard_line(run_dir))
    logger.debug(f"submitit {profile.executor} executor: {parameters}")
    executor.update_parameters(**parameters)
    limit = len(tasks)
    if profile.executor == "slurm":
        limit = profile.max_array_size or max_array_size()
    arrays: list[dict] = []
    jobs: list = []
    for start in range(0, len(tasks), limit):  # one array per MaxArraySize tasks
        chunk = tasks[start:start + limit]
        try:  # submitit echoes sbatch's stderr; a refusal is reported once, below
            with contextlib.redirect_stderr(io.StringIO()):
                if gpus:  # local tasks on this machine's GPUs: each task its own, in turn
                    array_jobs = []
                    for i, task in enumerate(chunk):
                        executor.update_parameters(local_setup=parameters["local_setup"] + [
                            f"export CUDA_VISIBLE_DEVICES={shlex.quote(gpus[i % len(gpus)])}"])
                        array_jobs.append(executor.submit(
                            ArrayTask(threads, per_gpu, profile.pack_as), str(run_dir), task))
                else:
                    array_jobs = executor.map_array(ArrayTask(threads, per_gpu, profile.pack_as),
                                                    [str(run_dir)] * len(chunk), chunk)
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


def submit_decider(run_dir: Path, profile: Profile, arrays: list[str], cluster: str) -> str:
    """The --early-stop decider: a job that runs ``seedgrid continue`` once every phase-one
    array has ended (afterany: a failed or cancelled task cannot block it). Submitted held and
    released once its id is in early_stop.json, which it rewrites when it decides; ``cluster``
    is the profile as the user gave it (a name or a file). Arguments
    go to sbatch as a list, and the command is quoted: no path reaches a shell unquoted."""
    import shlex

    options = [f"--{k}={getattr(profile, k)}" for k in ("partition", "account", "qos")
               if getattr(profile, k)]
    command = shlex.join(["cd", os.getcwd()]) + " && " + shlex.join(
        [sys.executable, "-m", "seedgrid", "continue", str(run_dir), "--cluster", cluster])
    _leave_job_environment()
    out = subprocess.run(["sbatch", "--parsable", "--hold",
                          f"--dependency=afterany:{':'.join(arrays)}",
                          f"--job-name={job_name(run_dir, 'continue')}", "--time=30",
                          f"--output={decider_log(run_dir)}", *options,
                          "--wrap", command], capture_output=True, text=True)
    if out.returncode != 0:
        raise UsageError(f"sbatch refused the decider job ({out.stderr.strip()[:200]}): "
                         f"run {rundir.command('continue', run_dir)} after phase one")
    decider = out.stdout.strip().split(";")[0]
    early_stop_run.update(run_dir, decider_job=decider)
    subprocess.run(["scontrol", "release", decider], check=True, capture_output=True)
    return decider


def job_name(run_dir: Path, role: str = "") -> str:
    """SLURM's job name for the run: ``seedgrid-<folder>``, letters, digits and ``._-`` only
    (it lands in the sbatch script's ``#SBATCH --job-name`` line)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", run_dir.name)[:64]
    return f"seedgrid-{role + '-' if role else ''}{name}"


def _leave_job_environment() -> None:
    """Submitting from inside a SLURM job (the --early-stop decider): sbatch would export that
    job's SLURM_* variables to the new one, where srun refuses them ("SLURM_MEM_PER_CPU,
    SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"). Drop them."""
    if "SLURM_JOB_ID" in os.environ:
        for key in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_"))]:
            if key != "SLURM_CONF":
                del os.environ[key]


def check_executor(profile: Profile) -> list[str]:
    """Refuse a SLURM profile where SLURM cannot be reached, and a local one whose cells need
    more GPUs than this machine shows (before anything is written). Returns the GPU groups local
    tasks get in turn (:func:`seedgrid.cluster.local_gpu_groups`; [] on SLURM)."""
    if profile.executor == "slurm" and shutil.which("sbatch") is None:
        raise UsageError(f"cluster profile {profile.name!r} needs SLURM but sbatch is not on "
                         "PATH: use --cluster local, or run where SLURM is installed")
    groups = cluster.local_gpu_groups(profile) if profile.executor == "local" else []
    _check_packing(profile, len(groups))
    return groups


def _check_packing(profile: Profile, local_groups: int) -> None:
    """cells_per_gpu > 1 packs one-process cells into each task: refuse cells that are several
    processes themselves, and packing as processes without a GPU to share."""
    k = profile.cells_per_gpu
    if k == 1:
        return
    where = f"cells_per_gpu = {k} (or --pack {k}) with cluster profile {profile.name!r}"
    if profile.gpus_per_cell > 1 or profile.processes_per_cell > 1:
        raise UsageError(f"{where}: a pack trains in one process on at most one GPU, but the "
                         f"profile has gpus_per_cell = {profile.gpus_per_cell}, "
                         f"processes_per_cell = {profile.processes_per_cell}: set both to 1")
    gpus = profile.gpus_per_cell if profile.executor == "slurm" else local_groups
    if profile.pack_as == "processes" and not gpus:
        raise UsageError(f"{where} and pack_as = 'processes': its tasks get no GPU to share "
                         "(gpus_per_cell = 0" + (")" if profile.executor == "slurm" else
                                                  ", and this machine shows none)")
                         + ": give the profile gpus_per_cell = 1, or pack as one stacked model "
                           "(pack_as = 'stacked', also on a CPU)")


def check_pack(cfg: Config, profile: Profile) -> None:
    """Before a pack is submitted: can the engine stack this model, and does the pack fit?
    Says how much memory a task of K cells needs (stderr); refuses (UsageError) a model family
    the engine does not know, fp16 (one loss scale for the pack: one cell's overflow would
    skip its neighbours' updates), and a K whose estimate exceeds what the task is given."""
    k = profile.cells_per_gpu
    if k == 1 or profile.pack_as != "stacked":
        return
    from seedgrid import memory

    if cfg.train.mixed_precision == "fp16":
        raise UsageError(f"--pack {k} with [train] mixed_precision = 'fp16': a pack has one loss "
                         "scale, so one cell's overflow would skip its neighbours' updates: "
                         "use 'bf16' (or 'no'), or do not pack")
    need = memory.pack_memory(cfg, k)  # (checks the model family too)
    have, where = memory.available(profile)
    if have and need.total_gb > have:
        fits = memory.largest_pack(cfg, have)
        raise UsageError(f"--pack {k}: a pack of {k} cells needs about {memory.gb(need.total_gb)} "
                         f"({need.describe(short=True)}), more than the {memory.gb(have)} of "
                         f"{where}: "
                         + (f"pack at most {fits} cells" if fits else "train the cells alone")
                         + " (or give the tasks more memory)")
    logger.info(f"a pack of {k} cells needs about {need.describe()}"
                + (f"; the task has {memory.gb(have)} ({where})" if have else ""))


def warn_if_login_node(profile: Profile) -> None:
    """Warn (stderr) when the local executor is about to train where SLURM is at hand — a
    login node, most likely — outside any SLURM job. Called once the input has proved good:
    bad input stays one line."""
    if (profile.executor == "local" and shutil.which("sbatch") is not None
            and "SLURM_JOB_ID" not in os.environ):
        logger.warning("training on this machine (--cluster local), where SLURM is installed: "
                       "is this a login node? Give --cluster <your profile> (or set "
                       "SEEDGRID_CLUSTER) to train on the cluster")


def max_array_size() -> int:
    """The cluster's MaxArraySize (the largest array index is one less); 1001 if unknown."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1001
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def _record_submission(run_dir: Path, cfg: Config, profile: Profile, arrays: list[dict]) -> dict:
    with locked(run_dir / JOBS):  # another submit, or the decider job, may append too
        record = read_jobs(run_dir)
        record.update(config_hash=cfg.hash)
        record["submissions"].append({
            "submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "cluster": profile.name, "executor": profile.executor,
            "host": socket.gethostname(), "cells_per_gpu": profile.cells_per_gpu,
            "pack_as": profile.pack_as, "arrays": arrays})
        write_text_atomic(run_dir / JOBS, json.dumps(record, indent=1))
    return record


def sacct_states(job_ids: list[str]) -> tuple[dict[str, str], str]:
    """State of each array task ("<job>_<index>" → "RUNNING", ...) from sacct."""
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j",
                              ",".join(job_ids)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"sacct unavailable ({e}); states of cells without a shard are unknown"
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no message"])[0][:120]
        return {}, f"sacct failed ({first}); states of cells without a shard are unknown"
    states = {}
    for line in out.stdout.splitlines():
        job, _, state = line.partition("|")
        state = state.split()[0] if state else ""
        base, _, index = job.partition("_")
        if index.startswith("["):  # a pending range: 31_[2-7%4]
            for part in index.strip("[]").split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    states[f"{base}_{i}"] = state
        else:  # one array task, or a plain job (submitit sends a one-task array as a job)
            states[job] = state
    return states, ""


def settled(job_ids: list[str]) -> bool:
    """Whether sacct shows every task of these SLURM jobs ended (False while any runs, waits,
    or is unknown): what --wait waits for before its final status."""
    states, note = sacct_states(job_ids)
    return bool(states) and not note and all(
        s != "RUNNING" and s not in WAITING for s in states.values())


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
