"""Start many, stop early, continue some: Dodge et al.'s early-stopping simulation (§5, Fig. 6, 7).

A budget ``B`` is counted in full training runs of ``E`` evaluations each (E = the cube's
evaluations during training; the one before training is free). A configuration starts ``started``
trials, stops the ``stopped`` least promising after ``evaluations`` of the E evaluations and
trains the other ``continued`` to the end, so that it spends exactly the budget::

    continued * E + stopped * evaluations == B * E

``stopped = 0`` (started = B, all trained fully) is the no-stopping baseline. One simulated
experiment draws ``started`` trials of the grid **with replacement**, ranks them by their best
score over the first ``evaluations`` evaluations (ties broken at random, per experiment), stops the ``stopped``
lowest — they keep that early best — and the others score their best over all E evaluations; the
experiment's result is the best of its trials. The expected result is the mean over ``samples``
experiments (50,000 by default, seeded), as the authors' analysis code does
(https://github.com/dodgejesse/bert_on_stilts, its analysis/ folder).

Vectorised: the experiments are drawn as sorted rank positions, a block of samples at a time, so
"the best of the continued trials" is a maximum over the top places of the sorted draws; one
draw serves every configuration with the same number of started trials.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from seedgrid.errors import UsageError
from seedgrid.store import SEEDS



def configurations(n_evals: int, budgets=range(1, 31), max_started: int = 200) -> pd.DataFrame:
    """Every (budget, started, stopped, evaluations) that spends the budget exactly.

    ``evaluations`` runs over 1..E−1 for stopped trials; the baseline rows have stopped = 0 and
    evaluations = E. Columns: budget, started, stopped, continued, evaluations, fraction.
    """
    budgets = np.asarray(list(budgets), dtype=np.int64)
    if len(budgets) == 0 or budgets.min() < 1:
        raise UsageError(f"budgets {budgets.tolist()}: a budget is a number of full runs, "
                         "at least 1")
    b, s, e = np.meshgrid(budgets, np.arange(1, max_started + 1), np.arange(1, n_evals),
                          indexing="ij")
    num, den = n_evals * (s - b), n_evals - e
    k = num // den
    ok = (num % den == 0) & (k >= 1) & (k <= s)
    stopping = pd.DataFrame({"budget": b[ok], "started": s[ok], "stopped": k[ok],
                             "evaluations": e[ok]})
    baseline = pd.DataFrame({"budget": budgets, "started": budgets, "stopped": 0,
                             "evaluations": n_evals})
    table = pd.concat([baseline[baseline.started <= max_started], stopping], ignore_index=True)
    table.insert(3, "continued", table.started - table.stopped)
    table["fraction"] = table.evaluations / n_evals
    return table.sort_values(["budget", "started", "stopped", "evaluations"]) \
        .reset_index(drop=True)


def trials(metric: xr.DataArray) -> np.ndarray:
    """(trial, evaluation) best-so-far scores of the runs present, evaluations during training.

    ``metric`` (seed_wi, seed_do, step) with step = update counts (as ``ds.seedgrid.metric()``);
    the evaluation at update 0 (before training) is dropped. A NaN evaluation counts as the
    worst score; a run without any score is left out.
    """
    during = metric.sel(step=metric["step"] > 0).stack(trial=SEEDS).transpose("trial", "step")
    scores = during.values.astype(np.float64)
    scores = scores[~np.isnan(scores).all(axis=1)]
    return np.fmax.accumulate(np.where(np.isnan(scores), -np.inf, scores), axis=1)


def simulate(metric: xr.DataArray, budgets=range(1, 31), max_started: int = 200,
             samples: int = 50_000, seed: int = 0, block: int = 5_000) -> pd.DataFrame:
    """The expected best result of every configuration (see the module docstring).

    Returns :func:`configurations` with ``expected`` (the mean over experiments) and ``std``
    (their standard deviation; the Monte Carlo error of ``expected`` is std / sqrt(samples)).
    """
    best = trials(metric)
    n, n_evals = best.shape
    if n == 0 or n_evals < 2:
        raise UsageError(f"early stopping needs runs with at least 2 evaluations during "
                         f"training (this cube: {n} runs, {n_evals} evaluations): set "
                         "[train] evals_per_epoch higher")
    if samples < 1:
        raise UsageError(f"samples = {samples}: give at least 1 (the paper uses 50,000)")
    table = configurations(n_evals, budgets, max_started)
    total, total_sq = np.zeros(len(table)), np.zeros(len(table))
    # started -> [(evaluations, [(row, stopped), ...]), ...]
    groups = {s: [(e, list(zip(rows.index, rows.stopped))) for e, rows in
                  by_s.groupby("evaluations")] for s, by_s in table.groupby("started")}
    # trials sorted by their best over the first e evaluations, worst first; trials tied there
    # form a run of positions [first, first + size)
    order = {e: np.argsort(best[:, e - 1], kind="stable") for e in range(1, n_evals + 1)}
    early = {e: best[order[e], e - 1] for e in order}
    final = {e: best[order[e], -1] for e in order}
    tied = {}
    for e, scores in early.items():
        first = np.searchsorted(scores, scores, side="left")
        tied[e] = (first, np.searchsorted(scores, scores, side="right") - first)
    rng = np.random.default_rng(seed)
    for start in range(0, samples, block):
        size = min(block, samples - start)
        for started, by_e in groups.items():
            # one experiment = `started` trials drawn with replacement, as sorted positions
            draws = np.sort(rng.integers(0, n, size=(size, started)), axis=1)
            member = rng.random((size, started))
            for e, rows in by_e:
                # only the draws from the lowest continued place up matter for the results
                lowest = min([stopped for _, stopped in rows if stopped < started], default=0)
                top = draws[:, lowest:]
                first, tie_size = tied[e]
                if tie_size.max() > 1:
                    # ties broken at random: a draw within a run of tied trials is replaced by
                    # a fresh uniform member of that run, independent of its place in the ranking
                    top = first[top] + (member[:, lowest:] * tie_size[top]).astype(np.int64)
                # the best of the draws from each place up, for every place at once: the result
                # of stopping the `stopped` lowest is the column `stopped` (from `lowest` on)
                from_place = np.maximum.accumulate(final[e][top][:, ::-1], axis=1)[:, ::-1]
                for row, stopped in rows:
                    if stopped < started:  # the best of the top `continued` draws
                        result = from_place[:, stopped - lowest]
                    else:  # all stopped: the best early score, the top draw's
                        result = early[e][draws[:, -1]]
                    total[row] += result.sum()
                    total_sq[row] += np.square(result).sum()
    table["expected"] = total / samples
    table["std"] = np.sqrt(np.clip(total_sq / samples - table["expected"] ** 2, 0, None))
    return table


def best_per_budget(table: pd.DataFrame) -> pd.DataFrame:
    """Fig. 6 and 7: per budget, the best configuration and its gain over no stopping.

    ``relative_error_reduction`` = (best − baseline) / (1 − baseline): the share of the
    baseline's error (1 − metric) that early stopping removes.
    """
    top = table.loc[table.groupby("budget")["expected"].idxmax()].set_index("budget")
    base = table[table.stopped == 0].set_index("budget")["expected"]
    top.insert(0, "baseline", base)
    with np.errstate(divide="ignore", invalid="ignore"):
        top["relative_error_reduction"] = (top.expected - top.baseline) / (1 - top.baseline)
    return top.reset_index()
