"""Checkpoints of a cell in training: saved on preemption or time limit, resumed on restart.

``runs/<name>/checkpoints/wi<W>_do<D>.pt`` holds everything a cell needs to go on as if it had
never stopped: model, optimizer, scheduler (and fp16 scaler) states, the update count, the
dropout RNG state after that update, the losses and logits so far. The data order needs no
saving: it is a function of (seed_do, epoch) (:mod:`seedgrid.seeds`), so a resumed cell skips
the global batches it has done. A resumed cell's shard equals the uninterrupted one bitwise
(same hardware, ``deterministic = true``; with several processes, only rank 0's dropout stream
is saved, so multi-process resumes are not bitwise).

The trainer binds a function returning its state; :meth:`Checkpointer.save` may then be called
at any moment of the main thread — from submitit's signal handler too. The trainer holds the
signals during the few statements of an optimizer update (:func:`signals_held`), so a save
always sees the state between two updates; an update in progress is redone on resume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Callable

import torch

#: submitit's preemption/timeout signal, and the termination signal SLURM sends before a kill
_HELD = {signal.SIGUSR2, signal.SIGTERM}


def checkpoint_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"wi{seed_wi}_do{seed_do}.pt"


class Checkpointer:
    """Save and load one cell's training state at ``path`` (atomically: temporary name, rename)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._state: Callable[[], dict] | None = None

    def bind(self, state: Callable[[], dict]) -> None:
        """The trainer's function returning its current, consistent state."""
        self._state = state

    def save(self) -> bool:
        """Write the bound state; False when training has not started (nothing to save)."""
        if self._state is None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save(self._state(), tmp)
        os.replace(tmp, self.path)
        return True

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)  # our own file

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state() -> dict:
    """torch's global RNG (dropout) on the CPU and every GPU."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
