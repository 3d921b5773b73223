"""seedgrid's messages, and every side effect seedgrid takes on outside its own objects.

Results go to stdout (``print``). Progress, hints and warnings go through the ``seedgrid``
logger (stdlib :mod:`logging`) and, in seedgrid's own processes (the command line and the array
tasks it submits), to stderr: ``-q`` keeps warnings only, ``-qq`` errors only, ``-v`` adds
debug lines and transformers' own messages. Imported as a library, seedgrid adds no handler
(only a ``NullHandler``): the application's logging configuration decides, as for any library.

Importing seedgrid changes nothing outside it. Its own processes (:func:`configure`) also set
``HDF5_USE_FILE_LOCKING=FALSE`` unless it is set: seedgrid never has two writers on one file
(temporary name, then rename), so HDF5's file locks add nothing there but failures on shared
filesystems (NFS, Lustre: "unable to lock file"). A library user on such a filesystem sets the
variable in their own environment. Loading a model quiets transformers' warnings about newly
initialised weights for the duration of the load only (:func:`quiet_transformers`). Figures are
drawn without pyplot (no backend switch). Training a cell (``seedgrid.trainer.train_cell``) is
meant to own its process, as the array tasks do: it seeds torch's global RNG (dropout, the seed
contract) and, with ``[runtime] deterministic``, turns on torch's deterministic algorithms and
sets ``CUBLAS_WORKSPACE_CONFIG``; ``submit`` drops the ``SLURM_*`` variables of an enclosing
job from its own environment before it submits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

logger = logging.getLogger("seedgrid")
logger.addHandler(logging.NullHandler())

#: -qq, -q, (default), -v
_LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _Format(logging.Formatter):
    """Progress as it is; ``seedgrid: warning: ...`` for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        line = clean_lines(record.getMessage())
        if record.levelno >= logging.WARNING:
            return f"seedgrid: {record.levelname.lower()}: {line}"
        return line


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a message comes (pytest swaps it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_handler = _Stderr()
_handler.setFormatter(_Format())


def configure(verbosity: int = 0) -> None:
    """For seedgrid's own processes: messages at ``verbosity`` (-2 .. 1) on stderr, and HDF5
    without file locks (see the module's text)."""
    os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
    logger.setLevel(_LEVELS[max(-2, min(1, verbosity))])
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
    logger.propagate = False


@contextlib.contextmanager
def quiet_transformers():
    """transformers at error level (no "newly initialized weights" warnings: seedgrid reports
    them) and without download bars, for the duration of the block; as it was afterwards.
    Under ``-v`` transformers says what it does (INFO: which files it loads)."""
    import transformers.utils.logging as tlog

    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    if logger.isEnabledFor(logging.DEBUG):
        tlog.set_verbosity_info()
    else:
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def clean_lines(text: str) -> str:
    """:func:`clean_text` line by line: what seedgrid prints on a terminal (every message and
    error passes here, so no text read from a file reaches the terminal raw)."""
    return "\n".join(clean_text(line) for line in str(text).split("\n"))


def clean_text(text: str) -> str:
    """``text`` with control characters (terminal escapes) shown as ``\\x1b``..., for
    printing what a file of the run folder says (a log line, a host name)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
