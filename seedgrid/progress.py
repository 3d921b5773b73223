"""Progress people can watch, on stderr (results stay on stdout): ``--wait``'s counts of cells
and tasks with the time left, and the periodic lines of long ``collect`` and ``report`` runs.
On a terminal a line is rewritten in place; in a log file a line comes at most every 30 s
(through the ``seedgrid`` logger at INFO: ``-q`` hides them)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

from seedgrid.log import logger
from seedgrid.rundir import LOGS


class Progress:
    """What --wait shows on stderr while a grid trains: on a terminal, one line rewritten in
    place; in a log file, a line when the counts change, at most every ``every_s`` seconds, and
    the last one. With the cells that have shards (and how many diverged), the array tasks that
    ended, and an estimate of the time left from the rate so far."""

    def __init__(self, cells: int, tasks: int, run_dir: Path, every_s: float = 30.0,
                 stream=None):
        self.cells, self.tasks, self.run_dir, self.every_s = cells, tasks, run_dir, every_s
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() and logger.isEnabledFor(logging.INFO)
        self.started = time.time()
        self.last_time = -every_s
        self.counts: tuple | None = None

    def line(self, done: int, diverged: int, ended: int, elapsed: float) -> str:
        parts = [f"{done}/{self.cells} cells have shards"
                 + (f" ({diverged} diverged)" if diverged else ""),
                 f"{ended}/{self.tasks} tasks ended"]
        if 0 < done < self.cells:
            parts.append(f"about {_duration(elapsed / done * (self.cells - done))} left")
        return f"  [{elapsed:4.0f} s] " + ", ".join(parts) + f" (logs: {self.run_dir / LOGS})"

    def show(self, done: int, diverged: int, ended: int, final: bool = False) -> None:
        now = time.time()
        changed = (done, diverged, ended) != self.counts
        self.counts = (done, diverged, ended)
        line = self.line(done, diverged, ended, now - self.started)
        if self.live:  # cut to the terminal's width: a wrapped line is not rewritten in place
            width = shutil.get_terminal_size().columns - 1
            shown = line if len(line) <= width or final else line[:max(width - 1, 0)] + "…"
            self.stream.write("\r\033[K" + shown + ("\n" if final else ""))
            self.stream.flush()
        elif final or (changed and now - self.last_time >= self.every_s):
            logger.info(line)
            self.last_time = now


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Ticker:
    """``collect``/``report``: a line on stderr at most every ``every_s`` seconds while ``what``
    goes through ``total`` items (none for work that ends sooner)."""

    def __init__(self, what: str, total: int, every_s: float = 30.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.started = self.last = time.time()

    def tick(self, done: int, item: str = "") -> None:
        now = time.time()
        if now - self.last >= self.every_s:
            elapsed = now - self.started
            left = f", about {_duration(elapsed / done * (self.total - done))} left" if done else ""
            logger.info(f"{self.what}: {done}/{self.total}{' ' + item if item else ''} "
                        f"after {elapsed:.0f} s{left}")
            self.last = now
