"""Per-task start-up cost, and how packing several cells into one array task amortises it.

    .venv/bin/python benchmarks/startup.py

Trains a small MiniLM cell (the demo preset on 160 / 100 sentences) with
``python -m seedgrid run`` and compares the command's wall time with the time spent inside the
cell (the shard's ``wall_time_s``): the difference is what every task pays before its first
cell (interpreter, imports, config). Then two cells in one process: the second reuses the
loaded tokenizer and data, as the cells of a packed task do. Prints the start-up share of a
task of 1, 5 and 25 cells.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

from seedgrid.config import config_from_dict, load_config
from seedgrid.store import read_shard
from seedgrid.trainer import train_cell


def main() -> None:
    raw = load_config("demo").to_dict()
    raw["task"].update(train_size=160, validation_size=100)
    raw["train"]["evals_per_epoch"] = 2
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "small-demo.toml"
        config.write_text(tomli_w.dumps(raw))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "seedgrid", "run", "--config", str(config), "--wi",
                        "1", "--do", "1", "--out", f"{tmp}/run"], check=True, capture_output=True)
        total = time.perf_counter() - start
        inside = float(read_shard(f"{tmp}/run/shards/wi1_do1.nc").wall_time_s.item())
    startup = total - inside
    cfg = config_from_dict(raw)
    times = []
    for wi in (1, 2):
        t = time.perf_counter()
        train_cell(cfg, wi, 1, log=lambda _: None)
        times.append(time.perf_counter() - t)
    print(f"one task, one cell: {total:.1f} s, of which {inside:.1f} s in the cell: start-up "
          f"{startup:.1f} s ({100 * startup / total:.0f}%)")
    print(f"in one process: first cell {times[0]:.1f} s, second {times[1]:.1f} s (reuses the "
          f"tokenizer and data: {times[0] - times[1]:+.1f} s)")
    for k in (1, 5, 25):
        share = startup / (startup + times[0] + (k - 1) * times[1])
        print(f"  start-up share of a task of {k:2d} cell(s): {100 * share:.1f}% (goal < 5%)")


if __name__ == "__main__":
    main()
