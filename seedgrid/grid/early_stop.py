"""Start many, stop early, continue some — for real on the cluster (Dodge et al. §5).

``submit --early-stop started=T,fraction=F,continue=P`` trains the first T cells of the grid up
to the last evaluation at or before fraction F of training (phase one): each writes a shard with
status ``stopped`` (its evaluations so far; NaN after) and keeps its checkpoint. When phase one
has ended — on SLURM a decider job with ``--dependency=afterany`` on the phase-one arrays, so a
failed or cancelled task cannot block it — ``python -m seedgrid continue`` ranks the stopped
cells by their best metric up to the stop and continues the P best from their checkpoints to
the end (phase two). A continued cell is the same cell as one trained without stopping (same
batches, same state; bitwise on CPU with ``deterministic``). The plan and every decision are in
``early_stop.json`` in the run folder.

``budget=B`` instead picks T, F, P: from the simulation (:mod:`seedgrid.early_stopping`) on an
earlier cube of the task (``budget=B,cube=PATH``), else by the paper's rule of thumb (§5):
train about B/2 fully, stop the others after 30% of training (the paper: 20-30%), and start as
many more as the budget pays for — "significantly" more than are trained fully. For MRPC at a
budget of 20 the paper's Fig. 6 starts 41, continues 11, stops at 30%; so does this rule.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seedgrid.errors import UsageError
from seedgrid.log import clean_text, logger
from seedgrid.rundir import EARLY_STOP, shard_path
from seedgrid.files import locked, read_json, write_text_atomic
from seedgrid.folders import aside_said
from seedgrid.store import read_shard, shard_state

MAX_BUDGET = 1000
#: Dodge §5: stopping after 20-30% of training did best on three of four tasks; their Fig. 6
#: example (MRPC, budget 20) stops at 30%
RULE_OF_THUMB_FRACTION = 0.3
#: ... and the earliest (the paper: "after 20–30% of training")
RULE_OF_THUMB_LOW = 0.2
#: evaluations during training in Dodge et al. (3 epochs x 10), when a plan has no config
PAPER_EVALS = 30


@dataclass(frozen=True)
class Plan:
    started: int
    fraction: float
    continued: int
    source: str = "given"
    #: the simulation's expected best for this plan, and without stopping (budget=B,cube=…)
    predicted: float | None = None
    predicted_baseline: float | None = None


def parse_plan(spec: str, task: str | None = None, n_evals: int = PAPER_EVALS) -> Plan:
    """``started=T,fraction=F,continue=P`` or ``budget=B[,cube=PATH]``; UsageError if bad."""
    try:
        fields = dict(part.split("=", 1) for part in spec.split(","))
    except ValueError:
        raise UsageError(f"--early-stop {spec!r}: write started=T,fraction=F,continue=P or "
                         "budget=B (e.g. started=8,fraction=0.3,continue=3)") from None
    if "budget" in fields:
        return plan_from_budget(_number(fields, "budget", float), fields.get("cube"), task,
                                n_evals)
    if set(fields) != {"started", "fraction", "continue"}:
        raise UsageError(f"--early-stop {spec!r}: give started, fraction and continue (or "
                         "budget), e.g. started=8,fraction=0.3,continue=3")
    plan = Plan(_number(fields, "started", int), _number(fields, "fraction", float),
                _number(fields, "continue", int))
    check_plan(plan)
    if plan.fraction * n_evals < 1:  # phase one would stop before any evaluation to rank on
        raise UsageError(f"--early-stop fraction={plan.fraction:g} stops before the first "
                         f"evaluation during training (1/{n_evals} = {1 / n_evals:.4g} of it): "
                         f"give at least {1 / n_evals:.4g}")
    return plan


def _number(fields: dict, key: str, kind):
    try:
        return kind(fields[key])
    except ValueError:
        raise UsageError(f"--early-stop {key}={fields[key]!r} is not a number") from None


def check_plan(plan: Plan) -> None:
    if not 0 < plan.fraction < 1:
        raise UsageError(f"--early-stop fraction={plan.fraction}: give a fraction of training "
                         "strictly between 0 and 1 (the paper stops at 0.2-0.3)")
    if plan.started < 1 or plan.continued < 1:
        raise UsageError(f"--early-stop started={plan.started}, continue={plan.continued}: "
                         "both must be at least 1")
    if plan.continued > plan.started:
        raise UsageError(f"--early-stop continue={plan.continued} is more than started="
                         f"{plan.started}: continue at most the cells that started")


def plan_from_budget(budget: float, cube: str | None = None, task: str | None = None,
                     n_evals: int = PAPER_EVALS) -> Plan:
    """T, F, P for a budget of ``budget`` full runs of ``n_evals`` evaluations (see the module
    docstring); the earlier ``cube`` must be of ``task`` when one is given."""
    if not math.isfinite(budget) or budget < 1:
        raise UsageError(f"budget {budget} (--budget, or --early-stop budget=): a budget is "
                         "counted in full training runs and must be a number, at least 1")
    if budget > MAX_BUDGET:
        raise UsageError(f"budget {budget}: at most {MAX_BUDGET} full runs (the paper's "
                         "simulation goes to 30)")
    if cube is None:
        return rule_of_thumb(budget, n_evals)
    from seedgrid import early_stopping
    from seedgrid.cube import open_cube

    with open_cube(cube) as ds:
        if task is not None and ds.attrs["task"] != task:
            raise UsageError(f"the cube {cube!r} is of task {ds.attrs['task']!r}, not "
                             f"{task!r}: give an earlier cube of the same task")
        table = early_stopping.simulate(ds.seedgrid.metric(), budgets=[int(budget)],
                                        samples=5_000)
    best = early_stopping.best_per_budget(table).iloc[0]
    if best.stopped == 0 or best.stopped == best.started:  # no stopping, or nothing continued
        return Plan(int(best.started), 0.5, int(best.started), f"simulation on {cube}: "
                    "stopping does not pay")
    return Plan(int(best.started), float(best.fraction), int(best.continued),
                f"simulation on {cube}", float(best.expected), float(best.baseline))


def rule_of_thumb(budget: float, n_evals: int) -> Plan:
    """Dodge §5's rule of thumb, at any budget x: "the number of trials to train fully should be
    around x/2" (here: within one of it), "stopping least promising trials after 20–30% of
    training", and "the number of trials started should be significantly higher" — as many as
    the budget leaves for the stopped ones. Among the plans that spend at most x (continued +
    stopped · F, F = evaluations before the stop / n_evals) with at least one stopped, the one
    that spends the most of x, then stops nearest 30%, then continues nearest x/2. At x = 20
    over 30 evaluations: 41 started, 11 continued, stopped at 30% (the paper's Fig. 6 example).
    A budget too small to stop anything trains ceil(x) fully."""
    low, high = max(1, math.ceil(RULE_OF_THUMB_LOW * n_evals)), \
        int(RULE_OF_THUMB_FRACTION * n_evals + 1e-9)
    stops = list(range(low, high + 1)) or [max(1, min(n_evals - 1,
                                                      round(RULE_OF_THUMB_FRACTION * n_evals)))]
    candidates = []
    for continued in range(max(1, math.ceil(budget / 2 - 1)), int(budget / 2 + 1) + 1):
        for before in stops:
            stopped = int((budget - continued) * n_evals // before + 1e-9)
            spent = continued + stopped * before / n_evals
            if stopped >= 1 and spent <= budget + 1e-9:
                candidates.append((round(budget - spent, 9),
                                   abs(before / n_evals - RULE_OF_THUMB_FRACTION),
                                   abs(continued - budget / 2), continued, stopped, before))
    if not candidates:  # nothing can be stopped within the budget: train fully what fits
        whole = max(1, int(budget + 1e-9))
        return Plan(whole, RULE_OF_THUMB_FRACTION, whole, "rule of thumb: the budget stops "
                    "nothing")
    *_, continued, stopped, before = min(candidates)
    return Plan(continued + stopped, before / n_evals, continued, "rule of thumb")


def read(run_dir: Path) -> dict | None:
    """early_stop.json, or None when the run has none (a damaged one, or one whose cells are
    not the grid's, is set aside with a warning: the run then reads as one without
    --early-stop, and nothing outside the frozen grid is ever trained from it)."""
    path = Path(run_dir) / EARLY_STOP
    record = read_json(path, None)
    if record is None:
        return None
    problem = _problem(record, Path(run_dir))
    if problem:
        logger.warning(f"{path} cannot be the run's plan ({problem}); {aside_said(path)}")
        return None
    return record


def _problem(record, run_dir: Path) -> str | None:
    """What makes ``record`` not an early_stop.json of this run folder, or None."""
    from seedgrid.rundir import load_run_config

    if not isinstance(record, dict) or not isinstance(record.get("phase_one"), list):
        return "no list of phase-one cells"
    cells = [record["phase_one"]] + ([record["continued_cells"]]
                                     if record.get("continued_cells") is not None else [])
    if not all(isinstance(group, list) and all(
            isinstance(c, list) and len(c) == 2 and all(type(s) is int for s in c)
            for c in group) for group in cells):
        return "cells that are not pairs of seeds"
    twice = next((c for group in cells for c, n in Counter(map(tuple, group)).items() if n > 1),
                 None)
    if twice is not None:  # (a plan is a set of cells: a repeat would count one cell twice)
        return f"cell (wi={twice[0]}, do={twice[1]}) is listed twice"
    grid = {tuple(c) for c in load_run_config(run_dir).grid.cells()}
    outside = [c for group in cells for c in group if tuple(c) not in grid]
    if outside:
        return f"cell (wi={outside[0][0]}, do={outside[0][1]}) is not of the frozen grid"
    if len(cells) > 1 and not {tuple(c) for c in cells[1]} <= {tuple(c) for c in cells[0]}:
        return "a continued cell is not of phase one"
    fraction = record.get("fraction")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        return f"fraction {fraction!r} is not in (0, 1]"
    job = record.get("decider_job")  # (shown by status and given to sacct and scancel)
    if job is not None and not (isinstance(job, str) and job.isascii() and job.isdigit()
                                and len(job) <= 20):
        return f"decider_job {clean_text(repr(job))[:40]} is not a SLURM job id"
    return None


def read_record(run_dir: Path) -> dict:
    """early_stop.json of a run that has one; UsageError otherwise."""
    record = read(run_dir)
    if record is None:
        raise UsageError(f"{str(run_dir)!r} has no --early-stop plan ({EARLY_STOP} is missing "
                         "or was damaged): submit it with --early-stop")
    return record


def write(run_dir: Path, record: dict) -> None:
    write_text_atomic(Path(run_dir) / EARLY_STOP, json.dumps(record, indent=1))


def update(run_dir: Path, **changes) -> dict:
    """Add ``changes`` to early_stop.json under its lock (the decider job writes it too)."""
    with locked(Path(run_dir) / EARLY_STOP):
        record = {**read_record(run_dir), **changes}
        write(run_dir, record)
    return record


def start(run_dir: Path, plan: Plan, cells: list) -> dict:
    record = {**asdict(plan), "phase_one": [list(c) for c in cells], "phase": 1,
              "continued_cells": None}
    write(run_dir, record)
    return record


def fraction_for(record: dict | None, cell) -> float | None:
    """The fraction at which ``cell`` stops, or None if it trains to the end."""
    if record is None or list(cell) not in record["phase_one"]:
        return None
    if record["continued_cells"] is not None and list(cell) in record["continued_cells"]:
        return None
    return record["fraction"]


def to_continue(record: dict | None, cell) -> bool:
    return bool(record and record["continued_cells"] and list(cell) in record["continued_cells"])


def decide(run_dir: Path) -> dict:
    """Pick the cells to continue from the phase-one shards on disk, and record the decision."""
    run_dir = Path(run_dir)
    if read(run_dir) is None:
        raise UsageError(f"{str(run_dir)!r} was not submitted with --early-stop: nothing to "
                         "continue")
    with locked(run_dir / EARLY_STOP):
        return _decide(run_dir)


def _decide(run_dir: Path) -> dict:
    record = read(run_dir)
    if record is None:
        raise UsageError(f"{str(run_dir)!r} was not submitted with --early-stop: nothing to "
                         "continue")
    if record["continued_cells"] is not None:
        return record  # decided already (a rerun of the decider changes nothing)
    scores, missing, finished = {}, [], []
    for wi, do in record["phase_one"]:
        shard = _phase_one_shard(run_dir, (wi, do))
        if shard is None:
            missing.append([wi, do])
            continue
        finished.append([wi, do])
        if shard.status.item() == "stopped":
            scores[wi, do] = _best_during_training(shard)
    ranked = sorted(scores, key=lambda c: (-np.nan_to_num(scores[c], nan=-np.inf),
                                           record["phase_one"].index(list(c))))
    chosen = [list(c) for c in ranked[:record["continued"]]]
    record.update(phase=2, continued_cells=chosen, missing=missing,
                  stop_scores={f"{wi},{do}": s for (wi, do), s in scores.items()},
                  decided_on=len(finished))
    write(run_dir, record)
    return record


def _phase_one_shard(run_dir: Path, cell: tuple[int, int], quiet: bool = False):
    """A phase-one cell's shard, checked whole first (:func:`seedgrid.store.shard_state`); None
    without one — or with a damaged one (cut short, another cell's), which counts as missing:
    the decision goes on without it, saying so, on every rerun alike."""
    path = shard_path(run_dir, *cell)
    state = shard_state(path, cell)
    if state == "damaged":
        if not quiet:
            logger.warning(f"[wi={cell[0]} do={cell[1]}] its shard {path} is damaged: the "
                           "decision counts the cell as missing (train it again: "
                           "submit --resume)")
        return None
    if state is None:
        return None
    try:
        return read_shard(path)
    except (OSError, RuntimeError, ValueError, KeyError):
        return None


def _best_during_training(shard) -> float:
    """A shard's best metric over its evaluations during training (for a stopped shard: up to
    the stop), as ``ds.seedgrid.best_so_far`` defines it."""
    return float(shard.seedgrid.best_so_far().isel(step=-1).item())


def accounting(run_dir: Path) -> dict:
    """Cell-seconds spent by the policy vs the same cells all trained fully, and the best score
    the continued cells found in training (the realised result: what the simulation's
    experiment scores)."""
    record = read_record(run_dir)
    spent, full, finals = 0.0, [], []
    for wi, do in record["phase_one"]:
        shard = _phase_one_shard(run_dir, (wi, do), quiet=True)
        if shard is None:
            continue
        seconds = float(shard.wall_time_s.item())
        spent += seconds
        if shard.status.item() == "done":
            full.append(seconds)
            finals.append(_best_during_training(shard))
    estimate = len(record["phase_one"]) * float(np.mean(full)) if full else None
    return {"cell_seconds": spent, "all_full_estimate": estimate,
            "saved": (1 - spent / estimate) if estimate else None,
            "realised_best": max(finals) if finals else None,
            "predicted": record.get("predicted"),
            "predicted_baseline": record.get("predicted_baseline")}

