"""The ``run``, ``submit`` and ``continue`` commands, where the user types them: which cells to
train, in how many tasks, and (``--early-stop``) how phase two follows phase one. Each prints
what it did and returns whether every cell it waited for is ``done``.

The pieces live with their owners, in :mod:`seedgrid.grid`: which cells and the checks in
``cells``, the submission in ``jobs``, the backends in ``local`` and ``slurm``, what a task runs
in ``worker``, the early-stop plan and decision in ``early_stop``, waiting in ``status``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from seedgrid import config, rundir
from seedgrid.errors import UsageError
from seedgrid.grid import cells as grid_cells
from seedgrid.grid import early_stop, jobs as grid_jobs, local, slurm, status, worker
from seedgrid.grid.profile import Profile, load_profile
from seedgrid.log import logger


@dataclass(frozen=True)
class Request:
    """What ``submit`` is asked (its options, by their names): a new grid (``config``: a name,
    file or Config) or a run folder to resume (``resume``), on which cluster profile, in how
    many tasks, packed how, stopped early how, swept over which training sizes."""
    config: str | config.Config | None = None
    resume: str | None = None
    cluster: str | None = None
    array: int | None = None
    parallel: int | None = None
    out: str | None = None
    wait: bool = False
    early_stop: str | None = None
    budget: float | None = None
    from_cube: str | None = None
    #: Bui et al.'s training-size axis: the grid once per size, each in ``<out>/n<size>``
    train_sizes: tuple[int, ...] = ()
    #: one size of such a sweep (set by the sweep itself)
    train_size: int | None = None
    #: cells a task trains at once, and how (the profile's cells_per_gpu and pack_as)
    pack: int | None = None
    pack_as: str | None = None
    #: say what would be submitted, and write nothing
    dry_run: bool = False
    #: --set cluster.KEY=VALUE: the profile's settings for this submission ("KEY=VALUE")
    cluster_set: tuple[str, ...] = ()


def run_one(config_name: str | config.Config, seed_wi: int, seed_do: int, out: str | None) -> bool:
    """Train one cell here (or in each process of torchrun) and write its shard."""
    import numpy as np

    from seedgrid import metrics, store
    from seedgrid.checkpoint import Checkpointer

    cfg = config.load_config(config_name)
    config.check_seeds("seed_wi", [seed_wi])
    config.check_seeds("seed_do", [seed_do])
    run_dir = Path(out or f"runs/{Path(cfg.source).stem}")
    rundir.check_writable(run_dir)
    rundir.check_config(run_dir, cfg)
    rundir.check_unchanged(run_dir, cfg, grid_cells.check_inputs(cfg, ask_hub=False))
    grid_cells.check_precision(cfg, Profile())
    path = rundir.shard_path(run_dir, seed_wi, seed_do)
    state = store.shard_state(path, (seed_wi, seed_do))
    if state in grid_cells.FINISHED:
        print(f"{path} exists: cell (wi={seed_wi}, do={seed_do}) is {state}; delete it to train "
              "again")
        return True
    worker.set_threads()
    new_folder = not os.path.lexists(run_dir)
    try:
        with worker.claims(run_dir, [(seed_wi, seed_do)]) as mine:
            if not mine:  # another process trains it: one trainer per cell
                return False
            checkpointer = Checkpointer(rundir.checkpoint_path(run_dir, seed_wi, seed_do),
                                        root=run_dir)
            (shard,) = worker.run_cell(cfg, run_dir, mine, None, [checkpointer])
    except UsageError:  # found only once training began (a hub model that is not there)
        if new_folder and not rundir.shards_on_disk(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing of it was made: nothing left
        raise
    worker.end_distributed()
    if shard is None:  # not the main process
        return True
    curve = metrics.score(shard.logits.values[0, 0].transpose(1, 0, 2),
                          shard.label.values, shard.attrs["metric"])
    best = float(np.nanmax(curve)) if np.isfinite(curve).any() else float("nan")
    cell_status = shard.status.values[0, 0]
    print(f"wrote {path}: {cell_status}, {shard.attrs['metric']} at the end {curve[-1]:.4f}, "
          f"best {best:.4f} (before training {curve[0]:.4f}; majority baseline "
          f"{shard.attrs['majority_baseline']:.4f}), "
          f"{float(shard.wall_time_s.values.item()):.0f} s")
    return cell_status == "done"  # a diverged cell is a result, not a success


def profile_named(cluster_name: str | None, pack: int | None = None,
                  pack_as: str | None = None, overrides: tuple[str, ...] = ()
                  ) -> tuple[Profile, str, list[str]]:
    """The profile of --cluster, else of SEEDGRID_CLUSTER (a site's or user's default, so that
    a pasted command does not train on a login node), else local — with the name as given, and
    the GPU groups local tasks get. Checked against the machine, once per command
    (:func:`seedgrid.grid.cells.check_backend`); where the local executor only runs by default
    (no --cluster, no SEEDGRID_CLUSTER) and SLURM is installed, a warning follows before
    submitting."""
    name = cluster_name or os.environ.get("SEEDGRID_CLUSTER") or "local"
    profile = load_profile(name, overrides)
    if pack is not None:  # submit --pack K: the profile's cells_per_gpu, for this submission
        profile = dataclasses.replace(profile, cells_per_gpu=pack)
    if pack_as is not None:
        profile = dataclasses.replace(profile, pack_as=pack_as)
    return profile, name, grid_cells.check_backend(profile)


def _warn_by_default(cluster_name: str | None, profile: Profile) -> None:
    if cluster_name is None and not os.environ.get("SEEDGRID_CLUSTER"):
        local.warn_if_login_node(profile)


def submit_grid(request: Request) -> bool:
    """Submit the cells of a grid that still have to train (``--resume``: of a run folder);
    with ``train_sizes``, the grid once per training-set size, each in its own run folder;
    ``dry_run``: say what would be submitted, and write nothing."""
    r = request
    if r.train_sizes:
        return _sweep(r)
    cfg, run_dir = _config_and_folder(r)
    rundir.check_private(run_dir)  # its tasks load pickles from it: nobody else's to write
    pack, pack_as = r.pack, r.pack_as
    if r.resume and pack is None:  # the cells resume packed as they were submitted
        pack, pack_as = rundir.recorded_pack(rundir.read_jobs(run_dir), pack_as)
    profile, name, groups = profile_named(r.cluster, pack, pack_as, r.cluster_set)
    grid_cells.check_precision(cfg, profile)
    total = len(cfg.grid.cells())
    plan = _early_stop_plan(cfg, run_dir, r)
    record = early_stop.read(run_dir) if r.resume else None
    if plan is not None:  # phase one: the first `started` cells of the grid
        started = cfg.grid.cells()[:plan.started]
        cells = [c for c in started if grid_cells.needs_training(run_dir, c)]
    elif record is not None:  # an --early-stop run: only what its phase still needs
        cells = grid_cells.cells_to_resume(run_dir, record)
    else:
        cells = grid_cells.missing_cells(cfg, run_dir)
    if r.resume and not r.dry_run:
        _say_unrecorded(run_dir)
    live = _live(run_dir, cells) if r.resume else []
    if live:  # cells still training, or queued to, are not submitted twice
        cells = [c for c in cells if c not in live]
    if not cells:
        print(f"{run_dir}: nothing else to submit" if live else
              f"{run_dir}: all {total} cells have shards; nothing to submit"
              if record is None else f"{run_dir}: nothing of its early-stop phase "
              f"{record['phase']} is left to train")
        return True
    if r.array is not None and r.array > len(cells):
        raise UsageError(f"--array {r.array} must be between 1 and the {len(cells)} cells to "
                         f"run (of {total}): one array task trains one cell or more")
    fingerprints = grid_cells.check_inputs(cfg)
    rundir.check_unchanged(run_dir, cfg, fingerprints)
    grid_cells.check_pack(cfg, profile)
    n_tasks, parallel = grid_cells.task_layout(profile, len(cells), r.array, r.parallel)
    new_folder = not os.path.lexists(run_dir)
    if r.dry_run:
        _print_plan(cfg, profile, run_dir, cells, total, n_tasks, parallel, new_folder)
        return True
    try:
        rundir.write_config(run_dir, cfg)  # before the tasks start: they read it
        if plan is not None:
            early_stop.start(run_dir, plan, started)
        _warn_by_default(r.cluster, profile)
        submitted, jobs = grid_jobs.submit(cfg, profile, groups, run_dir, cells, n_tasks,
                                           parallel, r.cluster_set)
    except (UsageError, OSError):  # refused, or a full disk
        if new_folder and not rundir.read_jobs(run_dir)["submissions"]:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing submitted: nothing left
        raise
    ids = ", ".join(a["job_id"] for a in submitted["submissions"][-1]["arrays"])
    print(f"submitted {len(cells)} of {total} cells of {run_dir} (config {cfg.hash}) to "
          f"{profile.name!r} ({profile.executor}): job {ids}, {n_tasks} task(s) of up to "
          f"{-(-len(cells) // n_tasks)} cell(s), at most {parallel} at once")
    logger.info(f"watch it: {rundir.command('status', run_dir, '--cluster', profile.name)}")
    if plan is not None or (record is not None and record["continued_cells"] is None):
        return _after_phase_one(profile, name, groups, run_dir, submitted, jobs, parallel,
                                r.wait)
    return not r.wait or status.wait_and_report(jobs, run_dir, cells, profile)


def _print_plan(cfg, profile: Profile, run_dir: Path, cells: list, total: int, n_tasks: int,
                parallel: int, new_folder: bool) -> None:
    """``submit --dry-run``: the cells, the task layout and what each task asks."""
    tasks = grid_cells.split(cells, n_tasks)
    print(f"dry run: would submit {len(cells)} of {total} cells of {run_dir} "
          f"({'a new run folder' if new_folder else 'an existing run folder'}; config "
          f"{cfg.hash}) to {profile.name!r} ({profile.executor}): {n_tasks} task(s) of up to "
          f"{max(len(t) for t in tasks)} cell(s), at most {parallel} at once; nothing written")
    for i, task in enumerate(tasks[:10]):
        print(f"  task {i}: " + ", ".join(f"wi={wi} do={do}" for wi, do in task))
    if len(tasks) > 10:
        print(f"  ... and {len(tasks) - 10} more task(s)")
    print(f"  each task asks: {profile.time_min} min, {profile.mem_gb} GB of memory, "
          f"{profile.cpus_per_task} CPU(s), {profile.gpus_per_cell} GPU(s)"
          + (f"; cells packed {profile.cells_per_gpu} a GPU as {profile.pack_as}"
             if profile.cells_per_gpu > 1 else ""))
    parameters = grid_jobs.parameters(profile, run_dir, parallel, guard=False)
    print("  submitit parameters: " + ", ".join(f"{k}={v!r}" for k, v in parameters.items()))


def _live(run_dir: Path, cells: list) -> list:
    """Those of ``cells`` a task still trains (claimed) or is queued to train (sacct; a local
    task's process alive), saying which."""
    states = status.run_status(run_dir)[1]
    live = [c for c in cells if states.get(c) and states[c].state in ("running", "pending")]
    if live:
        tasks = sorted({states[c].task for c in live if states[c].task})
        print(f"{len(live)} cell(s) are still training or queued (task(s) "
              f"{', '.join(tasks) or 'of another submit'}): not submitted again")
    return live


def _say_unrecorded(run_dir: Path) -> None:
    """A warning for each submission a crash cut short after it started tasks and before it
    recorded them: those tasks may still be queued; each claims its cell before training, so a
    cell submitted again trains once (the later task skips it)."""
    for when, cells in grid_jobs.unrecorded(run_dir):
        logger.warning(f"the submission of {when} stopped before it recorded its jobs; "
                       f"{len(cells)} cell(s) it was submitting may still be queued (look for "
                       f"job name {slurm.job_name(run_dir)!r}): each trains once, as a task "
                       "claims its cell before training it")


def _sweep(request: Request) -> bool:
    """Bui et al.'s training-size axis: one run folder per size, ``<out>/n<size>``."""
    if request.resume or not request.config:
        raise UsageError("--train-sizes starts new runs: give --config (resume each size's "
                         "folder on its own)")
    if request.early_stop or request.budget is not None:
        raise UsageError("--train-sizes and --early-stop go separately: sweep, or stop early")
    base = Path(request.out or f"runs/{Path(config.load_config(request.config).source).stem}")
    folders = [base / f"n{n}" for n in request.train_sizes]
    ok = [submit_grid(dataclasses.replace(request, out=str(folder), train_size=n, train_sizes=()))
          for n, folder in zip(request.train_sizes, folders)]
    if not request.dry_run:
        print(f"training sizes {', '.join(map(str, request.train_sizes))}: once they are "
              f"collected, report them together: {rundir.command('report', *folders)}")
    return all(ok)


def _config_and_folder(request: Request) -> tuple[config.Config, Path]:
    """The run's config and folder: a new run (--config; ``train_size``: one size of a sweep,
    another config hash) or an existing one (--resume)."""
    if request.resume:
        run_dir = Path(request.resume)
        cfg = rundir.load_run_config(run_dir)
        config.check_trainable(cfg, f"--resume {str(run_dir)!r}")
        if request.config:
            rundir.check_config(run_dir, config.load_config(request.config))
    elif request.config:
        cfg = config.load_config(request.config)
        if request.train_size is not None:
            cfg = config.with_train_size(cfg, request.train_size)
        run_dir = Path(request.out or f"runs/{Path(cfg.source).stem}")
        rundir.check_writable(run_dir)
        rundir.check_config(run_dir, cfg)
    else:
        raise UsageError("submit needs --config (a new run) or --resume RUN_FOLDER")
    if not cfg.grid.seeds_wi:  # no [grid]: --array N*N means seeds 1..N x 1..N (Dodge et al.)
        array = request.array
        n = math.isqrt(array or 0)
        if not array or n * n != array:
            raise UsageError(f"config {cfg.source!r} has no [grid] and --array {array} is not "
                             "a square: add [grid] n_wi/n_do, or give --array N*N (e.g. 625 for "
                             "seeds 1..25 x 1..25)")
        cfg = config.with_seeds(cfg, list(range(1, n + 1)), list(range(1, n + 1)))
    return cfg, run_dir


def _early_stop_plan(cfg, run_dir: Path, request: Request):
    """The --early-stop plan, checked against the grid before anything is written."""
    spec, budget, from_cube = request.early_stop, request.budget, request.from_cube
    if budget is None and from_cube:
        raise UsageError("--from-cube goes with --budget B: the cube the simulation runs on")
    if not spec and budget is None:
        return None
    if spec and budget is not None:
        raise UsageError("give --early-stop or --budget, not both")
    if request.resume or (run_dir / rundir.EARLY_STOP).exists():
        raise UsageError(f"--early-stop starts a new run: {run_dir} has one already; use "
                         f"{rundir.command('continue', run_dir)} for its second phase")
    n_evals = cfg.train.epochs * cfg.train.evals_per_epoch  # evaluations during training
    if budget is not None:
        plan = early_stop.plan_from_budget(budget, from_cube, cfg.task.name, n_evals)
    else:
        plan = early_stop.parse_plan(spec or "", cfg.task.name, n_evals)
    grid = len(cfg.grid.cells())
    if plan.started > grid:
        raise UsageError(f"--early-stop started={plan.started} is more than the {grid} cells of "
                         "the grid: enlarge [grid] or start fewer")
    print(f"early stop ({plan.source}): start {plan.started} cells, stop at {plan.fraction:g} of "
          f"training, continue the best {plan.continued}")
    return plan


def _after_phase_one(profile: Profile, cluster_name: str, groups: list[str], run_dir: Path,
                     submitted: dict, jobs: list, parallel: int | None, wait: bool) -> bool:
    """Phase two follows by itself: a decider job after the arrays (SLURM), or right here."""
    arrays = [a["job_id"] for a in submitted["submissions"][-1]["arrays"]]
    started = [tuple(c) for a in submitted["submissions"][-1]["arrays"] for t in a["tasks"]
               for c in t]
    continued = early_stop.read_record(run_dir)["continued"]
    if profile.executor == "slurm":  # (a queue: the decider waits in it, nobody here)
        decider = slurm.submit_decider(run_dir, profile, arrays, cluster_name)
        early_stop.update(run_dir, decider_job=decider)  # (recorded before it can run)
        slurm.release(decider)
        print(f"phase two: job {decider} picks the {continued} best and continues them "
              f"once phase one has ended (afterany:{':'.join(arrays)})")
        if not wait:
            return True
        status.wait_for(jobs, run_dir, started)
        return status.wait_phase_two(run_dir)
    if not wait:
        print(f"after phase one: "
              f"{rundir.command('continue', run_dir, '--cluster', profile.name)}")
        return True
    status.wait_for(jobs, run_dir, started)
    return _continue(rundir.load_run_config(run_dir), run_dir, profile, groups, parallel,
                     wait=True, cluster_name=profile.name)


def continue_grid(run: str, cluster_name: str | None, parallel: int | None, wait: bool) -> bool:
    """Phase two of --early-stop: decide (once) and continue the chosen cells."""
    run_dir = Path(run)
    cfg = rundir.load_run_config(run_dir)
    config.check_trainable(cfg, str(run_dir))
    rundir.check_private(run_dir)
    profile, _, groups = profile_named(cluster_name,
                                       *rundir.recorded_pack(rundir.read_jobs(run_dir), None))
    return _continue(cfg, run_dir, profile, groups, parallel, wait, cluster_name)


def _continue(cfg: config.Config, run_dir: Path, profile: Profile, groups: list[str],
              parallel: int | None, wait: bool, cluster_name: str | None) -> bool:
    """Decide (once) and submit phase two's cells."""
    rec = early_stop.decide(run_dir)
    print(f"{run_dir}: decided on {rec['decided_on']} of {len(rec['phase_one'])} phase-one cells"
          + (f" ({len(rec['missing'])} without a shard: {_cells(rec['missing'])})"
             if rec["missing"] else "")
          + f"; continuing {len(rec['continued_cells'])}: "
          + (_cells(rec["continued_cells"]) or "none"))
    todo = grid_cells.cells_to_resume(run_dir, rec)
    if not todo:
        print("nothing left to continue")
        return True
    n_tasks, parallel = grid_cells.task_layout(profile, len(todo), len(todo), parallel)
    _warn_by_default(cluster_name, profile)
    record, jobs = grid_jobs.submit(cfg, profile, groups, run_dir, todo, n_tasks, parallel)
    ids = ", ".join(a["job_id"] for a in record["submissions"][-1]["arrays"])
    early_stop.update(run_dir, phase_two_jobs=ids)
    gone = [c for c in todo if not rundir.checkpoint_path(run_dir, *c).exists()]
    print(f"phase two: job {ids} continues {len(todo)} cell(s) "
          + ("from their checkpoints" if not gone else
             f"({len(todo) - len(gone)} from their checkpoints; {len(gone)} from the beginning, "
             f"their checkpoints are gone: {_cells(gone)})"))
    return not wait or status.wait_and_report(jobs, run_dir, todo, profile, stopped_counts=False)


def _cells(cells) -> str:
    return " ".join(f"({wi},{do})" for wi, do in cells)
