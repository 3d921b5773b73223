"""A pack's cells resumed from their checkpoints: each checked as a whole against the pack it
joins (its config and cell, its progress, the shape of every tensor) before any of it is
applied; a checkpoint that cannot be its cell's is set aside and the cell starts afresh; cells
whose checkpoints are of different updates train as packs in step, one after the other
(:class:`NotInStep`). A checkpoint is a lone cell's in every case: a packed cell resumes alone,
a lone one in a pack.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from seedgrid import stacked
from seedgrid.checkpoint import Progress
from seedgrid.engine import Pack, Run


def resume_cells(pack: Pack, checkpointers: list, say, started: float) -> list[Run]:
    """Each cell's progress: fresh, or its checkpoint's (model, optimizer and schedule
    restored); each checkpointer bound to its cell's state."""
    runs = []
    for k, ((wi, do), checkpointer) in enumerate(zip(pack.cells, checkpointers)):
        progress = Progress(
            logits=np.full((len(pack.eval_at), len(pack.val), pack.task.num_labels), np.nan,
                           np.float32),
            train_loss=np.full(pack.total_updates, np.nan, np.float32),
            started=started)
        runs.append(Run(wi, do, progress, checkpointer))
    saved = [None if c is None else c.load() for c in checkpointers]
    for state, c in zip(saved, checkpointers):
        if state is not None:
            _refuse_other_inputs(pack, state, c.path)
    for k, (run, state, c) in enumerate(zip(runs, saved, checkpointers)):
        problem = None if state is None else _checkpoint_problem(pack, run, state)
        if problem is not None:
            if pack.accelerator.is_main_process:
                c.reject(problem)
            saved[k] = None
    updates = {0 if s is None else int(s["update"]) for s in saved}
    if len(updates) > 1:  # (a checkpoint set aside above: that cell starts afresh)
        raise NotInStep([[k for k, s in enumerate(saved) if (0 if s is None else s["update"])
                           == u] for u in sorted(updates)], saved)
    if any(s is not None for s in saved):
        try:
            _load(pack, [s if s is not None else pack.state(k) for k, s in enumerate(saved)])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:  # (checked
            # whole above: this is what no check foresaw) the pack starts afresh, without them
            for state, c in zip(saved, checkpointers):
                if state is not None and pack.accelerator.is_main_process:
                    c.reject(f"it does not load ({type(e).__name__}: {str(e)[:120]})")
            raise NotInStep([list(range(pack.k))], [None] * pack.k) from None
        for run, state, c in zip(runs, saved, checkpointers):
            if state is not None:
                run.progress.restore(state)
                say(f"{run.name} resumed from {c.path} at update {run.progress.update}/"
                    f"{pack.total_updates}")
    for k, (run, c) in enumerate(zip(runs, checkpointers)):
        if c is not None and pack.accelerator.is_main_process:
            c.bind(_state_of(pack, k, run))
    return runs


class NotInStep(Exception):
    """The cells of a pack resume at different updates: groups of cell indices, in step."""

    def __init__(self, groups: list[list[int]], saved: list) -> None:
        super().__init__(groups)
        self.groups, self.saved = groups, saved


def _state_of(pack: Pack, k: int, run: Run) -> Callable[[], dict]:
    """What cell k's checkpoint saves: its share of the pack and its progress."""
    return lambda: {**pack.state(k), **run.progress.state()}


def _checkpoint_problem(pack: Pack, run: Run, state: dict) -> str | None:
    """Why ``state`` cannot be ``run``'s checkpoint in this pack (None if it can): another
    config or cell, progress out of range, or tensors of other shapes than the model's."""
    try:
        return _state_problem(pack, run, state)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        return f"not a checkpoint of this shape ({type(e).__name__}: {e})"


def _refuse_other_inputs(pack: Pack, state: dict, path) -> None:
    """UsageError naming the file when a checkpoint trained on another config or other data
    than this run's: resuming it would make a cell of neither (the data file edited, the
    config changed under a run folder)."""
    from seedgrid.errors import UsageError

    if not isinstance(state, dict):
        return
    if isinstance(state.get("config_hash"), str) and state["config_hash"] != pack.cfg.hash:
        raise UsageError(f"checkpoint {path} trained config {state['config_hash']}, and this "
                         f"run is config {pack.cfg.hash}: resume with the config it trained, "
                         "or start a new run (--out)")
    data = state.get("data")
    for split, fingerprint in (data.items() if isinstance(data, dict) else ()):
        now = pack.fingerprints.get(split)
        if now is not None and fingerprint != now:
            raise UsageError(f"checkpoint {path} trained on other data ({split} {fingerprint}, "
                             f"now {now}): restore the data it trained on, or start a new run "
                             "(--out)")


