"""collect, the accessor and the report on a cube larger than the memory they may use.

    .venv/bin/python benchmarks/big_cube.py [--n 25] [--examples 9815] [--evals 30]
                                            [--limit-gb 1] [--dir /var/tmp/seedgrid-big]

Writes an MNLI-size grid with seedgrid's own shard writer: n x n shards of 9,815 examples x 31
evaluations x 3 classes of float32 logits (625 shards, 2.28 GB = 2.13 GiB), whose runs differ in skill and
whose examples differ in difficulty. Then each phase runs in its own process, in a memory
cgroup capped at ``--limit-gb`` (what SLURM's ``--mem`` enforces; the page cache of the file is
reclaimed under it, memory the process holds is not: beyond the cap it is killed). Without
root (no cgroup to make) the phases run uncapped and say so:

- ``collect`` of the run folder into its cube;
- the accessor on ``open_cube(run, chunks="rows")`` (dask, one WI seed row a chunk): the task's
  metric, the best so far and ``diverged()`` of every cell at every evaluation, computed to
  numpy; and Bui's consistency (CON, CCON, agreement) at the last evaluation;
- ``report.analyse`` (the whole report without figures) on the same lazily opened cube;

and the same accessor work and report eagerly (``open_cube(run)``) with no cap, for the ratios.
Prints, and appends to ``benchmarks/results/big_cube.md`` with the date, the machine and the
command: seconds, peak resident memory (ru_maxrss) and whether the phase fitted under the cap. The run folder is
kept (``--dir``) so a second run skips the writing; delete it when done (4.6 GB with the cube).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seedgrid.config import load_config  # noqa: E402
from seedgrid.rundir import shard_path, write_config  # noqa: E402
from seedgrid.store import cell_dataset, write_atomic  # noqa: E402

PHASES = ("collect", "accessor", "consistency", "report", "accessor-eager", "report-eager")
EAGER = ("accessor-eager", "report-eager")  # the baselines: opened without chunks, uncapped


def write_grid(run: Path, n: int, examples: int, evals: int) -> None:
    """n x n shards of a synthetic MNLI-size grid (skipped where a shard is already there)."""
    cfg = load_config("bui2025-mnli", overrides=[f"grid.n_wi={n}", f"grid.n_do={n}"])
    write_config(run, cfg)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, examples)
    difficulty = rng.normal(0, 1.0, examples)
    progress = np.linspace(0, 1, evals + 1) ** 0.5
    steps = np.arange(evals + 1) * 1000
    for wi in cfg.grid.seeds_wi:
        for do in cfg.grid.seeds_do:
            path = shard_path(run, wi, do)
            if path.exists():
                continue
            cell = np.random.default_rng([wi, do])
            margin = cell.normal(1.5, 0.4) * progress[:, None] - difficulty[None, :]
            logits = cell.normal(0, 1, (evals + 1, examples, 3)).astype(np.float32)
            logits[:, np.arange(examples), labels] += margin.astype(np.float32)
            write_atomic(cell_dataset(
                seed_wi=wi, seed_do=do, logits=logits, labels=labels,
                example_ids=np.arange(examples), steps=steps, epochs=steps / steps[-1] * 3,
                train_loss=cell.random(evals * 10), status="done", wall_time_s=1.0,
                attrs={"task": "mnli", "metric": "accuracy", "model": "synthetic",
                       "majority_baseline": 0.354, "config_hash": cfg.hash, "n_train": 392702,
                       "config": cfg.to_toml(), "host": socket.gethostname()},
                label_names=("entailment", "neutral", "contradiction")), path)


def memory_cgroup(limit_gb: float) -> Path | None:
    """A memory cgroup (v2, else v1) capped at ``limit_gb`` GiB, swap included; None where
    this process may not make one."""
    cap = str(int(limit_gb * (1 << 30)))
    for root, files in ((Path("/sys/fs/cgroup"), ("memory.max", "memory.swap.max")),
                        (Path("/sys/fs/cgroup/memory"),
                         ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"))):
        if not (root / files[0]).exists() and not (root / "cgroup.procs").exists():
            continue
        group = root / f"seedgrid-bench-{os.getpid()}"
        try:
            group.mkdir()
            (group / files[0]).write_text(cap)
        except OSError:
            continue
        if (group / files[0]).exists() and (group / files[1]).exists():
            (group / files[1]).write_text("0" if files[1] == "memory.swap.max" else cap)
        return group
    return None


def child(phase: str, run: Path) -> dict:
    """One phase, in this process."""
    import seedgrid
    from seedgrid import report
    from seedgrid.cube import collect

    start = time.perf_counter()
    try:
        if phase == "collect":
            collect(run)
        elif phase in ("accessor", "accessor-eager"):
            ds = seedgrid.open_cube(run, chunks=None if phase in EAGER else "rows")
            for value in (ds.seedgrid.metric(), ds.seedgrid.best_so_far(),
                          ds.seedgrid.diverged()):
                np.asarray(value.values)
        elif phase == "consistency":
            ds = seedgrid.open_cube(run, chunks="rows")
            np.asarray(ds.seedgrid.consistency()["con"].values)
        elif phase in ("report", "report-eager"):
            report.analyse(seedgrid.open_cube(run, chunks=None if phase in EAGER else "rows"))
        ok, error = True, None
    except MemoryError as e:
        ok, error = False, f"MemoryError {e}"
    return {"phase": phase, "seconds": time.perf_counter() - start, "fits": ok, "error": error,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_phase(phase: str, args, group: Path | None) -> dict:
    """``phase`` in a child process, in ``group`` (the eager baseline: uncapped)."""
    capped = group is not None and phase not in EAGER

    def enter() -> None:
        if capped:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    out = subprocess.run([sys.executable, __file__, "--child", phase, "--dir", args.dir],
                         capture_output=True, text=True, preexec_fn=enter)
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines:
        result = json.loads(lines[-1])
    else:
        killed = out.returncode == -9
        result = {"phase": phase, "seconds": float("nan"), "fits": False,
                  "peak_mb": float("nan"),
                  "error": "killed at the cap" if killed else
                  (out.stderr.strip().splitlines() or ["?"])[-1]}
    result["capped"] = capped
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=25)
    p.add_argument("--examples", type=int, default=9815)
    p.add_argument("--evals", type=int, default=30)
    p.add_argument("--limit-gb", type=float, default=1.0)
    p.add_argument("--dir", default="/var/tmp/seedgrid-big")
    p.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    args = p.parse_args()
    run = Path(args.dir) / "run"
    if args.child:
        print(json.dumps(child(args.child, run)))
        return
    start = time.perf_counter()
    write_grid(run, args.n, args.examples, args.evals)
    print(f"shards written in {time.perf_counter() - start:.0f} s")
    group = memory_cgroup(args.limit_gb)
    if group is None:
        print("no memory cgroup could be made (not root?): the phases run without the cap")
    results = {}
    try:
        for phase in PHASES:
            r = results[phase] = run_phase(phase, args, group)
            print(f"{phase:15s} {r['seconds']:8.1f} s  peak {r['peak_mb']:7.0f} MB  "
                  f"{'capped' if r['capped'] else 'uncapped'}"
                  f"{'' if r['fits'] else ', failed: ' + str(r['error'])}", flush=True)
    finally:
        if group is not None:
            group.rmdir()
    cube = run / "cube.nc"
    ratios = {what: results[what]["seconds"] / results[f"{what}-eager"]["seconds"]
              for what in ("accessor", "report")}
    lines = [
        f"\n## {time.strftime('%Y-%m-%d %H:%M')} on {socket.gethostname()} "
        f"({os.cpu_count()} cores)\n",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/big_cube.py', *sys.argv[1:]])}`: "
        f"{args.n} x {args.n} cells x {args.examples} examples x {args.evals + 1} evaluations "
        f"x 3 classes; cube {cube.stat().st_size / 2**30:.2f} GiB; memory cgroup capped at "
        f"{args.limit_gb} GiB except the eager baseline\n",
        "| phase | seconds | peak RSS (MB) | capped | result |", "|---|---|---|---|---|",
        *(f"| {r['phase']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
          f"{'yes' if r['capped'] else 'no'} | {'done' if r['fits'] else r['error']} |"
          for r in results.values()),
        *(f"\n{what} lazily (rows, capped) / eagerly (no cap): {r:.2f}x the time"
          for what, r in ratios.items()), "",
    ]
    print("\n".join(lines))
    with open(REPO / "benchmarks/results/big_cube.md", "a") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
