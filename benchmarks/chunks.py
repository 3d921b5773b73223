"""How fast is a cube read lazily, with dask, as the file's own chunks give it?

    .venv/bin/python benchmarks/chunks.py [--n 40] [--examples 200] [--steps 11]

A collected n × n grid (1,600 cells by default) of synthetic shards; then ``metric()`` of the
whole cube (the first pass over the logits every analysis makes) read eagerly (numpy, the
default), and lazily: ``seedgrid.open_cube(chunks={})`` and plain ``xr.open_dataset(...,
chunks={})`` — the file's own chunks, xarray's documented way to open lazily — and
``open_cube(chunks="rows")``. Best of three runs each, as ratios to eager measured in the same
run (the machine is shared and noisy); the chunks the file has are printed too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def make_grid(folder: Path, n: int, examples: int, steps: int) -> Path:
    """A run folder of n × n synthetic shards (random logits) of the tiny config, collected."""
    from seedgrid.config import config_from_dict
    from seedgrid.cube import collect
    from seedgrid.rundir import shard_path, write_config
    from seedgrid.store import cell_dataset, write_atomic

    cfg = config_from_dict({"model": {"name": "tiny-random-bert"}, "task": {"name": "mr"},
                            "grid": {"n_wi": n, "n_do": n}})
    run = folder / "run"
    write_config(run, cfg)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, examples)
    for wi in range(1, n + 1):
        for do in range(1, n + 1):
            write_atomic(cell_dataset(
                seed_wi=wi, seed_do=do, logits=rng.normal(size=(steps, examples, 2)),
                labels=labels, example_ids=np.arange(examples), steps=np.arange(steps) * 10,
                epochs=np.arange(steps) / 10.0, train_loss=np.ones(10), status="done",
                wall_time_s=1.0, attrs={"task": "mr", "metric": "accuracy", "model": "tiny",
                                        "majority_baseline": 0.5, "config_hash": cfg.hash,
                                        "config": cfg.to_toml(), "host": "h"}),
                shard_path(run, wi, do))
    collect(run)
    return run


def best_of(read, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    import dask
    import netCDF4

    import seedgrid

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_grid(Path(tmp), args.n, args.examples, args.steps)
        with netCDF4.Dataset(run / "cube.nc") as nc:
            chunking = nc["logits"].chunking()
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}; dask {dask.__version__}, xarray "
              f"{xr.__version__}; {args.n} x {args.n} cells, {args.examples} examples, "
              f"{args.steps} evaluations; logits' chunks on disk {chunking}")
        ways = {
            "eager (open_cube)": lambda: seedgrid.open_cube(run).seedgrid.metric().values,
            "open_cube(chunks={})": lambda: seedgrid.open_cube(run, chunks={})
            .seedgrid.metric().values,
            "xr.open_dataset(chunks={})": lambda: xr.open_dataset(
                run / "cube.nc", engine="netcdf4", chunks={}).seedgrid.metric().values,
            "open_cube(chunks='rows')": lambda: seedgrid.open_cube(run, chunks="rows")
            .seedgrid.metric().values,
        }
        eager = None
        for name, read in ways.items():
            seconds = best_of(read)
            eager = eager or seconds
            print(f"{name:30s} {seconds:7.3f} s   {seconds / eager:5.2f}x eager")


if __name__ == "__main__":
    main()
