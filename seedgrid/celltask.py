"""What trains cells inside an array task — the running markers, the checkpoints saved on
SIGTERM, the shards — one cell at a time, or K at once (a profile's ``cells_per_gpu = K``,
``submit --pack K``).

A pack is K cells of the task trained as ONE stacked model in one process (the pack engine,
:mod:`seedgrid.stacked`, the default, ``pack_as = "stacked"``): their matmuls become one large
one's, which is what fills a GPU (one batch-16 cell alone uses a few per cent of it), and each
cell keeps what makes it a cell — its seeds, data order, dropout masks, optimizer state,
clipping, divergence, checkpoint (in the lone format) and shard. It works on a CPU too. Cells of
a pack train in step, so a task packs cells that resume at the same update (its fresh cells
together, its requeued ones together).

Where the engine cannot serve (a model family it does not know: ``stacked.FAMILIES``), a
profile's ``pack_as = "processes"`` trains the K cells side by side on the task's GPU, each in a
process of its own (``python -m seedgrid.celltask RUN WI DO THREADS``): the array task starts
the children and waits; on USR2 (preemption, time limit) it SIGTERMs them — each saves its
checkpoint — and is requeued with its cells. A child ignores USR2 itself (SLURM signals every
process of the step): its parent decides.
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
from seedgrid.rundir import Cell, cell_state, claim, running_marker, shard_path, write_config
from seedgrid.files import set_aside, write_text_atomic
from seedgrid.store import shard_state, write_atomic

#: seconds the children get to save their checkpoints after SIGTERM
SAVE_S = 60


def train_and_store(cfg: Config, run_dir: str | Path, cells: list[Cell], checkpointers: list,
                    stop_fractions: list[float | None] | None = None) -> list:
    """Train ``cells`` (one, or a pack), each resuming from its checkpointer's file; write each
    cell's shard as soon as it ends and drop its checkpoint — unless it stopped early
    (``stop_fractions``): then the checkpoint stays, to continue.

    Returns the shards on the main process, None on the others.
    """
    from seedgrid.trainer import train_cells  # torch: imported only where a cell trains

    def store(k: int, shard) -> None:  # the main process writes, once every input proved valid
        write_config(Path(run_dir), cfg)  # (a run folder made by submit has it already)
        wi, do = cells[k]
        path = shard_path(run_dir, wi, do)
        if shard_state(path, cells[k]) == "damaged":  # an unreadable shard: kept aside for a look
            logger.warning(f"[wi={wi} do={do}] the unreadable shard {path} was moved to "
                           f"{set_aside(path).name}")
        write_atomic(shard, path)
        if shard.status.item() != "stopped":
            checkpointers[k].remove()

    return train_cells(cfg, cells, checkpointers=checkpointers, stop_fractions=stop_fractions,
                       on_end=store)


@contextlib.contextmanager
def claims(run_dir: str | Path, cells: list[Cell]):
    """Claim ``cells`` for this process (:func:`seedgrid.rundir.claim`: a lock that dies with
    it) and mark them as training here (``running/wi<W>_do<D>.json``: pid, host, GPUs, start:
    ``status`` says where a cell trains); yields the cells claimed. A cell another process
    holds is left to it, saying so: one trainer per cell, whatever submits overlap."""
    rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    if rank != 0:  # several processes train each cell: the main one claims them
        yield list(cells)
        return
    held, mine = [], []
    marker = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                         "started": time.time()})
    try:
        for cell in cells:
            fd = claim(run_dir, cell)
            if fd is None and world > 1:  # the other processes would wait for it forever
                raise RuntimeError(f"cell (wi={cell[0]}, do={cell[1]}) is trained by another "
                                   "process (its claim is held): this task's processes cannot "
                                   "skip it together; resubmit once it has finished")
            if fd is None:
                logger.warning(f"[wi={cell[0]} do={cell[1]}] another process is training it "
                               "(its claim is held): left to it")
                continue
            held.append(fd)
            mine.append(cell)
            write_text_atomic(running_marker(run_dir, *cell), marker)
        yield mine
    finally:
        for cell in mine:
            running_marker(run_dir, *cell).unlink(missing_ok=True)
        for fd in held:
            os.close(fd)  # (the lock goes with the descriptor)


def train_task_cells(cfg: Config, run_dir: str | Path, cells: list[Cell], plan: dict | None,
                     checkpointers: list) -> list[str] | None:
    """Cells of an array task (claimed: :func:`claims`) trained at once (one, or a pack): their
    checkpoints saved on SIGTERM (they resume from them), trained and stored; their statuses
    (None on a process that is not the main one)."""
    from seedgrid.checkpoint import saved_on_terminate

    with saved_on_terminate(*checkpointers):
        shards = train_and_store(cfg, run_dir, cells, checkpointers,
                                 [early_stop_run.fraction_for(plan, c) for c in cells])
    if shards[0] is None:
        return None
    return [str(shard.status.item()) for shard in shards]


def packs(cells: list[Cell], checkpointers: list, k: int) -> list[list[int]]:
    """The task's cells (indices) as packs of at most ``k`` that resume at one update (the
    update of each one's checkpoint, 0 without one), in order."""
    by_update: dict[int, list[int]] = {}
    for i, checkpointer in enumerate(checkpointers):
        by_update.setdefault(checkpointer.update(), []).append(i)
    return [group[j:j + k] for group in by_update.values() for j in range(0, len(group), k)]


def train_at_once(run_dir: str, cells: list[Cell], todo: list[Cell], k: int, threads: int,
                  children: dict) -> list[str]:
    """``pack_as = "processes"``: train the cells ``todo`` (of the task's ``cells``), ``k`` at
    a time, each in a child process (registered in ``children`` while it runs); the statuses of
    ``cells``. Raises if a cell ended without a shard (once the others finished): the task
    failed, the cells with shards are done."""
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
    return [str(cell_state(run_dir, c)) for c in cells]


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
    """A child (``pack_as = "processes"``): train cell (WI, DO) of the run folder as a lone
    array task would."""
    from seedgrid import log
    from seedgrid.checkpoint import Checkpointer
    from seedgrid.rundir import checkpoint_path, load_run_config

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the parent task handles preemption
    run_dir, wi, do, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    log.configure()
    import torch

    torch.set_num_threads(threads)
    cfg = load_run_config(Path(run_dir))
    plan = early_stop_run.read(Path(run_dir))
    with claims(run_dir, [(wi, do)]) as mine:
        if mine:
            train_task_cells(cfg, run_dir, mine, plan,
                             [Checkpointer(checkpoint_path(run_dir, wi, do))])


if __name__ == "__main__":
    main(sys.argv[1:])
