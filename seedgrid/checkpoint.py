"""Checkpoints of a cell in training: saved on preemption or time limit, resumed on restart.

``runs/<name>/checkpoints/wi<W>_do<D>.pt`` holds everything a cell needs to go on as if it had
never stopped: model, optimizer, scheduler (and fp16 scaler) states, the update count, the
losses and logits so far — and what it trained on (the config hash, the data's fingerprints:
a resume on anything else is refused, :mod:`seedgrid.resume`). Neither the data order nor the
dropout masks need saving: they are functions of the cell's seeds, the epoch and the update
(:mod:`seedgrid.seeds`, :mod:`seedgrid.dropout`), so a resumed cell skips the global batches it
has done and draws the masks it would have. A resumed cell's shard equals the uninterrupted
one bitwise (same hardware, ``deterministic = true``).

The trainer binds a function returning its state; :meth:`Checkpointer.save` may then be called
at any moment of the main thread — from submitit's signal handler too. The trainer holds the
signals during the few statements of an optimizer update (:func:`signals_held`), so a save
always sees the state between two updates; an update in progress is redone on resume.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from seedgrid.log import logger
from seedgrid.files import atomic_path, check_regular
from seedgrid.folders import remove_own, remove_stale_temporaries, set_aside

#: submitit's preemption/timeout signal, and the termination signal SLURM sends before a kill
_HELD = {signal.SIGUSR2, signal.SIGTERM, signal.SIGINT}


class Checkpointer:
    """Save and load one cell's training state at ``path`` (atomically: temporary name, rename).

    The file holds tensors and plain Python values only, and is read with
    ``torch.load(weights_only=True)``: a planted file cannot run code. A file that cannot be
    read as a checkpoint of this shape (truncated, foreign, or planted) is set aside as
    ``<name>.damaged`` and the cell starts again, saying so — it never fails every retry.
    """

    def __init__(self, path: str | Path, log: Callable[[str], None] = print,
                 root: str | Path | None = None):
        self.path = Path(path)
        #: the run folder: nothing is removed or set aside through a link below it
        self.root = Path(root) if root is not None else self.path.parent
        self._state: Callable[[], dict] | None = None
        self._loaded: dict | None = None
        self._log = log

    def bind(self, state: Callable[[], dict] | None) -> None:
        """The trainer's function returning its current, consistent state (None: the cell has
        ended, and a save no longer writes anything)."""
        self._state = state

    def save(self) -> bool:
        """Write the bound state; False when training has not started (nothing to save)."""
        if self._state is None:
            return False
        # (torch reports a full disk as a RuntimeError)
        with atomic_path(self.path, root=self.root) as tmp:
            torch.save(self._state(), tmp)
        return True

    def save_if_possible(self) -> bool:
        """:meth:`save`, but a checkpoint that cannot be written (disk full, quota) only costs
        the resume point: the cell trains on, and the failure is logged."""
        try:
            return self.save()
        except (OSError, RuntimeError) as e:
            self._log(f"could not write checkpoint {self.path} ({e}); training goes on without it")
            return False

    def keep(self, state: dict | None) -> None:
        """Hold ``state`` (as loaded) for the next :meth:`load`, instead of reading the file
        again."""
        self._loaded = state

    def update(self) -> int:
        """The update the checkpoint resumes at (0 without one): cells of a pack train in
        step, so a task packs cells that resume at the same update. The state stays loaded for
        :meth:`load`."""
        self._loaded = self.load()
        return 0 if self._loaded is None else int(self._loaded["update"])

    def load(self) -> dict | None:
        """The saved state, or None when there is none or it is damaged (then set aside)."""
        if self._loaded is not None:
            state, self._loaded = self._loaded, None
            return state
        remove_stale_temporaries(self.path)
        if not self.path.exists():
            return None
        try:
            check_regular(self.path)  # (a FIFO would block torch.load)
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            missing = [k for k in _KEYS if not isinstance(state, dict) or k not in state]
            if missing:
                raise ValueError(f"no {missing[0]!r} in it")
        except Exception as e:  # unpickling refused, truncated, not a dict: all mean damaged
            aside = set_aside(self.path, self.root)
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            self._log(f"checkpoint {self.path} is damaged ({type(e).__name__}: {reason}): moved "
                      f"to {aside.name}; the cell starts from the beginning")
            return None
        return state

    def reject(self, why: str) -> None:
        """Set the checkpoint aside (``<name>.damaged``) because it cannot be this cell's state
        (``why``), saying so: the cell starts from the beginning instead of failing every
        retry."""
        self._loaded = None
        if self.path.exists():
            aside = set_aside(self.path, self.root)
            self._log(f"checkpoint {self.path} cannot be resumed ({why}): moved to "
                      f"{aside.name}; the cell starts from the beginning")

    def remove(self) -> None:
        remove_own(self.path, self.root)
        remove_stale_temporaries(self.path)


@dataclass
class Progress:
    """What changes in a cell between updates, besides the model and optimizer: the one
    object the training loop advances, a checkpoint saves and a resume restores."""

    #: (evaluation, example, class); NaN until evaluated
    logits: np.ndarray
    #: (update,): mean training loss of each update; NaN until done
    train_loss: np.ndarray
    update: int = 0
    #: evaluations written into ``logits``
    evaluated: int = 0
    #: seconds spent training before this process took the cell over
    spent_before: float = 0.0
    #: when this process took the cell over (time.time())
    started: float = field(default_factory=time.time)

    def wall_time_s(self) -> float:
        return self.spent_before + time.time() - self.started

    def state(self) -> dict:
        """The checkpoint's share of the progress (tensors, not numpy arrays: the file loads
        with weights_only=True)."""
        return {"update": self.update, "evaluated": self.evaluated,
                "logits": torch.from_numpy(self.logits.copy()),
                "train_loss": torch.from_numpy(self.train_loss.copy()),
                "wall_time_s": self.wall_time_s()}

    def restore(self, saved: dict) -> None:
        """Take over the progress of a checkpoint's state. (No RNG state: a cell's dropout masks
        are a function of its seeds and the update, seedgrid.dropout, and nothing else of its
        training draws from torch's generators.)"""
        self.logits, self.train_loss = saved["logits"].numpy(), saved["train_loss"].numpy()
        self.update, self.evaluated = saved["update"], saved["evaluated"]
        self.spent_before = float(saved["wall_time_s"])


