"""The code that runs on a compute node (and nowhere else): an array task's cells trained — one
at a time, or K at once (a profile's ``cells_per_gpu = K``, ``submit --pack K``) — with their
running markers, their checkpoints saved on SIGTERM/USR2, their shards. :func:`run_cell` is the
one function that trains cells here: an array task (:class:`ArrayTask`), the ``run`` command and
a pack's child process all call it.

A pack (:class:`Pack`) is K cells of the task trained as ONE stacked model in one process (the
pack engine, :mod:`seedgrid.stacked`, the default, ``pack_as = "stacked"``): their matmuls
become one large one's, which is what fills a GPU (one batch-16 cell alone uses a few per cent of
it), and each cell keeps what makes it a cell — its seeds, data order, dropout masks, optimizer
state, clipping, divergence, checkpoint (in the lone format) and shard. It works on a CPU too.
Cells of a pack train in step, so a task packs cells that resume at the same update (its fresh
cells together, its requeued ones together).

Where the engine cannot serve (a model family it does not know: ``stacked.FAMILIES``), a
profile's ``pack_as = "processes"`` trains the K cells side by side on the task's GPU, each in a
process of its own (``python -m seedgrid.grid.worker RUN WI DO THREADS``): the array task starts
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

from seedgrid import log, weights
from seedgrid.grid import early_stop
from seedgrid.grid.cells import needs_training
from seedgrid.config import Config
from seedgrid.log import logger
from seedgrid.rundir import (Cell, cell_state, checkpoint_path, claim, load_run_config,
                             running_marker, shard_path, write_config)
from seedgrid.files import write_text_atomic
from seedgrid.folders import remove_own, set_aside
from seedgrid.store import shard_state, write_atomic

#: seconds the children get to save their checkpoints after SIGTERM
SAVE_S = 60


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
            write_text_atomic(running_marker(run_dir, *cell), marker, root=run_dir)
        yield mine
    finally:
        for cell in mine:
            remove_own(running_marker(run_dir, *cell), Path(run_dir))
        for fd in held:
            os.close(fd)  # (the lock goes with the descriptor)


def run_cell(cfg: Config, run_dir: str | Path, cells: list[Cell], plan: dict | None,
             checkpointers: list) -> list:
    """Train ``cells`` here — one cell, or a pack trained at once — claimed by the caller
    (:func:`claims`): each resumes from its checkpointer's file, saved on SIGTERM; each cell's
    shard is written as soon as it ends and its checkpoint dropped — unless the --early-stop
    ``plan`` stopped it at a fraction: then the checkpoint stays, to continue. Returns the
    shards on the main process, None on the others."""
    from seedgrid.checkpoint import saved_on_terminate
    from seedgrid.trainer import train_cells  # torch: imported only where a cell trains

    def store(k: int, shard, save_weights) -> None:  # the main process writes, once every
        # input proved valid
        write_config(Path(run_dir), cfg)  # (a run folder made by submit has it already)
        wi, do = cells[k]
        path = shard_path(run_dir, wi, do)
        if shard_state(path, cells[k]) == "damaged":  # an unreadable shard: kept aside for a look
            logger.warning(f"[wi={wi} do={do}] the unreadable shard {path} was moved to "
                           f"{set_aside(path, Path(run_dir)).name}")
        write_atomic(shard, path, root=run_dir)
        if shard.status.item() != "stopped":
            checkpointers[k].remove()
        if cfg.output.keep_weights:
            weights.keep(cfg, Path(run_dir), (wi, do), shard, save_weights)

    with saved_on_terminate(*checkpointers):
        return train_cells(cfg, cells, checkpointers=checkpointers, on_end=store,
                           stop_fractions=[early_stop.fraction_for(plan, c) for c in cells])


class Pack:
    """The cells an array task trains at once, and what must be saved of them when the task is
    preempted: ``k`` cells as one stacked model in this process (k = 1: a lone cell), or with
    ``pack_as = "processes"`` a child process each."""

    def __init__(self, k: int = 1, pack_as: str = "stacked", threads: int = 0) -> None:
        self.k, self.pack_as, self.threads = k, pack_as, threads
        self.checkpointers: list = []  # the cells training in this process now
        self.children: dict = {}  # packed as processes: cell -> its running process

    def train(self, run_dir: str, todo: list[Cell], plan: dict | None) -> None:
        """Train the task's cells ``todo``, ``k`` at a time."""
        if self.k > 1 and self.pack_as == "processes":  # each child reads the config itself
            return self._train_as_processes(run_dir, todo)
        from seedgrid.checkpoint import Checkpointer

        cfg = load_run_config(Path(run_dir))
        with claims(run_dir, todo) as mine:  # one trainer per cell
            # (claimed now: a cell another trainer finished meanwhile has its shard)
            todo = [c for c in mine if needs_training(run_dir, c, plan)]
            checkpointers = [Checkpointer(checkpoint_path(run_dir, *c), root=run_dir) for c in todo]
            for group in packs(checkpointers, self.k):
                self.checkpointers = [checkpointers[i] for i in group]
                run_cell(cfg, run_dir, [todo[i] for i in group], plan, self.checkpointers)
        self.checkpointers = []

    def _train_as_processes(self, run_dir: str, todo: list[Cell]) -> None:
        """Each cell in a child process, ``k`` at a time (registered in ``children`` while it
        runs). Raises if a cell ended without a shard (once the others finished): the task
        failed, the cells with shards are done."""
        todo = list(todo)
        per_child = threads(self.threads, share=self.k)  # the task's CPUs shared among them
        failed = []
        while todo or self.children:
            while todo and len(self.children) < self.k:
                wi, do = todo.pop(0)
                self.children[wi, do] = subprocess.Popen(
                    [sys.executable, "-m", "seedgrid.grid.worker", str(run_dir), str(wi),
                     str(do), str(per_child)])
            for cell, proc in list(self.children.items()):
                if proc.poll() is not None:
                    del self.children[cell]
                    if proc.returncode != 0:
                        failed.append((cell, proc.returncode))
            time.sleep(0.5)
        if failed:
            raise RuntimeError("cell(s) " + ", ".join(f"(wi={wi}, do={do}) exit {rc}"
                                                      for (wi, do), rc in failed)
                               + " ended without a shard; the task's other cells are unharmed")

    def save(self) -> None:
        """Preempted: every running cell saves its checkpoint — a child on SIGTERM (waited
        for, at most :data:`SAVE_S` seconds), a cell of this process here."""
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SAVE_S
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for checkpointer in self.checkpointers:
            checkpointer.save()


