"""The ``run``, ``submit`` and ``continue`` commands: which cells to train, in how many tasks,
and (``--early-stop``) how phase two follows phase one. Each prints what it did.

The pieces live with their owners: the queue and the task layout in :mod:`seedgrid.dispatch`,
the early-stop plan and its decision in :mod:`seedgrid.early_stop_run`, waiting in
:mod:`seedgrid.status`. Each function returns whether every cell it waited for is ``done``.
"""

from __future__ import annotations

import math
import dataclasses
import os
import shutil
from pathlib import Path

from seedgrid import celltask, cluster, config, dispatch, early_stop_run, rundir, status
from seedgrid.errors import UsageError
from seedgrid.log import logger


def run_one(config_name: str | config.Config, seed_wi: int, seed_do: int, out: str | None) -> bool:
    """Train one cell here (or in each process of torchrun) and write its shard."""
    import numpy as np

    from seedgrid import metrics, store
    from seedgrid.checkpoint import Checkpointer, saved_on_terminate

    cfg = config.load_config(config_name)
    config.check_seeds("seed_wi", [seed_wi])
    config.check_seeds("seed_do", [seed_do])
    run_dir = Path(out or f"runs/{Path(cfg.source).stem}")
    rundir.check_writable(run_dir)
    rundir.check_config(run_dir, cfg)
    rundir.check_unchanged(run_dir, cfg, dispatch.check_inputs(cfg))
    dispatch.check_precision(cfg, cluster.Profile())
    path = rundir.shard_path(run_dir, seed_wi, seed_do)
    state = store.shard_state(path, (seed_wi, seed_do))
    if state in dispatch.FINISHED:
        print(f"{path} exists: cell (wi={seed_wi}, do={seed_do}) is {state}; delete it to train "
              "again")
        return True
    dispatch.set_threads()
    checkpointer = Checkpointer(rundir.checkpoint_path(run_dir, seed_wi, seed_do))
    new_folder = not os.path.lexists(run_dir)
    try:
        with celltask.claims(run_dir, [(seed_wi, seed_do)]) as mine, \
                saved_on_terminate(checkpointer):
            if not mine:  # another process trains it: one trainer per cell
                return False
            (shard,) = celltask.train_and_store(cfg, run_dir, [(seed_wi, seed_do)],
                                                [checkpointer])
    except UsageError:  # found only once training began (a hub model that is not there)
        if new_folder and not rundir.shards_on_disk(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing of it was made: nothing left
        raise
    dispatch.end_distributed()
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
                  pack_as: str | None = None) -> tuple[cluster.Profile, str]:
    """The profile of --cluster, else of SEEDGRID_CLUSTER (a site's or user's default, so that
    a pasted command does not train on a login node), else local — with the name as given.
    Checked against the machine; where the local executor only runs by default (no --cluster,
    no SEEDGRID_CLUSTER) and SLURM is installed, a warning follows before submitting."""
    name = cluster_name or os.environ.get("SEEDGRID_CLUSTER") or "local"
    profile = cluster.load_profile(name)
    if pack is not None:  # submit --pack K: the profile's cells_per_gpu, for this submission
        profile = dataclasses.replace(profile, cells_per_gpu=pack)
    if pack_as is not None:
        profile = dataclasses.replace(profile, pack_as=pack_as)
    dispatch.check_executor(profile)
    return profile, name


def _warn_by_default(cluster_name: str | None, profile) -> None:
    if cluster_name is None and not os.environ.get("SEEDGRID_CLUSTER"):
        dispatch.warn_if_login_node(profile)


