"""Files in a run folder, written and read safely: the one atomic writer (a temporary name,
fsync, rename) that never follows a planted link nor replaces what seedgrid did not make;
bounded reads of regular files only (a FIFO or a huge file never blocks a command); records set
aside when damaged; the temporaries a killed write left; locks; a full disk said as such.

A run folder may sit on a shared filesystem: nothing read from it executes, and what a file
says is checked by its reader.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from seedgrid.errors import UsageError
from seedgrid.log import logger


class DiskFullError(OSError):
    """No space left where seedgrid writes: named as such, with the folder and the fix."""



def raise_if_disk_full(error: BaseException, path: Path) -> None:
    """Re-raise a failed write as :class:`DiskFullError` when the disk (or quota) is full —
    netCDF's own message is only "HDF error"."""
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        full = full or shutil.disk_usage(Path(path).parent).free < 1 << 20
    except OSError:
        pass
    if full:
        raise DiskFullError(errno.ENOSPC, f"no space left on the device of {Path(path).parent} "
                            f"while writing {Path(path).name}: free space (or raise the quota) "
                            "and run again; nothing finished was lost") from error



@contextlib.contextmanager
def atomic_path(path: str | Path, *, through_link: bool = False) -> Iterator[Path]:
    """The one way seedgrid writes a file: yield a new temporary file beside ``path`` to write;
    when the block ends well, fsync it and rename it over ``path`` (atomic: a reader sees the
    old file or the new one, never half of one). On any error the temporary file is removed,
    and a full disk says so (:class:`DiskFullError`).

    A write replaces only what is its own (:func:`write_target`): a folder, FIFO, device or
    socket at ``path`` is refused (UsageError), and a symbolic link there is replaced, never
    followed — unless ``through_link`` (a file the user named: ``--json``, ``--to``,
    ``--history``), where the link stays and its target, a regular file, is rewritten. The
    temporary file is made exclusively (``O_EXCL | O_NOFOLLOW``) under a random name, and is
    still the file seedgrid made when it is renamed; temporaries of earlier writes that were
    killed are removed first (:func:`remove_stale_temporaries`)."""
    target = write_target(Path(path), through_link)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_temporary_prefix(target),
                                suffix=".tmp")
    tmp, made = Path(name), os.fstat(fd)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as a plain open() would make it, not mkstemp's 0600
        yield tmp
        _still_ours(tmp, made)
        os.fsync(fd)  # the inode's data, whichever descriptor the writer used
        os.replace(tmp, target)
    except (OSError, RuntimeError) as e:  # netCDF's HDF errors are RuntimeErrors
        raise_if_disk_full(e, target)
        raise
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            if _same_file(os.lstat(tmp), made):
                tmp.unlink()



def write_target(path: Path, through_link: bool = False) -> Path:
    """Where a write of ``path`` lands: ``path`` itself (nothing there, a regular file, or a
    symbolic link that the write replaces), or with ``through_link`` the regular file a link
    points to. UsageError for anything else there, naming it and the fix."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # (a file above it: said where it is made)
        return path
    except OSError as e:  # a loop among the folders above it
        raise UsageError(f"cannot write {str(path)!r} ({e.strerror}): choose another "
                         "place") from None
    if stat.S_ISLNK(st.st_mode) and through_link:
        try:
            real = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:  # a link to a file not made yet: write it there
            real = Path(os.path.realpath(path))
            if not real.parent.is_dir():
                raise UsageError(f"{str(path)!r} is a symbolic link to {str(real)!r}, whose "
                                 "folder does not exist: fix the link or choose another "
                                 "place") from None
            return real
        except OSError as e:
            raise UsageError(f"{str(path)!r} is a symbolic link that cannot be followed "
                             f"({e.strerror}): fix the link or choose another place") from None
        return write_target(real)
    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return path
    raise UsageError(f"{str(path)!r} is {_kind(st.st_mode)}, not a file seedgrid writes: "
                     "remove it or choose another place")



def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode)
            or stat.S_ISBLK(mode) else "not a regular file")



def temporary_folder(path: Path) -> Path:
    """A new private folder beside ``path`` (random name, mode 0700) to build ``path``'s
    content in before it is moved into place; those of killed writers are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp"))



