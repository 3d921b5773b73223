"""Which cells train, in which tasks, on which backend — and the checks made where the user types,
before anything is written or submitted.

The shards on disk are the truth: a cell with a finished shard never trains again, so a rerun or
a resumed submission redoes only what is missing (:func:`needs_training`, the one place this is
decided). Consecutive cells share an array task (:func:`split`).
"""

from __future__ import annotations

import dataclasses

from pathlib import Path
from types import ModuleType

from seedgrid.config import Config
from seedgrid.errors import UsageError
from seedgrid.grid import early_stop, local, slurm
from seedgrid.grid.profile import Profile
from seedgrid.log import logger
from seedgrid.rundir import Cell, cell_state, command

#: shard states of a cell that trained to its end (well or not): never trained again
FINISHED = ("done", "diverged")


def backend(profile: Profile) -> ModuleType:
    """The module that runs the profile's tasks: :mod:`seedgrid.grid.local` or
    :mod:`seedgrid.grid.slurm` (the same functions in each)."""
    return slurm if profile.executor == "slurm" else local


def needs_training(run_dir: str | Path, cell: Cell, plan: dict | None = None) -> bool:
    """Whether ``cell`` still has to train: no shard, a damaged one, or (phase two of
    --early-stop, ``plan``) a stopped shard chosen to continue. The one place this is decided."""
    state = cell_state(run_dir, cell)
    if state == "stopped":
        return early_stop.to_continue(plan, cell)
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
            if not slurm.settled([running]):
                raise UsageError(f"{str(run_dir)!r} is in phase one and its decider job "
                                 f"{running} still waits for it: let it finish "
                                 f"({command('status', run_dir)}), or scancel {running} first")
        return [tuple(c) for c in record["phase_one"] if needs_training(run_dir, tuple(c))]
    return [tuple(c) for c in record["continued_cells"]
            if needs_training(run_dir, tuple(c), record)]


def task_layout(profile: Profile, n_cells: int, array: int | None,
                parallel: int | None) -> tuple[int, int]:
    """(array tasks, most at once) for ``n_cells``: one task per cell (per ``cells_per_gpu``
    cells when packed) unless ``array`` says fewer, as the backend can run them (SLURM queues
    them, ``parallel`` at once; the local backend starts every task at once)."""
    n_tasks = array or -(-n_cells // profile.cells_per_gpu)  # packed: K cells a task
    return backend(profile).task_layout(profile, n_tasks, parallel)


def split(cells: list[Cell], n_tasks: int) -> list[list[Cell]]:
    """Consecutive cells into ``n_tasks`` tasks whose sizes differ by at most one."""
    size, extra = divmod(len(cells), n_tasks)
    bounds = [0]
    for i in range(n_tasks):
        bounds.append(bounds[-1] + size + (i < extra))
    return [cells[a:b] for a, b in zip(bounds, bounds[1:])]


def check_inputs(cfg: Config, ask_hub: bool = True) -> dict[str, str]:
    """What every cell will need, checked where the user is, before anything is written or
    submitted: the model's files, the data (files readable, columns, labels; downloaded into
    the cache from the hub where there is one) and an evaluation schedule the training set
    can keep; a hub model id, asked of the hub where it answers (``ask_hub``: not for ``run``,
    which loads the model right here). A task that would fail on these fails here instead,
    once, in one line. Returns
    the data's fingerprints, as shards record them."""
    from seedgrid import data, model, splits

    model.resolve(cfg.model.name)
    unchecked = model.check_on_hub(cfg.model.name) if ask_hub else None
    if unchecked:
        logger.warning(unchecked)
    if cfg.lora.rank:
        model.check_lora(cfg.model, cfg.lora)
    train, validation = splits.load_splits(cfg.task)
    data.evaluation_updates(data.updates_per_epoch(len(train), cfg.train.batch_size),
                            cfg.train.epochs, cfg.train.evals_per_epoch)
    return {"data_train": train.fingerprint(), "data_validation": validation.fingerprint()}


def check_backend(profile: Profile) -> list[str]:
    """Refuse a profile its backend cannot run here (SLURM not reachable, more GPUs a cell than
    this machine shows, a pack that cannot be laid out), before anything is written. Returns the
    GPU groups local tasks get in turn ([] on SLURM). Once per command: it may ask nvidia-smi."""
    groups = backend(profile).check(profile)
    _check_packing(profile, groups)
    return groups


def _check_packing(profile: Profile, groups: list[str]) -> None:
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
    if profile.pack_as == "processes" and not backend(profile).task_gpus(profile, groups):
        raise UsageError(f"{where} and pack_as = 'processes': its tasks get no GPU to share "
                         "(gpus_per_cell = 0" + (")" if profile.executor == "slurm" else
                                                  ", and this machine shows none)")
                         + ": give the profile gpus_per_cell = 1, or pack as one stacked model "
                           "(pack_as = 'stacked', also on a CPU)")


def check_precision(cfg: Config, profile: Profile) -> None:
    """Refuse fp16 where cells train on the CPU: Accelerate silently trains in fp32 there, so
    the config (hashed with fp16) would not say what the cells are."""
    if cfg.train.mixed_precision == "fp16" and backend(profile).on_cpu(profile):
        raise UsageError(f"[train] mixed_precision = 'fp16' with cluster profile "
                         f"{profile.name!r}, whose cells train on the CPU (no GPU): set "
                         "mixed_precision = 'no' (or 'bf16'), or give the profile gpus_per_cell")


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
        checkpointed = dataclasses.replace(cfg, runtime=dataclasses.replace(
            cfg.runtime, gradient_checkpointing=True))
        recompute = not cfg.runtime.gradient_checkpointing and \
            memory.pack_memory(checkpointed, k).total_gb <= have
        raise UsageError(f"--pack {k}: a pack of {k} cells needs about {memory.gb(need.total_gb)} "
                         f"({need.describe(short=True)}), more than the {memory.gb(have)} of "
                         f"{where}: "
                         + (f"pack at most {fits} cells" if fits else "train the cells alone")
                         + (", or set [runtime] gradient_checkpointing = true (the pack of "
                            f"{k} then fits: activations recomputed)" if recompute else "")
                         + " (or give the tasks more memory)")
    logger.info(f"a pack of {k} cells needs about {need.describe()}"
                + (f"; the task has {memory.gb(have)} ({where})" if have else ""))
