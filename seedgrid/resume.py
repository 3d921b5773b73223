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
from seedgrid.checkpoint import Progress, rng_state
from seedgrid.engine import Pack, Run


def resume_cells(pack: Pack, checkpointers: list, say, started: float) -> list[Run]:
    """Each cell's progress: fresh, or its checkpoint's (model, optimizer and schedule
    restored); each checkpointer bound to its cell's state."""
    runs = []
    for k, ((wi, do), checkpointer) in enumerate(zip(pack.cells, checkpointers)):
        progress = Progress(
            logits=np.full((len(pack.eval_at), len(pack.val), pack.task.num_labels), np.nan,
                           np.float32),
            train_loss=np.full(pack.total_updates, np.nan, np.float32), rng=rng_state(),
            started=started)
        runs.append(Run(wi, do, progress, checkpointer))
    saved = [None if c is None else c.load() for c in checkpointers]
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
        _load(pack, [s if s is not None else pack.state(k) for k, s in enumerate(saved)])
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


def _state_problem(pack: Pack, run: Run, state: dict) -> str | None:
    if (state["config_hash"], state["seed_wi"], state["seed_do"]) != (
            pack.cfg.hash, run.seed_wi, run.seed_do):
        return "it is of another config or cell"
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
    return None


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