def _temporary_prefix(path: Path) -> str:
    """``.<name>.<host>.<pid>.``: a temporary file's prefix (a random part follows), naming who
    made it, so that a later write can tell a killed writer's file from a live one's."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    return f".{path.name}.{host}.{os.getpid()}."



def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and stat.S_ISREG(a.st_mode)



def _still_ours(tmp: Path, made: os.stat_result) -> None:
    """The temporary file is still the one made for this write (not swapped for a link)."""
    try:
        same = _same_file(os.lstat(tmp), made)
    except FileNotFoundError:
        same = False
    if not same:
        raise UsageError(f"the temporary file {str(tmp)!r} was replaced by someone else while "
                         "seedgrid wrote it: nothing was written; check who else writes to "
                         f"{str(tmp.parent)!r}")



def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask



def write_text_atomic(path: str | Path, text: str, through_link: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, through_link=through_link) as tmp:
        tmp.write_text(text)
    return Path(path)



def write_json_atomic(path: str | Path, value, through_link: bool = False) -> Path:
    """Write ``value`` as JSON (see :func:`json_ready`) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(json_ready(value), indent=1, allow_nan=False),
                             through_link)



def json_ready(value):
    """JSON-ready: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value



def read_json(path: str | Path, default):
    """A JSON file seedgrid wrote, or ``default`` when there is none. A damaged one (cut short,
    edited by hand, not a regular file, too large) is set aside as ``<name>.damaged`` and
    ``default`` returned: a command says so on stderr and goes on, never dies or hangs on it."""
    path = Path(path)
    error: Exception
    try:
        return json.loads(read_regular(path).decode("utf-8", errors="replace"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        error = e
    logger.warning(f"{path} was damaged ({error}); moved to {set_aside(path).name}")
    return default


#: the most a record seedgrid reads whole (jobs.json, early_stop.json, a marker) may hold
RECORD_LIMIT = 64 << 20



def read_regular(path: str | Path, limit: int = RECORD_LIMIT) -> bytes:
    """The bytes of the regular file ``path`` (through a link), at most ``limit``: a FIFO, a
    device or a folder there raises OSError at once instead of blocking, and so does a file
    larger than ``limit``. FileNotFoundError when there is nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without a writer
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than the {limit} expected")
        return f.read(limit + 1)[:limit]



def read_tail(path: str | Path, size: int = 64 << 10) -> str:
    """The whole lines in the last ``size`` bytes of the regular file ``path`` (a log): bounded in time and
    memory whatever the file holds. FileNotFoundError when there is nothing, OSError when it
    is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file")
        start = max(0, st.st_size - size)
        f.seek(start)
        data = f.read(size)
        if start:  # from the first whole line
            data = data[data.find(b"\n") + 1:]
        return data.decode("utf-8", errors="replace")



def clean_text(text: str) -> str:
    """``text`` with control characters (terminal escapes) shown as ``\\x1b``..., for
    printing what a file of the run folder says (a log line, a host name)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)



def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (kept for a look, out of every glob; a name
    already taken gets a number: ``.damaged.2``...). Never replaces anything."""
    aside, n = path.with_name(path.name + ".damaged"), 1
    while os.path.lexists(aside):
        n += 1
        aside = path.with_name(f"{path.name}.damaged.{n}")
    os.rename(path, aside)
    return aside



def remove_stale_temporaries(path: Path, max_age_s: float = 7 * 86400) -> None:
    """Remove the temporary files and folders that writes of ``path`` killed mid-way left
    behind (``.<name>.<host>.<pid>.<random>.tmp``; a BERT-large checkpoint's is 4 GB): those of
    a process of this host that no longer runs, and any older than ``max_age_s`` (a host that
    is gone). Only regular files and folders its user made; a link is removed, never followed."""
    now, me = time.time(), os.getuid()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        try:
            st = os.lstat(tmp)
        except OSError:
            continue
        if st.st_uid not in (me, 0) and me != 0:
            continue
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
        here = len(parts) >= 3 and parts[0] == host and parts[1].isdigit()
        dead = here and not _alive(int(parts[1]))
        if not (dead or now - st.st_mtime > max_age_s or not here and len(parts) < 3):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(tmp)  # (rmtree never follows a link inside)
            else:
                tmp.unlink()



def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True



@contextlib.contextmanager
def locked(path: str | Path):
    """Hold ``<path>.lock`` (filelock: works on NFS and Lustre) for a read-modify-write of
    ``path``, so two writers (two submits, a submit and the decider job) never lose a record."""
    import filelock

    with filelock.FileLock(str(path) + ".lock", timeout=120):
        yield



def check_regular(path: str | Path) -> None:
    """OSError unless ``path`` is a regular file (through a link): readers open nothing else,
    so a FIFO or device planted in a run folder cannot make them wait forever."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"{path} is {_kind(mode)}, not a regular file")
