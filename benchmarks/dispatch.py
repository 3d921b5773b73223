"""Wall time of `submit` and `status` on a 25 x 25 grid (625 cells), on the dev SLURM.

    slurm/start.sh && source /var/tmp/seedgrid-slurm/env.sh
    .venv/bin/python benchmarks/dispatch.py

1. ``python -m seedgrid submit --array 625`` (one task per cell) against a bare
   ``sbatch --array=0-624 --wrap true`` measured in the same run; both arrays are cancelled at
   once (nothing trains).
2. ``python -m seedgrid status`` on that run once every cell has a shard (625 small synthetic
   shards of the real schema), against ``python -c "import seedgrid.grid.status"`` (the start-up
   every command pays).

A benchmark, not a test: compare the ratios, the machine is shared and noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import tiny_raw, write_toml  # noqa: E402

from seedgrid.rundir import shard_path  # noqa: E402
from seedgrid.store import cell_dataset, write_atomic  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr[-500:]}")
    return time.perf_counter() - start, out.stdout


def fake_shards(run_dir: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    steps = np.array([0, 5, 10])
    for wi in range(1, n + 1):
        for do in range(1, n + 1):
            ds = cell_dataset(seed_wi=wi, seed_do=do, logits=rng.normal(size=(3, 24, 2)),
                              labels=rng.integers(0, 2, 24), example_ids=np.arange(24),
                              steps=steps, epochs=steps / 5.0, train_loss=rng.random(10),
                              status="done", wall_time_s=1.0, attrs={"task": "mr"})
            write_atomic(ds, shard_path(run_dir, wi, do))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tiny_raw()
        del raw["grid"]
        config = write_toml(tmp / "grid.toml", raw)
        run_dir = tmp / "run"

        bare, out = timed(["sbatch", "--parsable", "--array=0-624%1", "--wrap", "true",
                           "-o", "/dev/null", "--hold"])
        subprocess.run(["scancel", out.strip()])
        ours, out = timed([sys.executable, "-m", "seedgrid", "submit", "--config", str(config),
                           "--cluster", str(REPO / "slurm/dev.toml"), "--array", "625", "--parallel", "1",
                           "--out", str(run_dir)])
        jobs = json.loads((run_dir / "jobs.json").read_text())
        ids = [a["job_id"] for a in jobs["submissions"][0]["arrays"]]
        subprocess.run(["scancel", *ids])
        print(f"submit 625 cells: {ours:.2f} s ({len(ids)} sbatch call(s)); bare sbatch of a "
              f"625-task array: {bare:.2f} s; ratio {ours / bare:.1f} (goal: submit < 5 s)")

        fake_shards(run_dir, 25)
        start_up, _ = timed([sys.executable, "-c", "import seedgrid.grid.status"])
        status, out = timed([sys.executable, "-m", "seedgrid", "status", str(run_dir)])
        assert "done 625" in out, out
        print(f"status of 625 cells: {status:.2f} s; python + import of seedgrid.grid.status alone: "
              f"{start_up:.2f} s (goal: status < 2 s)")


if __name__ == "__main__":
    main()