#: what a checkpoint must hold to resume a cell (seedgrid.trainer writes these)
_KEYS = ("seed_wi", "seed_do", "config_hash", "model", "optimizer", "scheduler", "update",
         "evaluated", "logits", "train_loss", "wall_time_s")


@contextlib.contextmanager
def saved_on_terminate(*checkpointers: Checkpointer | None):
    """While the block runs, SIGTERM (scancel, a kill, SLURM's warning before SIGKILL) and
    SIGINT (Ctrl-C) save the checkpoint of each cell still training (a pack's: every one),
    then end the process (exit status 128 + the signal): the rerun resumes there instead of
    losing everything since the last periodic checkpoint."""
    ours = [c for c in checkpointers if c is not None]
    if not ours or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        saved = [str(c.path) for c in ours if c.save_if_possible()]
        said = f"saved {', '.join(saved)}" if saved else "nothing to save"
        logger.warning(f"{signal.Signals(signum).name}: {said}; ending")
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held():
    """Defer SIGUSR2 and SIGTERM until the block ends; their handlers then run once each.

    Blocking them with ``pthread_sigmask`` is not enough: it holds only the calling thread, and a
    signal sent to the process (scancel) reaches any other thread (torch's pools), after which
    Python runs the handler in the main thread at its next bytecode — inside the block. So the
    Python-level handlers are swapped for one that only notes the signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers belong to the main thread; nothing to defer elsewhere
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in _HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(caught):  # each signal once, in arrival order
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # the default action (e.g. terminate), now