def _state_problem(pack: Pack, run: Run, state: dict) -> str | None:
    if (state["seed_wi"], state["seed_do"]) != (run.seed_wi, run.seed_do):
        return "it is of another cell"
    update, evaluated = state["update"], state["evaluated"]
    if not (isinstance(update, int) and 0 <= update <= pack.total_updates):
        return f"update {update!r} is not within 0..{pack.total_updates}"
    due = int(np.searchsorted(pack.eval_at, update, side="right"))
    if not (isinstance(evaluated, int) and 0 <= evaluated <= due):
        return f"{evaluated!r} evaluations done by update {update}, of at most {due}"
    expected = {"logits": run.progress.logits.shape, "train_loss": run.progress.train_loss.shape}
    for name, shape in expected.items():
        if not torch.is_tensor(state[name]) or tuple(state[name].shape) != shape:
            return f"its {name} are not of shape {shape}"
    model = pack.accelerator.unwrap_model(pack.model)
    shapes = {name: tuple(value.shape[1:] if name in pack.stacked else value.shape)
              for name, value in model.state_dict().items()}
    theirs = state["model"] if isinstance(state["model"], dict) else {}
    if set(theirs) != set(shapes):
        return "its model has other parameters than this config's"
    wrong = next((n for n, v in theirs.items()
                  if not torch.is_tensor(v) or tuple(v.shape) != shapes[n]), None)
    if wrong is not None:
        return f"its {wrong} is not of shape {shapes[wrong]}"
    names = stacked.optimizer_names(model, pack.optimizer)
    for i, per_param in state["optimizer"].get("state", {}).items():
        if not (isinstance(i, int) and 0 <= i < len(names)):
            return "its optimizer state is of other parameters"
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.dim() and tuple(value.shape) != shapes[names[i]]:
                return f"its optimizer's {key} of {names[i]} is not of shape {shapes[names[i]]}"
    return _optimizer_problem(pack, state) or _progress_problem(pack, state)


def _optimizer_problem(pack: Pack, state: dict) -> str | None:
    """Why a checkpoint's optimizer, schedule or scaler cannot be this pack's (None if they
    can): parameter groups of other parameters, hyperparameters that are not numbers, a
    schedule of another shape."""
    ours = pack.optimizer.state_dict()["param_groups"]
    groups = state["optimizer"]["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(ours) or any(
            not isinstance(g, dict) or list(g.get("params", [])) != list(o["params"])
            for g, o in zip(groups, ours)):
        return "its optimizer's parameter groups are not this model's"
    for g in groups:
        numbers = [g.get(k) for k in ("lr", "eps", "weight_decay")] + list(g.get("betas", ()))
        if len(numbers) != 5 or not all(_number(x) for x in numbers):
            return "its optimizer's settings are not numbers"
    for per_param in state["optimizer"]["state"].values():
        if not isinstance(per_param, dict) or not set(per_param) <= {"step", "exp_avg",
                                                                    "exp_avg_sq"}:
            return "its optimizer state is not AdamW's"
    schedule = state["scheduler"]
    if not (isinstance(schedule, dict) and isinstance(schedule.get("last_epoch"), int)
            and isinstance(schedule.get("base_lrs"), list)
            and len(schedule["base_lrs"]) == len(ours)
            and all(_number(x) for x in schedule["base_lrs"])
            and isinstance(schedule.get("lr_lambdas", []), list)
            and all(f is None or isinstance(f, dict) for f in schedule.get("lr_lambdas", []))):
        return "its schedule is not this run's"
    if state.get("scaler") is not None and not isinstance(state["scaler"], dict):
        return "its loss scale is not a scaler's state"
    return None


def _progress_problem(pack: Pack, state: dict) -> str | None:
    if not _number(state["wall_time_s"]) or state["wall_time_s"] < 0:
        return f"its wall time {state['wall_time_s']!r} is not a number of seconds"
    return None


def _number(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)) or (
        torch.is_tensor(x) and x.numel() == 1 and bool(torch.isfinite(x).all()))


def _load(pack: Pack, states: list[dict]) -> None:
    """The cells' checkpointed model, optimizer and schedule states into the pack."""
    model = pack.accelerator.unwrap_model(pack.model)
    if pack.k == 1:
        model.load_state_dict(states[0]["model"])
        pack.optimizer.load_state_dict(states[0]["optimizer"])
    else:
        stacked.load_cell_states(model, pack.optimizer,
                                 [(s["model"], s["optimizer"]) for s in states], pack.stacked)
    pack.scheduler.load_state_dict(states[0]["scheduler"])
    if pack.accelerator.scaler is not None and states[0].get("scaler"):
        pack.accelerator.scaler.load_state_dict(states[0]["scaler"])


