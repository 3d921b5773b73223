"""The one exception type for bad input.

Anything the user can fix (a config value, a path, a seed) raises :class:`UsageError` with one
line that names the bad value and the fix; the CLI prints it and exits with status 2. Raise it
before anything is written.
"""


class UsageError(ValueError):
    """Bad input: one line naming the value and the fix. The CLI exits with status 2. A
    ValueError, so library users catch it as they catch any bad argument."""


class Interrupted(Exception):
    """Waiting was interrupted (Ctrl-C, SIGTERM): the message says what keeps running. The CLI
    prints it and exits with status 130."""


def shown(value) -> str:
    """``repr`` of a value read from a user's data, as they wrote it: ``5``, ``'bug'`` (not
    numpy's ``np.int64(5)``)."""
    return repr(value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value)
