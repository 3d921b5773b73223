"""collect vs xarray.open_mfdataset(...).to_netcdf(...) on 625 shards of SST-2 size.

    .venv/bin/pip install -e '.[bench]'      # dask, which open_mfdataset needs
    .venv/bin/python benchmarks/collect.py [--n 25]

Writes n x n synthetic shards of the real schema (872 examples x 31 evaluations x 2 classes,
as Dodge et al.'s SST-2 grid), then builds the cube twice, each in a fresh process so that peak
memory is its own: seedgrid's collect, and the straightforward xarray way (open every shard
with open_mfdataset, combine by coordinates, write). Prints wall times, their ratio, and the
peak memory each added over its process after imports (ru_maxrss; 0 means the work never
exceeded what the imports had already taken), against the cube's size in memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import resource, sys, time
from pathlib import Path
run, how = Path(sys.argv[1]), sys.argv[2]
import xarray as xr, seedgrid
from seedgrid.cube import collect
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if how == "seedgrid":
    collect(run)
else:
    paths = sorted((run / "shards").glob("*.nc"))
    with xr.open_mfdataset(paths, combine="by_coords", engine="netcdf4") as ds:
        ds.to_netcdf(run / "baseline.nc", engine="netcdf4")
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(elapsed, (peak - before) / 1024, peak / 1024)
"""


def make_run(run: Path, n: int) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_config

    from seedgrid.rundir import write_config
    from seedgrid.rundir import shard_path
    from seedgrid.store import cell_dataset, write_atomic

    cfg = tiny_config(grid={"n_wi": n, "n_do": n})
    write_config(run, cfg)
    rng = np.random.default_rng(0)
    steps = np.arange(31) * 140
    labels = rng.integers(0, 2, 872)
    for wi in range(1, n + 1):
        for do in range(1, n + 1):
            ds = cell_dataset(seed_wi=wi, seed_do=do,
                              logits=rng.normal(size=(31, 872, 2)).astype(np.float32),
                              labels=labels, example_ids=np.arange(872), steps=steps,
                              epochs=steps / 1400.0, train_loss=rng.random(4200), status="done",
                              wall_time_s=1.0,
                              attrs={"task": "sst2", "metric": "accuracy", "model": "synthetic",
                                     "majority_baseline": 0.51, "config_hash": cfg.hash,
                                     "config": cfg.to_toml()})
            write_atomic(ds, shard_path(run, wi, do))


def measure(run: Path, how: str) -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, "-c", WORKER, str(run), how], capture_output=True,
                         text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{how} failed: {out.stderr[-800:]}")
    seconds, added, peak = map(float, out.stdout.split())
    return seconds, added, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25, help="grid side (default 25: 625 shards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "runs" if (REPO / "runs").is_dir() else None) as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        make_run(run, args.n)
        print(f"{args.n * args.n} shards written in {time.perf_counter() - start:.0f} s")
        in_memory = args.n ** 2 * (31 * 872 * 2 * 4 + 4200 * 4) / 1e6
        ours = measure(run, "seedgrid")
        theirs = measure(run, "open_mfdataset")
        print(f"seedgrid collect: {ours[0]:.1f} s, peak memory +{ours[1]:.0f} MB over the "
              f"process after its imports ({ours[2]:.0f} MB in all)")
        print(f"open_mfdataset + to_netcdf: {theirs[0]:.1f} s, peak memory +{theirs[1]:.0f} MB "
              f"({theirs[2]:.0f} MB in all)")
        print(f"speed-up {theirs[0] / ours[0]:.1f}x (goal >= 5x); collect's peak is "
              f"{100 * ours[1] / in_memory:.0f}% of the cube's {in_memory:.0f} MB in memory "
              "(goal < 25%)")


if __name__ == "__main__":
    main()
