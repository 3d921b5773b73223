"""K cells as one stacked model (a pack) against K lone cells in turn and K processes side by
side, on this machine (a CPU here): cell-updates per second, their ratio to the lone cells in
turn, and peak memory — all in one run, each measurement in a fresh process.

    .venv/bin/python benchmarks/pack.py                       # tiny and MiniLM, K = 1, 2, 4
    .venv/bin/python benchmarks/pack.py --shapes tiny --k 1,2 --updates 10
    .venv/bin/python benchmarks/pack.py --demo                # + the demo grid, packed or not

Every variant trains real seedgrid cells (``seedgrid.trainer.train_cells``) of the same config:
``tiny`` is the 2-layer tiny BERT, ``minilm`` the packaged MiniLM (batch 16, 64 tokens, the
demo's data). Updates are timed from the second to the last (the first warms up), evaluation
excluded: one evaluation at the end. The processes variant starts K processes together, the
machine's threads shared among them (as ``pack_as = "processes"`` would). Peak memory is the
largest resident set of a variant's process (or of all K processes together). ``--demo`` also
runs the demo grid (4 MiniLM cells) through ``submit`` as today (one cell after another) and as
one pack of 4, and checks that the two give the same cells.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "tiny": {"model": {"name": "tiny-random-bert", "max_length": 64},
             "task": {"name": "mr", "train_size": 16 * 41, "validation_size": 16}},
    "minilm": {"model": {"name": "embedded:minilm", "max_length": 64},
               "task": {"name": "mr", "train_size": 16 * 9, "validation_size": 16}},
}
TRAIN = {"epochs": 1, "batch_size": 16, "learning_rate": 5e-5, "dropout": 0.1,
         "evals_per_epoch": 1}


def _config(shape: str, updates: int):
    from seedgrid.config import config_from_dict

    raw = json.loads(json.dumps(SHAPES[shape]))
    raw["task"]["train_size"] = 16 * (updates + 1)
    return config_from_dict({**raw, "train": TRAIN, "runtime": {"eval_batch_size": 16}},
                            source=f"bench-{shape}")


def child(shape: str, k: int, updates: int, threads: int, start_at: float) -> None:
    """One process: train k cells as one pack (k = 1: a lone cell); print its update times."""
    import torch

    from seedgrid.trainer import train_cells

    torch.set_num_threads(threads)
    cfg = _config(shape, updates)
    stamps: list[float] = []
    while time.time() < start_at:  # the K processes of a measurement start together
        time.sleep(0.01)
    train_cells(cfg, [(1 + i, 1 + i) for i in range(k)], log=lambda _: None,
                on_update=lambda u, _: stamps.append(time.perf_counter()))
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    print(json.dumps({"seconds": stamps[-1] - stamps[0], "updates": len(steps),
                      "median_s": statistics.median(steps)}))


def _run(shape: str, k: int, updates: int, processes: int, threads: int) -> dict:
    """``processes`` processes, each a pack of ``k`` cells, started together: their timings
    and their peak memory together."""
    start_at = time.time() + 3
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import pack; "
            f"pack.child({shape!r}, {k}, {updates}, {threads}, {start_at})")
    command = [sys.executable, "-c", code]
    wrapped = [sys.executable, "-c", "import resource, subprocess, sys; "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.stdout.strip()); print(r.stderr[-2000:], file=sys.stderr); "
               "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
               *command]
    procs = [subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO) for _ in range(processes)]
    outs = [p.communicate() for p in procs]
    results, peak = [], 0
    for out, err in outs:
        lines = out.strip().splitlines()
        if not lines or not lines[0].startswith("{"):
            raise RuntimeError(f"a benchmark process failed: {err[-2000:]}")
        results.append(json.loads(lines[0]))
        peak += int(lines[-1].split()[1]) * 1024
    seconds = max(r["seconds"] for r in results)
    cell_updates = sum(r["updates"] for r in results) * k
    return {"cell_updates_per_s": cell_updates / seconds, "peak_gb": peak / 1e9,
            "median_update_s": statistics.median(r["median_s"] for r in results)}


def measure(shape: str, k: int, updates: int, cores: int) -> dict:
    packed = _run(shape, k, updates, 1, cores)
    alone = _run(shape, 1, updates, 1, cores)  # K lone cells in turn: K times one cell's time
    turn = {"cell_updates_per_s": alone["cell_updates_per_s"], "peak_gb": alone["peak_gb"]}
    procs = _run(shape, 1, updates, k, max(1, cores // k)) if k > 1 else turn
    base = turn["cell_updates_per_s"]
    return {"shape": shape, "k": k,
            "stacked": {**packed, "ratio": packed["cell_updates_per_s"] / base},
            "in_turn": {**turn, "ratio": 1.0},
            "processes": {**procs, "ratio": procs["cell_updates_per_s"] / base}}


def demo(tmp: Path) -> dict:
    """The demo grid through submit, as today (one cell after another) and as one pack of 4."""
    from seedgrid.store import read_shard

    out = {}
    for name, extra in (("in_turn", []), ("pack_of_4", ["--pack", "4"])):
        folder = tmp / name
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "seedgrid", "submit", "--config", "demo",
                               "--cluster", "local", "--out", str(folder), "--wait", *extra],
                              cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        out[name] = time.perf_counter() - started
    gap = max(float(abs(read_shard(tmp / "in_turn" / f"shards/wi{w}_do{d}.nc")[v].values
                        - read_shard(tmp / "pack_of_4" / f"shards/wi{w}_do{d}.nc")[v].values)
                    .max()) for w in (1, 2) for d in (1, 2) for v in ("logits", "train_loss"))
    return {"in_turn_s": out["in_turn"], "pack_of_4_s": out["pack_of_4"],
            "speedup": out["in_turn"] / out["pack_of_4"], "max_abs_difference": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny,minilm")
    parser.add_argument("--k", default="1,2,4")
    parser.add_argument("--updates", type=int, default=0,
                        help="updates per cell (default: 40 tiny, 8 MiniLM)")
    parser.add_argument("--demo", action="store_true", help="also the demo grid, packed or not")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} on {cores} core(s); "
          f"python {sys.version.split()[0]}; {' '.join(sys.argv)}")
    print(f"{'shape':7} {'K':>2} | {'variant':10} {'cell-upd/s':>10} {'ratio':>6} "
          f"{'peak GB':>8} {'s/update':>9}")
    for shape in args.shapes.split(","):
        updates = args.updates or {"tiny": 40, "minilm": 8}[shape]
        for k in (int(x) for x in args.k.split(",")):
            r = measure(shape, k, updates, cores)
            for variant in ("stacked", "in_turn", "processes"):
                v = r[variant]
                print(f"{shape:7} {k:>2} | {variant:10} {v['cell_updates_per_s']:10.2f} "
                      f"{v['ratio']:6.2f} {v['peak_gb']:8.2f} "
                      f"{v.get('median_update_s', float('nan')):9.3f}", flush=True)
    if args.demo:
        with tempfile.TemporaryDirectory() as tmp:
            d = demo(Path(tmp))
        print(f"demo grid (4 MiniLM cells) through submit: one after another "
              f"{d['in_turn_s']:.0f} s, one pack of 4 {d['pack_of_4_s']:.0f} s "
              f"({d['speedup']:.2f}x); largest difference between their cells "
              f"{d['max_abs_difference']:.1e}")


if __name__ == "__main__":
    main()
