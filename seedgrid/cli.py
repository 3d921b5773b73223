"""Command line: ``python -m seedgrid <command> --help``.

Bad input (a UsageError) prints one line, ``seedgrid: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import textwrap
import traceback
from pathlib import Path

from seedgrid.errors import Interrupted, UsageError


def integer(lo: int, hi: int):
    """An argparse type: an integer from ``lo`` to ``hi``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {lo} to {hi}")
        return value
    return parse


def number(lo: float, hi: float, open_ends: bool = False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi)); nan and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = lo < value < hi if open_ends else lo <= value <= hi
        if not math.isfinite(value) or not inside:
            span = f"({lo:g}, {hi:g})" if open_ends else f"[{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"{text} is not a finite number in {span}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line: ``seedgrid: error: ...``, exit status 2."""

    def error(self, message: str):
        # "argument --alpha: 5 is not ..." -> "--alpha 5 is not ...": the option, then its value
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)
        print(f"seedgrid: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _run(args: argparse.Namespace) -> None:
    from seedgrid import cluster, config, dispatch, metrics, rundir, store

    cfg = config.load_config(args.config)
    config.check_seeds("seed_wi", [args.wi])
    config.check_seeds("seed_do", [args.do])
    run_dir = Path(args.out or f"runs/{Path(cfg.source).stem}")
    rundir.check_writable(run_dir)
    rundir.check_config(run_dir, cfg)
    dispatch.check_precision(cfg, cluster.Profile())
    path = store.shard_path(run_dir, args.wi, args.do)
    state = store.shard_state(path)
    if state in dispatch.FINISHED:
        print(f"{path} exists: cell (wi={args.wi}, do={args.do}) is {state}; delete it to train "
              "again")
        return

    from seedgrid.checkpoint import Checkpointer, checkpoint_path, saved_on_terminate

    dispatch.set_threads()
    checkpointer = Checkpointer(checkpoint_path(run_dir, args.wi, args.do))
    with saved_on_terminate(checkpointer):
        shard = dispatch.train_and_store(cfg, run_dir, args.wi, args.do, checkpointer)
    dispatch.end_distributed()
    if shard is None:  # not the main process
        return
    curve = metrics.score(shard.logits.values[0, 0].transpose(1, 0, 2),
                          shard.label.values, shard.attrs["metric"])
    status = shard.status.values[0, 0]
    print(f"wrote {path}: {status}, {shard.attrs['metric']} at the end {curve[-1]:.4f}, "
          f"best {_nanmax(curve):.4f} (before training {curve[0]:.4f}; majority baseline "
          f"{shard.attrs['majority_baseline']:.4f}), "
          f"{float(shard.wall_time_s.values.item()):.0f} s")
    if status != "done":
        sys.exit(1)  # a diverged cell is a result, not a success: scripts can tell


def _nanmax(values) -> float:
    import numpy as np

    return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")


def _submit(args: argparse.Namespace) -> None:
    from seedgrid import cluster, config, dispatch, policy, rundir, status

    if args.resume:
        run_dir = Path(args.resume)
        cfg = rundir.load_run_config(run_dir)
        if args.config:
            rundir.check_config(run_dir, config.load_config(args.config))
    elif args.config:
        cfg = config.load_config(args.config)
        run_dir = Path(args.out or f"runs/{Path(cfg.source).stem}")
        rundir.check_writable(run_dir)
        rundir.check_config(run_dir, cfg)
    else:
        raise UsageError("submit needs --config (a new run) or --resume RUN_FOLDER")
    if not cfg.grid.seeds_wi:  # no [grid]: --array N*N means seeds 1..N x 1..N (Dodge et al.)
        n = math.isqrt(args.array or 0)
        if not args.array or n * n != args.array:
            raise UsageError(f"config {cfg.source!r} has no [grid] and --array {args.array} is not "
                             "a square: add [grid] n_wi/n_do, or give --array N*N (e.g. 625 for "
                             "seeds 1..25 x 1..25)")
        cfg = config.with_seeds(cfg, list(range(1, n + 1)), list(range(1, n + 1)))
    profile = cluster.load_profile(args.cluster)
    dispatch.check_executor(profile)
    dispatch.check_precision(cfg, profile)
    total = len(dispatch.grid_cells(cfg))
    plan = _early_stop_plan(args, cfg, run_dir)
    record = policy.read(run_dir) if args.resume else None
    if plan is not None:  # phase one: the first `started` cells of the grid
        started = dispatch.grid_cells(cfg)[:plan.started]
        cells = [c for c in started if dispatch.needs_training(run_dir, c)]
    elif record is not None:  # an --early-stop run: only what its phase still needs
        cells = dispatch.cells_to_resume(run_dir, record)
    else:
        cells = dispatch.missing_cells(cfg, run_dir)
    if not cells:
        print(f"{run_dir}: all {total} cells have shards; nothing to submit"
              if record is None else f"{run_dir}: nothing of its early-stop phase "
              f"{record['phase']} is left to train")
        return
    if args.array is not None and args.array > len(cells):
        raise UsageError(f"--array {args.array} must be between 1 and the {len(cells)} cells to "
                         f"run (of {total}): one array task trains one cell or more")
    dispatch.check_inputs(cfg)
    parallel = args.parallel or (profile.array_parallelism if profile.executor == "slurm" else 1)
    n_tasks = args.array or len(cells)
    if profile.executor == "local":  # no queue: every task starts at once
        n_tasks = min(n_tasks, parallel)
    new_folder = not run_dir.exists()
    rundir.write_config(run_dir, cfg)  # before the tasks start: they read it
    if plan is not None:
        policy.start(run_dir, plan, started)
    try:
        submitted, jobs = dispatch.submit(cfg, profile, run_dir, cells, n_tasks, parallel)
    except UsageError:
        if new_folder and not (run_dir / dispatch.JOBS).exists():
            shutil.rmtree(run_dir)  # nothing was submitted: leave nothing behind
        raise
    ids = ", ".join(a["job_id"] for a in submitted["submissions"][-1]["arrays"])
    per_task = -(-len(cells) // n_tasks)
    print(f"submitted {len(cells)} of {total} cells of {run_dir} (config {cfg.hash}) to "
          f"{profile.name!r} ({profile.executor}): job {ids}, {n_tasks} task(s) of up to "
          f"{per_task} cell(s), at most {parallel} at once")
    print(f"watch it: python -m seedgrid status {run_dir} --cluster {profile.name}")
    if plan is not None or (record is not None and record["continued_cells"] is None):
        _after_phase_one(args, profile, run_dir, submitted, jobs)
        return
    if args.wait and not status.wait_and_report(jobs, run_dir, cells, profile):
        sys.exit(1)  # diverged, failed, missing: not done


def _early_stop_plan(args: argparse.Namespace, cfg, run_dir: Path):
    """The --early-stop plan, checked against the grid before anything is written."""
    if args.budget is None and args.from_cube:
        raise UsageError("--from-cube goes with --budget B: the cube the simulation runs on")
    if not args.early_stop and args.budget is None:
        return None
    from seedgrid import dispatch, policy

    if args.early_stop and args.budget is not None:
        raise UsageError("give --early-stop or --budget, not both")
    if args.resume or (run_dir / policy.POLICY).exists():
        raise UsageError(f"--early-stop starts a new run: {run_dir} has one already; use "
                         f"python -m seedgrid continue {run_dir} for its second phase")
    n_evals = cfg.train.epochs * cfg.train.evals_per_epoch  # evaluations during training
    if args.budget is not None:
        plan = policy.plan_from_budget(args.budget, args.from_cube, cfg.task.name, n_evals)
    else:
        plan = policy.parse_plan(args.early_stop, cfg.task.name, n_evals)
    grid = len(dispatch.grid_cells(cfg))
    if plan.started > grid:
        raise UsageError(f"--early-stop started={plan.started} is more than the {grid} cells of "
                         "the grid: enlarge [grid] or start fewer")
    print(f"early stop ({plan.source}): start {plan.started} cells, stop at {plan.fraction:g} of "
          f"training, continue the best {plan.continued}")
    return plan


def _after_phase_one(args, profile, run_dir: Path, submitted: dict, jobs: list) -> None:
    """Phase two follows by itself: a decider job after the arrays (SLURM), or right here."""
    from seedgrid import dispatch, policy, status

    arrays = [a["job_id"] for a in submitted["submissions"][-1]["arrays"]]
    started = [tuple(c) for a in submitted["submissions"][-1]["arrays"] for t in a["tasks"]
               for c in t]
    continued = policy.read(run_dir)["continued"]
    if profile.executor == "slurm":
        decider = dispatch.submit_decider(run_dir, profile, arrays, args.cluster)
        print(f"phase two: job {decider} picks the {continued} best and continues them "
              f"once phase one has ended (afterany:{':'.join(arrays)})")
        if args.wait:
            status.wait_for(jobs, run_dir, started)
            if not status.wait_phase_two(run_dir):
                sys.exit(1)
        return
    if not args.wait:
        print(f"after phase one: python -m seedgrid continue {run_dir} --cluster {profile.name}")
        return
    status.wait_for(jobs, run_dir, started)
    _continue(argparse.Namespace(run=str(run_dir), cluster=profile.name, parallel=args.parallel,
                                 wait=True))


def _continue(args: argparse.Namespace) -> None:
    from seedgrid import cluster, dispatch, policy, status
    from seedgrid.checkpoint import checkpoint_path
    from seedgrid.rundir import load_run_config

    run_dir = Path(args.run)
    cfg = load_run_config(run_dir)
    profile = cluster.load_profile(args.cluster)
    dispatch.check_executor(profile)
    rec = policy.decide(run_dir)
    chosen = " ".join(f"({wi},{do})" for wi, do in rec["continued_cells"])
    print(f"{run_dir}: decided on {rec['decided_on']} of {len(rec['phase_one'])} phase-one cells"
          + (f" ({len(rec['missing'])} without a shard: " + " ".join(
              f"({wi},{do})" for wi, do in rec["missing"]) + ")" if rec["missing"] else "")
          + f"; continuing {len(rec['continued_cells'])}: {chosen or 'none'}")
    todo = dispatch.cells_to_resume(run_dir, rec)
    if not todo:
        print("nothing left to continue")
        return
    parallel = args.parallel or (profile.array_parallelism if profile.executor == "slurm" else 1)
    n_tasks = min(len(todo), parallel) if profile.executor == "local" else len(todo)
    record, jobs = dispatch.submit(cfg, profile, run_dir, todo, n_tasks, parallel)
    ids = ", ".join(a["job_id"] for a in record["submissions"][-1]["arrays"])
    policy.update(run_dir, phase_two_jobs=ids)
    gone = [c for c in todo if not checkpoint_path(run_dir, *c).exists()]
    print(f"phase two: job {ids} continues {len(todo)} cell(s) "
          + ("from their checkpoints" if not gone else
             f"({len(todo) - len(gone)} from their checkpoints; {len(gone)} from the beginning, "
             "their checkpoints are gone: " + " ".join(f"({wi},{do})" for wi, do in gone) + ")"))
    if args.wait and not status.wait_and_report(jobs, run_dir, todo, profile,
                                                stopped_counts=False):
        sys.exit(1)


def _status(args: argparse.Namespace) -> None:
    from seedgrid.status import format_status, status_json

    if args.json:
        import json

        print(json.dumps(status_json(Path(args.run)), indent=1))
        return
    print(format_status(Path(args.run), args.cluster or ""))


def _collect(args: argparse.Namespace) -> None:
    from seedgrid.cube import collect

    run_dir = Path(args.run)
    done = collect(run_dir, compress=args.compress)
    c = done.counts
    size = done.path.stat().st_size / 1e6
    print(f"wrote {done.path} ({size:.1f} MB): {sum(c.values())} cells — "
          + ", ".join(f"{s} {n}" for s, n in c.items() if n))
    for wi, do, path, why in done.damaged:
        print(f"  damaged (wi={wi}, do={do}) {path}: {why}")
    import seedgrid

    ds = seedgrid.open_cube(done.path)
    final, best = ds.seedgrid.final(), ds.seedgrid.final(best=True)
    if final.notnull().any():
        metric = ds.attrs["metric"]
        std = f"{float(final.std(ddof=1)):.4f}" if final.count() > 1 else "n/a (one cell)"
        print(f"  {metric} at the end: mean {float(final.mean()):.4f}, sample std {std}, "
              f"min {float(final.min()):.4f}, max {float(final.max()):.4f} over "
              f"{int(final.count())} cells; best so far: mean {float(best.mean()):.4f}, max "
              f"{float(best.max()):.4f} (majority baseline {ds.seedgrid.majority_baseline():.4f})")
    ds.close()
    if done.damaged:
        paths = " ".join(str(p) for *_, p, _ in done.damaged)
        print(f"these cells count as missing; to train them again: rm {paths} && "
              f"python -m seedgrid submit --resume {run_dir}")


def _export(args: argparse.Namespace) -> None:
    import seedgrid

    from seedgrid.rundir import check_output
    from seedgrid.store import raise_if_disk_full

    out = Path(args.to)
    writers = {".csv": "to_csv", ".parquet": "to_parquet"}
    if out.suffix not in writers:
        raise UsageError(f"--to {args.to!r}: give a .csv or .parquet file name")
    check_output(out, "--to")
    with seedgrid.open_cube(args.cube) as ds:
        table = ds.seedgrid.table(args.metric)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        getattr(table, writers[out.suffix])(tmp, index=False)
        tmp.replace(out)
    except OSError as e:
        raise_if_disk_full(e, out)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out}: {len(table)} rows (seed_wi, seed_do, update) x {list(table.columns[3:])}")


def _report(args: argparse.Namespace) -> None:
    import json

    from seedgrid.report import write

    out = write(args.runs, args.out, figures_too=not args.no_figures, samples=args.samples,
                seed=args.seed)
    report = json.loads((out / "report.json").read_text())
    for name, r in report["runs"].items():
        end, d, micro = r["macro"]["end"], r["macro"]["decoupled_std"]["end"], r["micro"]["grid"]
        f = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
        print(f"{name}: {r['metric']} at the end {f(end['mean'])} ± {f(end['std'])} "
              f"(std, ddof 0) over "
              f"{end['n']} runs (min {f(end['min'])}, max {f(end['max'])}); std with WI fixed "
              f"{f(d['wi'])}, with DO fixed {f(d['do'])}")
        print(f"  all runs agree on {f(micro['con'])} of the examples (CON), all correct on "
              f"{f(micro['ccon'])} (CCON); two runs agree on {f(micro['agreement'])} on average")
        every = r["regimes"]["every"]
        print(f"  best found {f(every['best_found'])}; expected best of "
              f"{len(every['expected_max'])} runs {f((every['expected_max'] or [None])[-1])}")
        es = r["early_stopping"]
        if "best_per_budget" in es and es["best_per_budget"]:
            b = es["best_per_budget"][min(len(es["best_per_budget"]), 5) - 1]
            print(f"  early stopping at a budget of {b['budget']} runs: start {b['started']}, "
                  f"stop {b['stopped']} after {b['evaluations']} of {es['n_evals']} "
                  f"evaluations -> "
                  f"{f(b['expected'])} vs {f(b['baseline'])} without stopping")
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}"
          + ("" if args.no_figures else " with figures"))


def _compare(args: argparse.Namespace) -> None:
    from seedgrid.compare import compare, format_result
    from seedgrid.rundir import check_output

    if args.json:
        check_output(args.json, "--json")
    result = compare(args.a, args.b, metric=args.metric, step=args.step, alpha=args.alpha,
                     min_effect=args.min_effect, n_boot=args.boot, test=args.test)
    print(format_result(result))
    if args.json:
        _write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    sys.exit(1 if result["significant"] else 0)


def _regress(args: argparse.Namespace) -> None:
    import datetime

    from seedgrid.regress import append_history, history_markdown, regress
    from seedgrid.rundir import check_output
    from seedgrid.store import write_text_atomic

    check_output(args.history, "--history")
    check_output(Path(args.history).with_suffix(".md"), "--history (its .md report)")
    r = regress(args.baseline, args.candidate, max_drop=args.max_drop, alpha=args.alpha,
                max_con_drop=args.max_con_drop, metric=args.metric,
                allow_incomplete=args.allow_incomplete)
    print(f"{r['metric']}: candidate {r['mean_candidate']:.4f} vs baseline "
          f"{r['mean_baseline']:.4f} ({r['difference']:+.4f}; {r['pairing']}, runs "
          f"{r['runs'][1]} vs {r['runs'][0]}): p(worse by more than {r['max_drop']}) = "
          f"{r['p_worse']:.4g}")
    print(f"CON: candidate {r['con_candidate']:.4f} vs baseline {r['con_baseline']:.4f}: "
          f"p(less consistent by more than {r['max_con_drop']}) = {r['p_less_consistent']:.4g}")
    if r["incomplete"]:
        print(f"{r['incomplete']} cell(s) of the candidate failed or are missing"
              + ("" if args.allow_incomplete else ": the gate fails (--allow-incomplete to "
                 "judge the cells that finished)"))
    history = Path(args.history)
    history.parent.mkdir(parents=True, exist_ok=True)  # checked above: it can be made
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = append_history(history, r, when)
    report = write_text_atomic(history.with_suffix(".md"), history_markdown(rows))
    verdict = "REGRESSION" if r["regression"] else "pass"
    print(f"{verdict} at alpha = {r['alpha']}; history {history} ({len(rows)} nights), "
          f"report {report}")
    sys.exit(1 if r["regression"] else 0)


def _write_json(path: Path, value: dict) -> None:
    import json

    from seedgrid.report import json_ready
    from seedgrid.store import write_text_atomic

    write_text_atomic(path, json.dumps(json_ready(value), indent=1, allow_nan=False))


def _presets(args: argparse.Namespace) -> None:
    from seedgrid import config
    from seedgrid.tasks import TASKS

    for name in config.preset_names():
        cfg = config.load_config(name)
        g = cfg.grid
        grid = f"{len(g.seeds_wi)}x{len(g.seeds_do)} seeds" if g.seeds_wi else "no grid"
        print(f"{name:16s} {cfg.model.name:24s} task {cfg.task.name:5s} {grid}, "
              f"{cfg.train.epochs} epoch(s), hash {cfg.hash}")
    print("\ntasks: " + ", ".join(f"{t.name} ({t.metric})" for t in TASKS.values()))


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a preset name (see `presets`) or a TOML file")
    p.add_argument("--wi", type=integer(0, 2**63 - 1), required=True,
                   help="weight-initialisation seed")
    p.add_argument("--do", type=integer(0, 2**63 - 1), required=True, help="data-order seed")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a preset name or a TOML file (a new run)")
    p.add_argument("--resume", metavar="RUN", help="submit the cells of RUN that have no shard")
    p.add_argument("--cluster", default="local",
                   help="cluster profile: cluster/<name>.toml or a file (default: local)")
    p.add_argument("--array", type=integer(1, 10**6), help="number of array tasks (default: one per cell on "
                   "SLURM); cells are spread evenly over them")
    p.add_argument("--parallel", type=integer(1, 10**6), help="most tasks running at once (SLURM's %%K; "
                   "local: the number of tasks, default 1)")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the tasks, print the status; exit 1 if a cell is not done")
    p.add_argument("--early-stop", metavar="SPEC",
                   help="start many, stop early, continue some: started=T,fraction=F,continue=P"
                        " or budget=B[,cube=PATH] (see 'continue')")
    p.add_argument("--budget", type=number(1, 1000), metavar="B",
                   help="--early-stop with T, F, P chosen for B full runs: by the simulation on "
                        "--from-cube, else the paper's rule of thumb (about B/2 trained fully, "
                        "the rest stopped at 30%%)")
    p.add_argument("--from-cube", metavar="CUBE",
                   help="an earlier cube (or run folder) of the same task, for --budget")


def _continue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder submitted with --early-stop")
    p.add_argument("--cluster", default="local", help="cluster profile (default: local)")
    p.add_argument("--parallel", type=integer(1, 10**6), help="most tasks running at once")
    p.add_argument("--wait", action="store_true", help="wait for phase two and print the status")


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run folder")
    p.add_argument("--compress", action="store_true",
                   help="zlib level 1 (smaller file, slower to write and read)")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cube", help="a cube file or a run folder")
    p.add_argument("--to", required=True, help="output file: .csv or .parquet")
    p.add_argument("--metric", help="a metric other than the task's (accuracy, f1, mcc, acc_f1)")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders (or cube files) to analyse")
    p.add_argument("--out", help="report folder (default: <first run>/report)")
    p.add_argument("--samples", type=integer(1, 10**6), default=5000,
                   help="simulated experiments per early-stopping configuration (default 5000; "
                        "the paper's 50000 takes about a minute on a 25 x 25 grid)")
    p.add_argument("--seed", type=integer(0, 2**63 - 1), default=0,
                   help="seed of the simulations (default 0)")
    p.add_argument("--no-figures", action="store_true", help="numbers only, no PNG figures")


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run folder or cube of configuration A (the reference)")
    p.add_argument("b", help="run folder or cube of configuration B")
    p.add_argument("--metric", help="a metric other than the task's (accuracy, f1, mcc, acc_f1)")
    p.add_argument("--step", default="end", help="end: the last evaluation (default); best: "
                   "each run's best evaluation in training")
    p.add_argument("--alpha", type=number(0, 1, open_ends=True), default=0.05,
                   help="significance level (0.05)")
    p.add_argument("--min-effect", type=number(0, 1), default=0.005,
                   help="smallest difference that matters (0.005 = half a point)")
    p.add_argument("--boot", type=integer(1, 100_000), default=1000,
                   help="bootstrap draws (1000)")
    p.add_argument("--test", default="t", choices=["t", "wilcoxon", "bootstrap"],
                   help="the test the verdict and exit status follow: t (paired t-test, as the "
                        "tutorial; Welch unpaired; default), wilcoxon (signed-rank; Mann-Whitney "
                        "unpaired) or bootstrap; the verdict line says whether the others agree")
    p.add_argument("--json", help="also write the result to this JSON file")


def _regress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, help="run folder or cube of the baseline")
    p.add_argument("--candidate", required=True, help="run folder or cube of tonight's run")
    p.add_argument("--metric", help="a metric other than the task's (accuracy, f1, mcc, acc_f1)")
    p.add_argument("--max-drop", type=number(0, 1), default=0.005,
                   help="tolerated drop of the mean metric (0.005)")
    p.add_argument("--max-con-drop", type=number(0, 1), default=0.02,
                   help="tolerated drop of CON, the share of examples all runs agree on (0.02)")
    p.add_argument("--alpha", type=number(0, 1, open_ends=True), default=0.05,
                   help="significance level (0.05)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="judge the cells that finished even if some failed or are missing")
    p.add_argument("--history", default="regress/history.jsonl",
                   help="JSON-lines history, one row per night; its report is the .md beside "
                        "it (default regress/history.jsonl)")


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run folder")
    p.add_argument("--cluster", help="profile to name in the resubmit command (default: the "
                   "one the cells were submitted to)")
    p.add_argument("--json", action="store_true",
                   help="print counts and every cell's state as JSON (for scripts)")


COMMANDS = {
    "run": (_run, _run_args, "train one cell (seed_wi, seed_do) and write its shard", """
        Trains one cell of the grid on this machine (CPU or its GPUs) and writes
        <out>/shards/wi<WI>_do<DO>.nc atomically, plus <out>/config.toml. A cell whose shard
        exists is not trained again. For several processes use torchrun or accelerate launch:
        the cell sees the same global batches.

        example:
          python -m seedgrid run --config demo --wi 3 --do 7 --out runs/try
          torchrun --nproc-per-node 2 -m seedgrid run --config my.toml --wi 1 --do 1
        """),
    "submit": (_submit, _submit_args, "send the grid's cells to a cluster as array tasks", """
        Submits every cell of the config's grid that has no shard yet, as one array job
        (submitit), spread over --array tasks. The run folder keeps config.toml, jobs.json,
        logs/ and shards/; status and --resume read them from any shell. A cell with a shard
        is never trained again; --resume refuses a changed config.

        example:
          python -m seedgrid submit --config dodge2020-rte --cluster mysite --array 625 --parallel 64
          python -m seedgrid submit --config demo --cluster local --parallel 1 --wait
          python -m seedgrid submit --resume runs/dodge2020-rte --cluster mysite
        """),
    "continue": (_continue, _continue_args, "phase two of --early-stop: continue the best cells", """
        Ranks the cells that phase one stopped by their best metric up to the stop, and
        continues the best P from their checkpoints to the end (the others stay 'stopped',
        with their partial curves). Decides on the phase-one cells that have a shard and says
        which had none. On SLURM, submit --early-stop runs this itself in a job that starts
        after phase one (afterany); running it again changes nothing.

        example:
          python -m seedgrid submit --config my.toml --cluster mysite --early-stop started=50,fraction=0.25,continue=20
          python -m seedgrid continue runs/my --cluster mysite
        """),
    "status": (_status, _status_args, "show which cells are done, running, pending or failed", """
        Reads the shards on disk (the truth) and, for cells without one, the state of their
        array task from sacct; prints counts, a WI x DO map, why cells failed, and the command
        that resubmits them.

        example:
          python -m seedgrid status runs/dodge2020-rte
        """),
    "collect": (_collect, _collect_args, "collect a run's shards into one cube (cube.nc)", """
        Streams every shard of the run folder into <run>/cube.nc (netCDF4; one cell per chunk;
        memory: one shard at a time). Cells without a valid shard are NaN with status
        'missing'; unreadable shards are reported by cell with the command that reruns them.
        Works while the grid still runs (a partial cube); collecting again rewrites it.

        example:
          python -m seedgrid collect runs/dodge2020-rte
          python -c "import seedgrid; print(seedgrid.open_cube('runs/dodge2020-rte'))"
        """),
    "export": (_export, _export_args, "write a cube's per-cell table to CSV or Parquet", """
        One row per (seed_wi, seed_do, evaluation): update, epoch, the metric, the best so far,
        the cell's status and wall time; for pandas, R or a spreadsheet.

        example:
          python -m seedgrid export runs/dodge2020-rte --to rte.parquet
        """),
    "report": (_report, _report_args, "analyse cubes: report.md, report.json and figures", """
        Every analysis of the seed papers on each run's cube: mean and variance, WI vs DO
        (Dodge Tables 3-4, permutation test), divergence, best found and expected best of n
        under three evaluation regimes (Table 1, Fig. 1), consistency of predictions (Bui:
        CON, CCON, agreement, equal-accuracy pairs), correlation between evaluations (Fig.
        5, 9), and the early-stopping simulation (Fig. 6, 7). With several runs: WI seeds
        across tasks (Dodge 4.3) and VAR/CON/CCON by training size (Bui Fig. 2).

        example:
          python -m seedgrid report runs/demo
          python -m seedgrid report runs/rte runs/mrpc runs/cola --out reports/glue
        """),
    "compare": (_compare, _compare_args, "is B really different from A? tests over seeds", """
        Pairs runs by (seed_wi, seed_do) when both grids share cells (paired), else unpaired,
        and says which. Paired t-test and Wilcoxon (unpaired: Welch, Mann-Whitney), the
        multibootstrap CI over seeds and examples, Almost Stochastic Order, Cohen's d_z and
        d_av, the seeds needed for 80% power, and how many predictions changed beyond the
        seed-to-seed churn. Warns about too few seeds, best-seed comparisons and negligible
        significant differences. The verdict follows --test (the paired t-test by default)
        and says when the other tests disagree. Exit status: 0 not significant, 1 significant
        (either direction: see the difference), 2 bad input.

        example:
          python -m seedgrid compare runs/baseline runs/new-lr --json compare.json
        """),
    "regress": (_regress, _regress_args, "the regression gate: fail if the candidate is worse", """
        Exit 1 when the candidate is significantly (one-sided, --alpha) worse than the
        baseline by more than --max-drop on the metric, or significantly less consistent by
        more than --max-con-drop; else 0. Appends the night to --history (JSON lines) and
        rewrites its report (the .md beside it) with the trend. slurm/nightly.sh runs it
        after the night's grid.

        example:
          python -m seedgrid regress --baseline runs/baseline --candidate runs/nightly-2026-11-23
        """),
    "presets": (_presets, lambda p: None, "list the packaged configs and tasks", """
        example:
          python -m seedgrid presets
        """),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m seedgrid",
        description="Seed grids for fine-tuning: is this result real, or was it the random seed?",
        epilog="example (a 2 x 2 grid on this machine, then its cube and report):\n"
               "  python -m seedgrid submit --config demo --cluster local --wait\n"
               "  python -m seedgrid collect runs/demo\n"
               "  python -m seedgrid report runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from seedgrid import __version__

    parser.add_argument("--version", action="version", version=f"seedgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (func, add_args, summary, details) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary + "\n" + textwrap.dedent(details),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        add_args(p)
    return parser


#: exit statuses: 0 fine (pass, not significant), 1 a verdict (a cell not done, significant,
#: regression), 2 bad input, 3 an unexpected error or a full disk — never read as a verdict
UNEXPECTED = 3


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as e:
        print(f"seedgrid: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"seedgrid: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("seedgrid: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `| head` closed the pipe: end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as e:
        from seedgrid.store import DiskFullError

        if not isinstance(e, DiskFullError):
            traceback.print_exc()
        print(f"seedgrid: error: {e}" if isinstance(e, DiskFullError) else
              f"seedgrid: unexpected error ({type(e).__name__}: {str(e)[:200]}); exit status "
              f"{UNEXPECTED}: please report it with the traceback above", file=sys.stderr)
        sys.exit(UNEXPECTED)