def submit_grid(*, config_name: str | config.Config | None, resume: str | None, cluster_name: str | None,
                array: int | None, parallel: int | None, out: str | None, wait: bool,
                early_stop: str | None, budget: float | None, from_cube: str | None,
                train_sizes: list[int] | None = None, train_size: int | None = None,
                pack: int | None = None, pack_as: str | None = None,
                dry_run: bool = False) -> bool:
    """Submit the cells of a grid that still have to train (``--resume``: of a run folder);
    with ``train_sizes``, the grid once per training-set size, each in its own run folder;
    ``dry_run``: say what would be submitted, and write nothing."""
    if train_sizes:
        return _sweep(train_sizes, config_name=config_name, resume=resume,
                      cluster_name=cluster_name, array=array, parallel=parallel, out=out,
                      wait=wait, early_stop=early_stop, budget=budget, from_cube=from_cube,
                      pack=pack, pack_as=pack_as, dry_run=dry_run)
    cfg, run_dir = _config_and_folder(config_name, resume, out, array, train_size)
    rundir.check_private(run_dir)  # its tasks load pickles from it: nobody else's to write
    if resume and pack is None:  # the cells resume packed as they were submitted
        pack, pack_as = rundir.recorded_pack(rundir.read_jobs(run_dir), pack_as)
    profile, name = profile_named(cluster_name, pack, pack_as)
    dispatch.check_precision(cfg, profile)
    total = len(cfg.grid.cells())
    plan = _early_stop_plan(cfg, run_dir, early_stop, budget, from_cube, resumed=bool(resume))
    record = early_stop_run.read(run_dir) if resume else None
    if plan is not None:  # phase one: the first `started` cells of the grid
        started = cfg.grid.cells()[:plan.started]
        cells = [c for c in started if dispatch.needs_training(run_dir, c)]
    elif record is not None:  # an --early-stop run: only what its phase still needs
        cells = dispatch.cells_to_resume(run_dir, record)
    else:
        cells = dispatch.missing_cells(cfg, run_dir)
    live = _live(run_dir, cells) if resume else []
    if live:  # cells still training, or queued to, are not submitted twice
        cells = [c for c in cells if c not in live]
    if not cells:
        print(f"{run_dir}: nothing else to submit" if live else
              f"{run_dir}: all {total} cells have shards; nothing to submit"
              if record is None else f"{run_dir}: nothing of its early-stop phase "
              f"{record['phase']} is left to train")
        return True
    if array is not None and array > len(cells):
        raise UsageError(f"--array {array} must be between 1 and the {len(cells)} cells to "
                         f"run (of {total}): one array task trains one cell or more")
    fingerprints = dispatch.check_inputs(cfg)
    rundir.check_unchanged(run_dir, cfg, fingerprints)
    dispatch.check_pack(cfg, profile)
    n_tasks, parallel = dispatch.task_layout(profile, len(cells), array, parallel)
    new_folder = not os.path.lexists(run_dir)
    if dry_run:
        _print_plan(cfg, profile, run_dir, cells, total, n_tasks, parallel, new_folder)
        return True
    try:
        rundir.write_config(run_dir, cfg)  # before the tasks start: they read it
        if plan is not None:
            early_stop_run.start(run_dir, plan, started)
        _warn_by_default(cluster_name, profile)
        submitted, jobs = dispatch.submit(cfg, profile, run_dir, cells, n_tasks, parallel)
    except (UsageError, OSError):  # refused, or a full disk
        if new_folder and not (run_dir / rundir.JOBS).exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing submitted: nothing left
        raise
    ids = ", ".join(a["job_id"] for a in submitted["submissions"][-1]["arrays"])
    print(f"submitted {len(cells)} of {total} cells of {run_dir} (config {cfg.hash}) to "
          f"{profile.name!r} ({profile.executor}): job {ids}, {n_tasks} task(s) of up to "
          f"{-(-len(cells) // n_tasks)} cell(s), at most {parallel} at once")
    logger.info(f"watch it: {rundir.command('status', run_dir, '--cluster', profile.name)}")
    if plan is not None or (record is not None and record["continued_cells"] is None):
        return _after_phase_one(profile, name, run_dir, submitted, jobs, parallel, wait)
    return not wait or status.wait_and_report(jobs, run_dir, cells, profile)


def _print_plan(cfg, profile, run_dir: Path, cells: list, total: int, n_tasks: int,
                parallel: int, new_folder: bool) -> None:
    """``submit --dry-run``: the cells, the task layout and what each task asks."""
    tasks = dispatch.pack(cells, n_tasks)
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
    parameters = profile.submitit_parameters(dispatch.job_name(run_dir), parallel)
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


def _sweep(sizes: list[int], *, config_name, resume, out, **options) -> bool:
    """Bui et al.'s training-size axis: one run folder per size, ``<out>/n<size>``."""
    if resume or not config_name:
        raise UsageError("--train-sizes starts new runs: give --config (resume each size's "
                         "folder on its own)")
    if options["early_stop"] or options["budget"] is not None:
        raise UsageError("--train-sizes and --early-stop go separately: sweep, or stop early")
    base = Path(out or f"runs/{Path(config.load_config(config_name).source).stem}")
    folders = [base / f"n{n}" for n in sizes]
    ok = [submit_grid(config_name=config_name, resume=None, out=str(folder), train_size=n,
                      **options) for n, folder in zip(sizes, folders)]
    if not options.get("dry_run"):
        print(f"training sizes {', '.join(map(str, sizes))}: once they are collected, report "
              f"them together: {rundir.command('report', *folders)}")
    return all(ok)


