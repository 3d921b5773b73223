"""What trains one cell inside an array task — the running marker, the checkpoint saved on
SIGTERM, the shard — and several cells at once in one task (a profile's ``cells_per_gpu = K``,
``submit --pack K``): K cells side by side on the task's GPU(s), each in a process of its own.

One GPU trains one batch-16 cell at a few per cent of its peak (issue 11: 5.6% for BERT-large on
an H100, bound by per-update launch and Python overhead); 4 and 8 cells as separate processes
on the one GPU reached 2.8x and 3.0x the throughput of one, as much as one process training 8
cells as a vmapped ensemble (2.8x, 62 GB, with eager attention only). Processes keep what a
cell is: its own seeds, RNG and checkpoint, the same code path as a lone cell (bitwise the
same shard on CPU), and a cell that crashes or diverges cannot take its neighbours down. With
CUDA MPS running on the node their kernels can overlap instead of taking turns.

The array task's process starts the children (``python -m seedgrid.celltask RUN WI DO
THREADS``) and waits; each child trains its cell as a lone task would. On USR2 (preemption,
time limit) the task SIGTERMs every child — each saves its checkpoint — and is requeued with its
cells; the requeued task resumes them. A child ignores USR2 itself (SLURM signals every process
of the step): its parent decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from seedgrid import early_stop_run
from seedgrid.config import Config
from seedgrid.log import logger
from seedgrid.rundir import Cell, running_marker, shard_path, write_config
from seedgrid.store import (remove_stale_temporaries, set_aside, shard_state, write_atomic,
                            write_text_atomic)

#: seconds the children get to save their checkpoints after SIGTERM
SAVE_S = 60


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
        path = shard_path(run_dir, seed_wi, seed_do)
        if shard_state(path) == "damaged":  # an unreadable shard: kept aside for a look
            logger.warning(f"[wi={seed_wi} do={seed_do}] the unreadable shard {path} was moved "
                           f"to {set_aside(path).name}")
        remove_stale_temporaries(path)
        write_atomic(shard, path)
        if shard.status.item() != "stopped":
            checkpointer.remove()
    return shard


@contextlib.contextmanager
def running(run_dir: str | Path, cell: Cell):
    """Mark ``cell`` as training on this host (``running/wi<W>_do<D>.json``: pid, host, its
    GPUs, start), so that ``status`` can tell a running local cell from a missing one and say
    where it trains."""
    path = running_marker(run_dir, *cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                                        "started": time.time()}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def train_task_cell(cfg: Config, run_dir: str | Path, cell: Cell, plan: dict | None,
                    checkpointer) -> str | None:
    """One cell of an array task: marked running, its checkpoint saved on SIGTERM (it resumes
    from one), trained and stored; its status (None on a process that is not the main one)."""
    from seedgrid.checkpoint import saved_on_terminate

    with running(run_dir, cell):
        with saved_on_terminate(checkpointer):
            shard = train_and_store(cfg, run_dir, *cell, checkpointer,
                                    stop_fraction=early_stop_run.fraction_for(plan, cell))
    return None if shard is None else str(shard.status.item())


def train_at_once(run_dir: str, cells: list[Cell], todo: list[Cell], k: int, threads: int,
                  children: dict) -> list[str]:
    """Train the cells ``todo`` (of the task's ``cells``), ``k`` at a time, each in a child
    process (registered in ``children`` while it runs); the statuses of ``cells``. Raises if a
    cell ended without a shard (once the others finished): the task failed, the cells with
    shards are done."""
    todo = list(todo)
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or threads or os.cpu_count() or 1
    per_child = max(1, cpus // k)  # the task's CPUs shared, not each child taking them all
    failed = []
    while todo or children:
        while todo and len(children) < k:
            wi, do = todo.pop(0)
            children[wi, do] = subprocess.Popen(
                [sys.executable, "-m", "seedgrid.celltask", str(run_dir), str(wi), str(do),
                 str(per_child)])
        for cell, proc in list(children.items()):
            if proc.poll() is not None:
                del children[cell]
                if proc.returncode != 0:
                    failed.append((cell, proc.returncode))
        time.sleep(0.5)
    if failed:
        raise RuntimeError("cell(s) " + ", ".join(f"(wi={wi}, do={do}) exit {rc}"
                                                  for (wi, do), rc in failed)
                           + " ended without a shard; the task's other cells are unharmed")
    return [str(shard_state(shard_path(run_dir, *c))) for c in cells]


def stop_and_save(children: dict) -> None:
    """SIGTERM every running child (each saves its cell's checkpoint and exits), and wait for
    them, at most :data:`SAVE_S` seconds."""
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SAVE_S
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def main(argv: list[str]) -> None:
    """A child: train cell (WI, DO) of the run folder as a lone array task would."""
    from seedgrid import log
    from seedgrid.checkpoint import Checkpointer
    from seedgrid.config import load_config
    from seedgrid.rundir import CONFIG, checkpoint_path

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the parent task handles preemption
    run_dir, wi, do, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    log.configure()
    import torch

    torch.set_num_threads(threads)
    cfg = load_config(Path(run_dir) / CONFIG)
    plan = early_stop_run.read(Path(run_dir))
    train_task_cell(cfg, run_dir, (wi, do), plan,
                    Checkpointer(checkpoint_path(run_dir, wi, do)))


if __name__ == "__main__":
    main(sys.argv[1:])
