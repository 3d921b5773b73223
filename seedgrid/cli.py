"""Command line: ``python -m seedgrid <command> --help``.

Bad input (a UsageError) prints one line, ``seedgrid: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from seedgrid.errors import UsageError


def _run(args: argparse.Namespace) -> None:
    from seedgrid import config, metrics, rundir, store

    cfg = config.load_config(args.config)
    config.check_seeds("seed_wi", [args.wi])
    config.check_seeds("seed_do", [args.do])
    run_dir = Path(args.out or f"runs/{Path(cfg.source).stem}")
    rundir.check_writable(run_dir)
    rundir.check_config(run_dir, cfg)
    path = store.shard_path(run_dir, args.wi, args.do)
    if path.exists():
        print(f"{path} exists: cell (wi={args.wi}, do={args.do}) is done; delete it to train again")
        return

    from seedgrid.trainer import train_cell  # heavy imports only when training

    shard = train_cell(cfg, args.wi, args.do)
    if shard is None:  # not the main process
        return
    rundir.write_config(run_dir, cfg)
    store.write_atomic(shard, path)
    curve = metrics.score(shard.logits.values[0, 0].transpose(1, 0, 2),
                          shard.label.values, shard.attrs["metric"])
    status = shard.status.values[0, 0]
    print(f"wrote {path}: {status}, {shard.attrs['metric']} at the end {curve[-1]:.4f}, "
          f"best {_nanmax(curve):.4f} (before training {curve[0]:.4f}; majority baseline "
          f"{shard.attrs['majority_baseline']}), {float(shard.wall_time_s.values.item()):.0f} s")


def _nanmax(values) -> float:
    import numpy as np

    return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")


def _presets(args: argparse.Namespace) -> None:
    from seedgrid import config
    from seedgrid.tasks import TASKS

    for name in config.preset_names():
        cfg = config.load_config(name)
        g = cfg.grid
        print(f"{name:16s} {cfg.model.name:24s} task {cfg.task.name:5s} "
              f"{len(g.seeds_wi)}x{len(g.seeds_do)} seeds, {cfg.train.epochs} epoch(s), "
              f"hash {cfg.hash}")
    print("\ntasks: " + ", ".join(f"{t.name} ({t.metric})" for t in TASKS.values()))


COMMANDS = {
    "run": (_run, "train one cell (seed_wi, seed_do) and write its shard", """
        Trains one cell of the grid on this machine (CPU or its GPUs) and writes
        <out>/shards/wi<WI>_do<DO>.nc atomically, plus <out>/config.toml. A cell whose shard
        exists is not trained again. For several processes use torchrun or accelerate launch:
        the cell sees the same global batches.

        example:
          python -m seedgrid run --config demo --wi 3 --do 7 --out runs/try
          torchrun --nproc-per-node 2 -m seedgrid run --config my.toml --wi 1 --do 1
        """),
    "presets": (_presets, "list the packaged configs and tasks", """
        example:
          python -m seedgrid presets
        """),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seedgrid",
        description="Seed grids for fine-tuning: is this result real, or was it the random seed?",
        epilog="example: python -m seedgrid run --config demo --wi 1 --do 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (func, summary, details) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary + "\n" + textwrap.dedent(details),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--config", required=True,
                           help="a preset name (see `presets`) or a TOML file")
            p.add_argument("--wi", type=int, required=True, help="weight-initialisation seed")
            p.add_argument("--do", type=int, required=True, help="data-order seed")
            p.add_argument("--out", help="run folder (default: runs/<config name>)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as e:
        print(f"seedgrid: error: {e}", file=sys.stderr)
        sys.exit(2)
