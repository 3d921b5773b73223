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
earlier cube of the task (``budget=B,cube=PATH``), else by the paper's rule of thumb: start
about twice as many as are trained fully, stop at 25% of training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seedgrid.errors import UsageError
from seedgrid.store import read_shard, shard_path, write_text_atomic

POLICY = "early_stop.json"
RULE_OF_THUMB_FRACTION = 0.25


@dataclass(frozen=True)
class Plan:
    started: int
    fraction: float
    continued: int
    source: str = "given"
    #: the simulation's expected best for this plan, and without stopping (budget=B,cube=…)
    predicted: float | None = None
    predicted_baseline: float | None = None


def parse_plan(spec: str, task: str | None = None) -> Plan:
    """``started=T,fraction=F,continue=P`` or ``budget=B[,cube=PATH]``; UsageError if bad."""
    try:
        fields = dict(part.split("=", 1) for part in spec.split(","))
    except ValueError:
        raise UsageError(f"--early-stop {spec!r}: write started=T,fraction=F,continue=P or "
                         "budget=B (e.g. started=8,fraction=0.3,continue=3)") from None
    if "budget" in fields:
        return plan_from_budget(_number(fields, "budget", float), fields.get("cube"), task)
    if set(fields) != {"started", "fraction", "continue"}:
        raise UsageError(f"--early-stop {spec!r}: give started, fraction and continue (or "
                         "budget), e.g. started=8,fraction=0.3,continue=3")
    plan = Plan(_number(fields, "started", int), _number(fields, "fraction", float),
                _number(fields, "continue", int))
    check_plan(plan)
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


def plan_from_budget(budget: float, cube: str | None = None, task: str | None = None) -> Plan:
    """T, F, P for a budget of ``budget`` full runs (see the module docstring); the earlier
    ``cube`` must be of ``task`` when one is given."""
    if budget < 1:
        raise UsageError(f"budget {budget} (--budget, or --early-stop budget=): a budget is "
                         "counted in full training runs and must be at least 1")
    if cube is None:  # continued + (started − continued) · F <= budget, started <= 2 · continued
        continued = max(1, int(budget // (1 + RULE_OF_THUMB_FRACTION)))
        stopped = min(continued, int((budget - continued) / RULE_OF_THUMB_FRACTION + 1e-9))
        return Plan(continued + stopped, RULE_OF_THUMB_FRACTION, continued, "rule of thumb")
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


def stop_update(eval_at: np.ndarray, fraction: float) -> int:
    """The update of the last evaluation at or before ``fraction`` of training (at least the
    first evaluation during training): where phase one stops."""
    during = eval_at[eval_at > 0]
    allowed = during[during <= fraction * eval_at[-1]]
    return int(allowed[-1] if len(allowed) else during[0])


def read(run_dir: Path) -> dict | None:
    path = Path(run_dir) / POLICY
    return json.loads(path.read_text()) if path.exists() else None


def write(run_dir: Path, record: dict) -> None:
    write_text_atomic(Path(run_dir) / POLICY, json.dumps(record, indent=1))


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
    record = read(run_dir)
    if record is None:
        raise UsageError(f"{str(run_dir)!r} was not submitted with --early-stop: nothing to "
                         "continue")
    if record["continued_cells"] is not None:
        return record  # decided already (a rerun of the decider changes nothing)
    scores, missing, finished = {}, [], []
    for wi, do in record["phase_one"]:
        path = shard_path(run_dir, wi, do)
        if not path.exists():
            missing.append([wi, do])
            continue
        shard = read_shard(path)
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


def _best_during_training(shard) -> float:
    """A shard's best metric over its evaluations during training (for a stopped shard: up to
    the stop), as ``ds.seedgrid.best_so_far`` defines it."""
    return float(shard.seedgrid.best_so_far().isel(step=-1).item())


def accounting(run_dir: Path) -> dict:
    """Cell-seconds spent by the policy vs the same cells all trained fully, and the best score
    the continued cells found in training (the realised result: what the simulation's
    experiment scores)."""
    record = read(run_dir)
    spent, full, finals = 0.0, [], []
    for wi, do in record["phase_one"]:
        path = shard_path(run_dir, wi, do)
        if not path.exists():
            continue
        shard = read_shard(path)
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