def packs(checkpointers: list, k: int) -> list[list[int]]:
    """The task's cells (indices) as packs of at most ``k`` that resume at one update (the
    update of each one's checkpoint, 0 without one), in order."""
    by_update: dict[int, list[int]] = {}
    for i, checkpointer in enumerate(checkpointers):
        by_update.setdefault(checkpointer.update(), []).append(i)
    return [group[j:j + k] for group in by_update.values() for j in range(0, len(group), k)]


class ArrayTask:
    """What one array task runs: train each of its cells that has no shard yet, as a
    :class:`Pack` of ``pack`` cells (one stacked model, or with ``pack_as = "processes"`` a
    process each; 1: one cell at a time).

    A cell resumes from its checkpoint when it has one. On preemption or time limit, submitit
    calls :meth:`checkpoint` (in its USR2 handler): the running cells' states are saved and the
    task requeued with the same cells; finished cells are skipped on restart. Pickled (by
    submitit, into the run folder's logs/) with its settings only.
    """

    def __init__(self, threads: int = 0, pack: int = 1, pack_as: str = "stacked") -> None:
        #: CPUs for this task's cells (0: the CPUs SLURM gave it, else torch's own)
        self.threads = threads
        #: cells trained at once (cells_per_gpu), and how: one stacked model, or processes
        self.pack, self.pack_as = pack, pack_as
        self._running: Pack | None = None

    def __getstate__(self) -> dict:
        return {"threads": self.threads, "pack": self.pack, "pack_as": self.pack_as}

    def __setstate__(self, state: dict) -> None:
        # (a task pickled before seedgrid.grid, as seedgrid.dispatch.ArrayTask, held its running
        # cells too — always empty in a pickle: only its settings are read)
        self.__init__(state.get("threads", 0), state.get("pack", 1),  # type: ignore[misc]
                      state.get("pack_as", "stacked"))

    def __call__(self, run_dir: str, cells: list[Cell]) -> list[str]:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # several processes train each cell (DDP)
            # SLURM already limits the task to its GPUs; Accelerate takes cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                  overwrite=True)
        log.configure()  # this process is seedgrid's: progress and warnings to the task's log
        set_threads(self.threads)
        plan = early_stop.read(Path(run_dir))  # early stopping: phase one stops, two goes on
        todo = [c for c in cells if needs_training(run_dir, c, plan)]  # a damaged shard trains again
        self._running = Pack(self.pack, self.pack_as, self.threads)
        self._running.train(run_dir, todo, plan)
        self._running = None
        end_distributed()
        return [str(cell_state(run_dir, c)) for c in cells]

    def checkpoint(self, run_dir: str, cells: list[Cell]):
        import submitit

        if self._running is not None:
            self._running.save()
        return submitit.helpers.DelayedSubmission(ArrayTask(self.threads, self.pack,
                                                            self.pack_as), run_dir, cells)


def threads(given: int = 0, share: int = 1) -> int:
    """torch's intra-op threads for a cell's process: the CPUs of the task — SLURM's
    (SLURM_CPUS_PER_TASK), else ``given`` (what the local backend gave it) — shared among the
    ``share`` processes that train at once; 0 (torch's default) when nothing was given to one
    process. The one place this is decided: two cells on one machine each using every core
    oversubscribe it (a demo cell: 293 s instead of 66 s)."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or given
    if not cpus and share == 1:
        return 0
    return max(1, (cpus or os.cpu_count() or 1) // share)


def set_threads(given: int = 0) -> int:
    """Set torch's threads to :func:`threads` (unless 0); returns what torch uses."""
    import torch

    n = threads(given)
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def end_distributed() -> None:
    """Leave the process group (several processes per cell) before the process ends: a gloo
    or NCCL group still alive at exit can abort it ("terminate called without an active
    exception") after the shard was written."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str]) -> None:
    """A child (``pack_as = "processes"``): train cell (WI, DO) of the run folder as a lone
    array task would."""
    from seedgrid.checkpoint import Checkpointer

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the parent task handles preemption
    run_dir, wi, do, n = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    log.configure()
    set_threads(n)
    cfg = load_run_config(Path(run_dir))
    plan = early_stop.read(Path(run_dir))
    with claims(run_dir, [(wi, do)]) as mine:
        if mine:
            run_cell(cfg, run_dir, mine, plan,
                     [Checkpointer(checkpoint_path(run_dir, wi, do), root=run_dir)])


if __name__ == "__main__":
    main(sys.argv[1:])