def _config_and_folder(config_name, resume, out, array, train_size=None):
    """The run's config and folder: a new run (--config; ``train_size``: one size of a sweep,
    another config hash) or an existing one (--resume)."""
    if resume:
        run_dir = Path(resume)
        cfg = rundir.load_run_config(run_dir)
        config.check_trainable(cfg, f"--resume {str(run_dir)!r}")
        if config_name:
            rundir.check_config(run_dir, config.load_config(config_name))
    elif config_name:
        cfg = config.load_config(config_name)
        if train_size is not None:
            cfg = config.with_train_size(cfg, train_size)
        run_dir = Path(out or f"runs/{Path(cfg.source).stem}")
        rundir.check_writable(run_dir)
        rundir.check_config(run_dir, cfg)
    else:
        raise UsageError("submit needs --config (a new run) or --resume RUN_FOLDER")
    if not cfg.grid.seeds_wi:  # no [grid]: --array N*N means seeds 1..N x 1..N (Dodge et al.)
        n = math.isqrt(array or 0)
        if not array or n * n != array:
            raise UsageError(f"config {cfg.source!r} has no [grid] and --array {array} is not "
                             "a square: add [grid] n_wi/n_do, or give --array N*N (e.g. 625 for "
                             "seeds 1..25 x 1..25)")
        cfg = config.with_seeds(cfg, list(range(1, n + 1)), list(range(1, n + 1)))
    return cfg, run_dir


def _early_stop_plan(cfg, run_dir: Path, spec: str | None, budget: float | None,
                     from_cube: str | None, resumed: bool):
    """The --early-stop plan, checked against the grid before anything is written."""
    if budget is None and from_cube:
        raise UsageError("--from-cube goes with --budget B: the cube the simulation runs on")
    if not spec and budget is None:
        return None
    if spec and budget is not None:
        raise UsageError("give --early-stop or --budget, not both")
    if resumed or (run_dir / rundir.EARLY_STOP).exists():
        raise UsageError(f"--early-stop starts a new run: {run_dir} has one already; use "
                         f"{rundir.command('continue', run_dir)} for its second phase")
    n_evals = cfg.train.epochs * cfg.train.evals_per_epoch  # evaluations during training
    if budget is not None:
        plan = early_stop_run.plan_from_budget(budget, from_cube, cfg.task.name, n_evals)
    else:
        plan = early_stop_run.parse_plan(spec or "", cfg.task.name, n_evals)
    grid = len(cfg.grid.cells())
    if plan.started > grid:
        raise UsageError(f"--early-stop started={plan.started} is more than the {grid} cells of "
                         "the grid: enlarge [grid] or start fewer")
    print(f"early stop ({plan.source}): start {plan.started} cells, stop at {plan.fraction:g} of "
          f"training, continue the best {plan.continued}")
    return plan


def _after_phase_one(profile, cluster_name: str, run_dir: Path, submitted: dict, jobs: list,
                     parallel: int | None, wait: bool) -> bool:
    """Phase two follows by itself: a decider job after the arrays (SLURM), or right here."""
    arrays = [a["job_id"] for a in submitted["submissions"][-1]["arrays"]]
    started = [tuple(c) for a in submitted["submissions"][-1]["arrays"] for t in a["tasks"]
               for c in t]
    continued = early_stop_run.read_record(run_dir)["continued"]
    if profile.executor == "slurm":
        decider = dispatch.submit_decider(run_dir, profile, arrays, cluster_name)
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
    return continue_grid(str(run_dir), profile.name, parallel, wait=True)


def continue_grid(run: str, cluster_name: str | None, parallel: int | None, wait: bool) -> bool:
    """Phase two of --early-stop: decide (once) and continue the chosen cells."""
    run_dir = Path(run)
    cfg = rundir.load_run_config(run_dir)
    config.check_trainable(cfg, str(run_dir))
    rundir.check_private(run_dir)
    profile, _ = profile_named(cluster_name, *rundir.recorded_pack(rundir.read_jobs(run_dir),
                                                                   None))
    rec = early_stop_run.decide(run_dir)
    print(f"{run_dir}: decided on {rec['decided_on']} of {len(rec['phase_one'])} phase-one cells"
          + (f" ({len(rec['missing'])} without a shard: {_cells(rec['missing'])})"
             if rec["missing"] else "")
          + f"; continuing {len(rec['continued_cells'])}: "
          + (_cells(rec["continued_cells"]) or "none"))
    todo = dispatch.cells_to_resume(run_dir, rec)
    if not todo:
        print("nothing left to continue")
        return True
    n_tasks, parallel = dispatch.task_layout(profile, len(todo), len(todo), parallel)
    _warn_by_default(cluster_name, profile)
    record, jobs = dispatch.submit(cfg, profile, run_dir, todo, n_tasks, parallel)
    ids = ", ".join(a["job_id"] for a in record["submissions"][-1]["arrays"])
    early_stop_run.update(run_dir, phase_two_jobs=ids)
    gone = [c for c in todo if not rundir.checkpoint_path(run_dir, *c).exists()]
    print(f"phase two: job {ids} continues {len(todo)} cell(s) "
          + ("from their checkpoints" if not gone else
             f"({len(todo) - len(gone)} from their checkpoints; {len(gone)} from the beginning, "
             f"their checkpoints are gone: {_cells(gone)})"))
    return not wait or status.wait_and_report(jobs, run_dir, todo, profile, stopped_counts=False)


def _cells(cells) -> str:
    return " ".join(f"({wi},{do})" for wi, do in cells)
