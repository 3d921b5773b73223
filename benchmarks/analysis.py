"""The report's analyses (vectorised) against straightforward loops, on a CoLA-size cube.

    .venv/bin/python benchmarks/analysis.py [--n 25] [--loop-samples 20]

A synthetic 25 x 25 cube of Dodge et al.'s CoLA size (1,043 examples x 31 evaluations x 2
classes, metric MCC), with run skill, example difficulty and divergent runs so that every
analysis has something to find. Timed in the same process:

- ``report.analyse`` (the whole report without figures; early stopping at the report's 5,000
  samples per configuration), and the full early-stopping search (budgets 1..30, 50,000 samples);
- the loops a user would write: scikit-learn's MCC per run and evaluation, ``spearmanr`` /
  ``pearsonr`` per pair of evaluations, consistency by a loop over pairs of runs (grid, WI rows,
  DO columns), the permutation test one shuffle at a time, and the simulation one experiment at a
  time. The simulation loop runs ``--loop-samples`` experiments per configuration and is scaled
  to the vectorised sample counts (printed as such).

Prints seconds, the ratios, and peak memory (ru_maxrss) after each phase, and appends them with
the date, the machine and the command to ``benchmarks/results/analysis.md``: times on a shared
machine vary, so the ratios against the loops of the same run are what to compare across runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.stats
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seedgrid import early_stopping, report  # noqa: E402
from seedgrid.store import SCHEMA_VERSION  # noqa: E402


def synthetic_cube(n: int, examples: int = 1043, evals: int = 30, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    label = (rng.random(examples) < 0.7).astype(np.int64)  # CoLA: 70% acceptable
    difficulty = rng.normal(0, 1.5, examples)
    skill = rng.normal(1.0, 0.5, (n, n, 1, 1))
    diverged = rng.random((n, n)) < 0.1
    progress = np.linspace(0, 1, evals + 1) ** 0.5  # (step,)
    margin = skill * progress[None, None, None, :] * 2 - difficulty[None, None, :, None] * 0.5
    margin = margin + rng.normal(0, 0.8, (n, n, examples, evals + 1))
    margin[diverged] = -5.0  # predicts the majority class... of the wrong sign: all 0
    sign = np.where(label == 1, 1.0, -1.0)[None, None, :, None]
    logit1 = (margin * sign).astype(np.float32)
    logits = np.stack([np.zeros_like(logit1), logit1], axis=-1)
    steps = np.arange(evals + 1) * 18
    return xr.Dataset(
        {"logits": (("seed_wi", "seed_do", "example", "step", "class"), logits),
         "label": ("example", label),
         "train_loss": (("seed_wi", "seed_do", "update"), rng.random((n, n, 540), np.float32)),
         "status": (("seed_wi", "seed_do"), np.full((n, n), "done", dtype=object)),
         "wall_time_s": (("seed_wi", "seed_do"), np.ones((n, n)))},
        coords={"seed_wi": np.arange(1, n + 1), "seed_do": np.arange(1, n + 1),
                "example": np.arange(examples), "step": steps,
                "epoch": ("step", steps / 180.0), "class": [0, 1],
                "update": np.arange(1, 541)},
        attrs={"schema_version": SCHEMA_VERSION, "task": "cola", "metric": "mcc",
               "model": "synthetic", "majority_baseline": 0.0, "config_hash": "synthetic",
               "n_train": 8551})


def loops(ds: xr.Dataset, loop_samples: int, samples_report: int, samples_full: int) -> dict:
    """The analyses as loops; returns seconds per part (the simulation scaled)."""
    from sklearn.metrics import matthews_corrcoef

    label = ds.label.values
    pred = ds.logits.values.argmax(-1)  # (wi, do, example, step)
    n_wi, n_do, _, n_steps = pred.shape
    times = {}
    start = time.perf_counter()
    metric = np.empty((n_wi, n_do, n_steps))
    for wi, do, s in itertools.product(range(n_wi), range(n_do), range(n_steps)):
        metric[wi, do, s] = matthews_corrcoef(label, pred[wi, do, :, s])
    times["metric per run and evaluation (sklearn)"] = time.perf_counter() - start

    start = time.perf_counter()
    best = np.fmax.accumulate(metric[..., 1:], axis=-1).reshape(n_wi * n_do, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, j in itertools.product(range(best.shape[1]), repeat=2):
            scipy.stats.spearmanr(best[:, i], best[:, j])
            scipy.stats.pearsonr(best[:, i], best[:, j])
    times["correlation per pair of evaluations (scipy)"] = time.perf_counter() - start

    start = time.perf_counter()
    final = pred[..., -1]
    groups = [final.reshape(n_wi * n_do, -1)] + [final[wi] for wi in range(n_wi)] + \
        [final[:, do] for do in range(n_do)]
    for runs in groups:
        for a, b in itertools.combinations(range(len(runs)), 2):
            np.mean(runs[a] == runs[b])
    times["consistency per pair of runs"] = time.perf_counter() - start

    start = time.perf_counter()
    grid = metric[..., -1]
    rng = np.random.default_rng(0)
    for _ in range(10_000):
        shuffled = rng.permutation(grid.ravel()).reshape(grid.shape)
        np.ptp(shuffled.mean(axis=1)), np.ptp(shuffled.mean(axis=0))
    times["permutation test, shuffle by shuffle"] = time.perf_counter() - start

    table = early_stopping.configurations(best.shape[1])
    start = time.perf_counter()
    experiments = 0
    for row in table.itertuples():
        for _ in range(loop_samples):
            drawn = rng.integers(0, len(best), row.started)
            ranked = sorted(drawn, key=lambda t: (best[t, row.evaluations - 1], rng.random()))
            stopped, kept = ranked[:row.stopped], ranked[row.stopped:]
            max([best[t, row.evaluations - 1] for t in stopped] + [best[t, -1] for t in kept])
            experiments += 1
    per_experiment = (time.perf_counter() - start) / experiments
    times["simulation (report's samples), scaled"] = per_experiment * len(table) * samples_report
    times["_simulation_full_scaled"] = per_experiment * len(table) * samples_full
    return times


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


RESULTS = Path(__file__).resolve().parent / "results" / "analysis.md"
_said: list[str] = []


def say(line: str) -> None:
    print(line, flush=True)
    _said.append(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25)
    parser.add_argument("--loop-samples", type=int, default=20)
    parser.add_argument("--no-record", action="store_true",
                        help=f"do not append the figures to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args()
    ds = synthetic_cube(args.n)
    say(f"cube: {args.n} x {args.n} runs x {ds.sizes['example']} examples x "
          f"{ds.sizes['step']} evaluations ({ds.logits.nbytes / 1e6:.0f} MB of logits); "
          f"peak {peak_mb():.0f} MB")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        report.analyse(ds, samples=5_000)
        t_report = time.perf_counter() - start
    say(f"report.analyse (no figures, early stopping at 5,000 samples): {t_report:.2f} s; "
          f"peak {peak_mb():.0f} MB")
    start = time.perf_counter()
    early_stopping.simulate(ds.seedgrid.metric(), samples=5_000)
    t_sim = time.perf_counter() - start
    start = time.perf_counter()
    early_stopping.simulate(ds.seedgrid.metric(), samples=50_000)
    t_full = time.perf_counter() - start
    say(f"early-stopping search, budgets 1..30, 50,000 samples: {t_full:.1f} s; "
          f"peak {peak_mb():.0f} MB")

    times = loops(ds, args.loop_samples, 5_000, 50_000)
    full_loop = times.pop("_simulation_full_scaled")
    sim_loop = times["simulation (report's samples), scaled"]
    for name, seconds in times.items():
        say(f"  loop: {name}: {seconds:.1f} s")
    t_loops = sum(times.values())
    say(f"loops for the report's analyses: {t_loops:.1f} s -> vectorised is "
          f"{t_loops / t_report:.0f}x faster")
    say(f"  without the simulation: {t_loops - sim_loop:.1f} s of loops vs "
          f"{t_report - t_sim:.2f} s vectorised -> {(t_loops - sim_loop) / (t_report - t_sim):.0f}x"
          f"; the simulation at 5,000 samples: {sim_loop:.0f} s vs {t_sim:.2f} s -> "
          f"{sim_loop / t_sim:.0f}x")
    say(f"loop simulation at 50,000 samples (scaled from {args.loop_samples} per "
          f"configuration): {full_loop / 3600:.1f} h -> vectorised is {full_loop / t_full:.0f}x "
          f"faster")


    if not args.no_record:  # the ratios are what a reviewer compares across runs
        RESULTS.parent.mkdir(exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d %H:%M')} on {socket.gethostname()} "
                    f"({len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f})\n\n"
                    f"    {' '.join(['.venv/bin/python', *sys.argv])}\n\n"
                    + "".join(f"    {line}\n" for line in _said))
        print(f"appended to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
