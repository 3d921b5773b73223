"""Train cells with Accelerate — one alone, or K at once as one stacked model (a pack) — and hand
each back as a shard Dataset.

Reads top to bottom: set up (data; the model: pretrained body, a head from each cell's seed_wi,
K cells stacked into one model when K > 1; AdamW, the schedule) → resume each cell from its
checkpoint → evaluate before training → for each update: each cell's global batch of its seed_do
order, forward/backward over this process's micro-batches (the K cells folded into one batch),
clipping per cell, one optimizer update → evaluate when due → each cell as a Dataset, as soon as
it ends.

A lone cell runs on one process (``python -m seedgrid run``) or several (``torchrun``,
``accelerate launch``, a multi-GPU SLURM task): each process takes its slice of every global batch
(:mod:`seedgrid.data`). A pack runs in one process. Either way a cell is its seeds: the same
global batches and dropout masks (:mod:`seedgrid.dropout`), its own clipping, optimizer state,
divergence and early stop, whatever the layout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from seedgrid import data, engine, metrics
from seedgrid.checkpoint import Checkpointer
from seedgrid.config import Config
from seedgrid.engine import Pack, Run
from seedgrid.log import logger
from seedgrid.resume import NotInStep, resume_cells

#: called on every process after each update with (update, each cell's example positions this
#: process used)
OnUpdate = Callable[[int, list], None]
#: called on the main process with (cell index, its shard, a function writing the cell's final
#: weights to a folder: seedgrid.engine.save_weights) as soon as a cell ends
OnEnd = Callable[[int, object, Callable[[Path], None]], None]

#: a mean cross-entropy above this (nats per example: the gold label's probability below
#: e^-100; regression: a squared error of 100) means training has exploded; the cell is marked
#: diverged, as for a NaN loss
EXPLODED_LOSS = 100.0


def train_cell(cfg: Config, seed_wi: int, seed_do: int, *, on_update=None,
               checkpointer: Checkpointer | None = None, log: Callable[[str], None] = logger.info,
               stop_fraction: float | None = None):
    """Fine-tune one cell and return its shard (an ``xarray.Dataset``; None on processes other
    than the main one); see :func:`train_cells`. ``on_update`` gets (update, the example
    positions this process used)."""
    hook = None if on_update is None else (lambda u, used: on_update(u, used[0]))
    shards = train_cells(cfg, [(seed_wi, seed_do)], checkpointers=[checkpointer],
                         stop_fractions=[stop_fraction], on_update=hook, log=log)
    return shards[0]


def train_cells(cfg: Config, cells: list[tuple[int, int]], *,
                checkpointers: list[Checkpointer | None] | None = None,
                stop_fractions: list[float | None] | None = None,
                on_update: OnUpdate | None = None, on_end: OnEnd | None = None,
                log: Callable[[str], None] = logger.info) -> list:
    """Fine-tune ``cells`` at once (one stacked model when there are several) and return their
    shards (main process; None elsewhere), each also given to ``on_end`` when its cell ends.

    With checkpointers, each cell resumes from its checkpoint if there is one (all at the same
    update: a pack trains cells in step), and binds its state so that a preemption handler can
    save it; with ``[runtime] checkpoint_every_evals`` they also save after every N-th
    evaluation. A cell with a ``stop_fraction`` (early stopping, seedgrid.grid.early_stop) stops
    after the last evaluation at or before that fraction of training, saves its checkpoint and
    ends as ``stopped``; trained again without it, it continues from there. A cell whose loss
    explodes ends as ``diverged`` while the others go on.
    """
    started = time.time()
    checkpointers = checkpointers or [None] * len(cells)
    stop_fractions = stop_fractions or [None] * len(cells)
    pack = engine.setup(cfg, cells)
    main = pack.accelerator.is_main_process
    say = log if main else (lambda _: None)
    try:
        runs = resume_cells(pack, checkpointers, say, started)
    except NotInStep as e:  # trained as packs in step, one after the other
        del pack
        return _in_step(cfg, cells, e, checkpointers, stop_fractions, on_update, on_end, log)
    for run, fraction in zip(runs, stop_fractions):
        run.stop_at = None if fraction is None else data.stop_update(pack.eval_at, fraction)
    say(f"{engine.cell_names(runs)} {pack.task.name}: {len(pack.train)} train / {len(pack.val)} "
        f"validation examples, {pack.total_updates} updates, {len(pack.eval_at)} evaluations, "
        + (f"{pack.world} process(es)" if pack.k == 1 else f"a pack of {pack.k} cells"))
    shards: list = [None] * len(runs)

    def end(k: int, status: str) -> None:  # a cell is over: its shard, its checkpoint frozen
        runs[k].status = status
        checkpointer = runs[k].checkpointer
        if checkpointer is not None:
            checkpointer.bind(None)  # (a later save would write a state past its end)
        if main:
            shards[k] = engine.shard(pack, runs[k])
            if on_end is not None:
                on_end(k, shards[k], lambda folder: engine.save_weights(pack, k, folder))

    # --- evaluations due by now: before training, or interrupted during one ------------------
    due = int(np.searchsorted(pack.eval_at, runs[0].progress.update, side="right"))
    if any(run.progress.evaluated < due for run in runs):  # (a pack resumes at one update)
        logits = pack.evaluate()
        for k, run in enumerate(runs):
            run.progress.logits[due - 1] = logits[k]
            run.progress.evaluated = due
    _train(pack, runs, on_update, end, say)
    pack.accelerator.wait_for_everyone()
    for k, run in enumerate(runs):
        if run.status == "training":
            end(k, "done")
    return shards


def _train(pack: Pack, runs: list[Run], on_update: OnUpdate | None,
           end: Callable[[int, str], None], say: Callable[[str], None]) -> None:
    """One optimizer update per global batch (of each cell) from where the cells are, each
    evaluation when due; a cell ends (``end``) at its early stop or when it diverges."""
    cfg, main = pack.cfg, pack.accelerator.is_main_process
    start = runs[0].progress.update
    for epoch in range(start // pack.per_epoch, cfg.train.epochs):
        orders = [data.global_batches(len(pack.train), cfg.train.batch_size, run.seed_do, epoch)
                  for run in runs]
        for b in range(pack.per_epoch):
            update = epoch * pack.per_epoch + b
            if update < start:
                continue  # done before a restart
            for k, run in enumerate(runs):
                if run.status == "training" and update == run.stop_at:  # early stopping
                    if run.checkpointer is not None and main:
                        run.checkpointer.save()
                    say(f"{run.name} stopped at update {update} (early stopping)")
                    end(k, "stopped")
            live = [run.status == "training" for run in runs]
            if not any(live):
                return
            used = engine.update_cells(pack, runs, update, [order[b] for order in orders], live)
            if on_update is not None:
                on_update(update + 1, used)
            for k, run in enumerate(runs):
                loss = run.progress.train_loss[update]
                if live[k] and not loss <= EXPLODED_LOSS:  # NaN fails this comparison too
                    say(f"{run.name} diverged at update {update + 1}: loss {loss}")
                    end(k, "diverged")  # keeps what was evaluated so far; the rest stays NaN
            if update + 1 in pack.eval_at:
                _evaluate_due(pack, runs, update + 1, say)


def _in_step(cfg: Config, cells: list[tuple[int, int]], e: NotInStep, checkpointers: list,
             stop_fractions: list, on_update: OnUpdate | None, on_end: OnEnd | None,
             log: Callable[[str], None]) -> list:
    """Cells whose checkpoints resume at different updates (one was set aside): a pack for
    each group in step, one after the other; their shards in the cells' order."""
    shards: list = [None] * len(cells)
    for group in e.groups:
        for k in group:
            if checkpointers[k] is not None:
                checkpointers[k].keep(e.saved[k])

        def ended(i: int, shard, save, group: list[int] = group) -> None:
            if on_end is not None:
                on_end(group[i], shard, save)

        done = train_cells(cfg, [cells[k] for k in group],
                           checkpointers=[checkpointers[k] for k in group],
                           stop_fractions=[stop_fractions[k] for k in group],
                           on_update=on_update, on_end=ended, log=log)
        for k, shard in zip(group, done):
            shards[k] = shard
    return shards


def _evaluate_due(pack: Pack, runs: list[Run], update: int, say) -> None:
    """The evaluation after ``update``: every training cell's logits, its metric said, and its
    periodic checkpoint written when one is due."""
    j = int(np.searchsorted(pack.eval_at, update))
    logits = pack.evaluate()
    every = pack.cfg.runtime.checkpoint_every_evals
    for k, run in enumerate(runs):
        if run.status != "training":
            continue
        run.progress.logits[j] = logits[k]
        run.progress.evaluated = j + 1
        value = metrics.score(logits[k], pack.val.labels, pack.task.metric)
        say(f"{run.name} update {update}/{pack.total_updates} (epoch "
            f"{update / pack.per_epoch:.2f}) loss {run.progress.train_loss[update - 1]:.4f} "
            f"{pack.task.metric} {value:.4f}")
        if (run.checkpointer is not None and pack.accelerator.is_main_process and every
                and j % every == 0 and update < pack.total_updates):
            run.checkpointer.save_if_possible()  # one writer: states are equal on all ranks


