"""The commands that run a grid — ``run``, ``submit``, ``continue`` — and ``status``: their
arguments, help and handlers (the parser and the analysis commands: :mod:`seedgrid.cli`).

Training needs seedgrid's training extra (torch, transformers, accelerate, datasets, peft,
submitit): without it, ``run``, ``submit`` and ``continue`` say so in one line (exit 2) instead
of failing on an import; ``status`` reads a run folder with the analysis install alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from seedgrid.argtypes import integer, number, sizes
from seedgrid.errors import UsageError

#: what training imports, beyond the analysis install (pyproject's extra "train")
TRAINING = ("torch", "transformers", "accelerate", "datasets", "peft", "submitit")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # (a finder that refuses it)
        return False


def need_training(command: str) -> None:
    """UsageError naming the extra when a training package is not installed."""
    absent = [m for m in TRAINING if not _installed(m)]
    if absent:
        raise UsageError(f"{command} trains models, and {', '.join(absent)} "
                         f"{'is' if len(absent) == 1 else 'are'} not installed: install "
                         "seedgrid's training extra (pip install 'seedgrid[train]')")


def _config(args: argparse.Namespace):
    """--config with --set applied: a Config (the preset or file name when nothing is set)."""
    from seedgrid.config import load_config
    from seedgrid.overrides import sweep

    if not args.set:
        return args.config
    if len(sweep(args.set)) > 1:
        raise UsageError("run trains one cell of one config: a sweep (--set KEY=a,b) is for "
                         "submit, one grid per value")
    if not args.config:
        raise UsageError("--set changes the config of a new run: give --config too (a run "
                         "folder's config is frozen)")
    return load_config(args.config, overrides=args.set)


def _run(args: argparse.Namespace) -> None:
    need_training("run")
    from seedgrid.grid.commands import run_one

    if not run_one(_config(args), args.wi, args.do, args.out):
        sys.exit(1)  # a diverged cell is a result, not a success: scripts can tell


def _submit(args: argparse.Namespace) -> None:
    need_training("submit")
    from seedgrid.config import load_config
    from seedgrid.grid.commands import Request, submit_grid
    from seedgrid.overrides import sweep
    from seedgrid.rundir import command

    on_cluster = [s.strip()[len("cluster."):] for s in args.set if s.strip().startswith("cluster.")]
    runs = sweep([s for s in args.set if not s.strip().startswith("cluster.")])
    if runs[0][1] and not args.config:
        raise UsageError("--set changes the config of a new run: give --config too (a run "
                         "folder's config is frozen)")
    base = Path(args.out or f"runs/{Path(load_config(args.config).source).stem}") \
        if args.config else None
    done = []
    for name, sets in runs:  # one grid, or (--set KEY=a,b) one per value, in <out>/KEY=a
        out = str(base / name.replace("/", "_")) if name and base else args.out
        done.append(submit_grid(Request(
            config=load_config(args.config, overrides=sets) if sets else args.config,
            resume=args.resume, cluster=args.cluster, array=args.array,
            parallel=args.parallel, out=out, wait=args.wait, early_stop=args.early_stop,
            budget=args.budget, from_cube=args.from_cube,
            train_sizes=tuple(args.train_sizes or ()), pack=args.pack, pack_as=args.pack_as,
            dry_run=args.dry_run, cluster_set=tuple(on_cluster))))
    if len(runs) > 1 and not args.dry_run:
        folders = [base / n.replace("/", "_") for n, _ in runs] if base else []
        print(f"a sweep of {len(runs)} grids; once collected, compare two of them: "
              f"{command('compare', *folders[:2])}, or report them together: "
              f"{command('report', *folders)}")
    if not all(done):
        sys.exit(1)  # --wait: diverged, failed, missing: not done


def _continue(args: argparse.Namespace) -> None:
    need_training("continue")
    from seedgrid.grid.commands import continue_grid

    if not continue_grid(args.run, args.cluster, args.parallel, args.wait):
        sys.exit(1)


def _status(args: argparse.Namespace) -> None:
    from seedgrid.cli import json_out
    from seedgrid.grid.status import format_status, status_json

    if args.run is None:  # `status --json RUN`: the folder was read as --json's file
        if args.json not in (None, "-") and Path(args.json).is_dir():
            args.run, args.json = args.json, "-"
        else:
            raise UsageError("status needs the run folder: status RUN [--json [FILE]]")
    if args.json:
        if args.json != "-":
            from seedgrid.rundir import check_output

            check_output(args.json, "--json")
        json_out(args.json, status_json(Path(args.run)))
        return
    print(format_status(Path(args.run), args.cluster or ""))


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a preset name (see `presets`) or a TOML file")
    p.add_argument("--wi", type=integer(0, 2**63 - 1), required=True,
                   help="weight-initialisation seed")
    p.add_argument("--do", type=integer(0, 2**63 - 1), required=True, help="data-order seed")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one setting of the config, as in its TOML file (repeatable; "
                        "e.g. --set train.learning_rate=3e-5 --set model.name=roberta-large): "
                        "validated as the file is, and frozen with the run")


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a preset name or a TOML file (a new run)")
    p.add_argument("--resume", metavar="RUN", help="submit the cells of RUN that have no shard")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one setting of the config, as in its TOML file (repeatable; "
                        "e.g. --set train.learning_rate=3e-5 --set model.name=roberta-large): "
                        "validated as the file is, and frozen with the run. KEY=a,b,c: a "
                        "sweep, one grid per value in <out>/KEY=a, ... "
                        "cluster.KEY=VALUE: the cluster profile's KEY for this submission "
                        "(recorded in jobs.json)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be submitted (cells, task layout, what each task "
                        "asks of the cluster) and write nothing in the run folder (the model's "
                        "and data's files may be downloaded into the hub's cache to check them)")
    p.add_argument("--cluster",
                   help="cluster profile: a name (./cluster/NAME.toml, else seedgrid's own) or a TOML "
                        "file (default: $SEEDGRID_CLUSTER, else local)")
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
    p.add_argument("--pack", metavar="K", type=integer(1, 64), help="cells each task trains "
                   "at once as one stacked model (the profile's cells_per_gpu; on a GPU or a "
                   "CPU): BERT, RoBERTa, MiniLM (full or [lora]) and Llama ([lora])")
    p.add_argument("--pack-as", choices=("stacked", "processes"), help="how a pack trains: "
                   "one stacked model (default), or a process per cell on the task's GPU (for "
                   "model families the pack engine does not know; the profile's pack_as)")
    p.add_argument("--train-sizes", metavar="N,N,...", type=sizes, help="a training-size sweep "
                   "(Bui Figs. 2, 4): the grid once per [task] train_size, in <out>/n<N>")


def _continue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder submitted with --early-stop")
    p.add_argument("--cluster", help="cluster profile (default: $SEEDGRID_CLUSTER, else local)")
    p.add_argument("--parallel", type=integer(1, 10**6), help="most tasks running at once")
    p.add_argument("--wait", action="store_true", help="wait for phase two and print the status")


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="the run folder")
    p.add_argument("--cluster", help="profile to name in the resubmit command (default: the "
                   "one the cells were submitted to)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="counts and every cell's state as JSON (for scripts): on stdout, or "
                        "written to FILE (as compare --json)")


GRID_COMMANDS = {
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
}
