"""seedgrid's folders, and what it removes or moves in them: only what it can prove it wrote.

Folders are made writable by their owner only (a run folder others cannot write to is one whose
pickles nobody else can swap) and walked one at a time from the folder the user named, never
through a link (:func:`folder_fd`).

The one rule for every deletion and every move seedgrid makes (a stale report file, a
checkpoint, a marker, a temporary, a damaged record set aside): the file is a regular file (a
link is never removed, moved over, or followed), reached from the folder the user named through
real folders only (a link planted inside a run or report folder stops it), owned by this user,
and — where seedgrid recorded what it wrote (a report's manifest) — holding exactly that
content. What fails the proof stays where it is, with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

from seedgrid.errors import UsageError
from seedgrid.log import clean_text, logger


def kind_of(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode)
            or stat.S_ISBLK(mode) else "not a regular file")


def temporary_prefix(path: Path) -> str:
    """``.<name>.<host>.<pid>.``: a temporary file's prefix (a random part follows), naming who
    made it, so that a later write can tell a killed writer's file from a live one's."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    return f".{path.name}.{host}.{os.getpid()}."


def set_aside(path: Path, root: Path | None = None) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (kept for a look, out of every glob; a name
    already taken gets a number: ``.damaged.2``...). Never replaces anything, and never moves
    through a link below ``root`` (default: the file's folder; see :func:`folder_fd`)."""
    fd = folder_fd(path.parent, root)
    try:
        aside = _aside_name(fd, path.name)
        os.rename(path.name, aside, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    return path.with_name(aside)


def aside_said(path: Path, root: Path | None = None) -> str:
    """:func:`set_aside` ``path``, saying what became of it: "moved to <name>.damaged", or —
    where this user may not move it (a teammate's read-only run folder) — that it was left
    where it is. Never raises: reading on is what the caller does next."""
    try:
        return f"moved to {set_aside(path, root).name}"
    except (OSError, UsageError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return f"left where it is ({why}: not yours to move) and read as if absent"


def keep_aside(path: Path, data: bytes) -> Path:
    """Keep ``data`` (what ``path`` held before seedgrid rewrites it) as ``<name>.damaged``,
    at the first free name as :func:`set_aside` (made exclusively: nothing is replaced)."""
    fd = folder_fd(path.parent)
    try:
        while True:
            aside = _aside_name(fd, path.name)
            try:
                out = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                              0o666, dir_fd=fd)
                break
            except FileExistsError:  # taken meanwhile: the next number
                continue
        with os.fdopen(out, "wb") as f:
            f.write(data)
    finally:
        os.close(fd)
    return path.with_name(aside)


def _aside_name(fd: int, name: str) -> str:
    """The first of ``<name>.damaged``, ``<name>.damaged.2``, ... free in the folder ``fd``."""
    aside, n = name + ".damaged", 1
    while True:
        try:
            os.stat(aside, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return aside
        n += 1
        aside = f"{name}.damaged.{n}"


def make_folder(path: Path) -> Path:
    """Make ``path`` and the folders above it that are missing, each writable by its owner
    only (``0755`` less the umask, whatever the umask says of the group): a run folder others
    cannot write to is one whose pickles nobody else can swap (:func:`check_private`)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent submit
            os.mkdir(folder, 0o755)
    return missing[0] if missing else path


def folder_fd(folder: Path, root: Path | None = None, make: bool = False,
              fix: str = "move it away") -> int:
    """An open descriptor of ``folder``, reached from ``root`` (default ``folder`` itself;
    ``root`` is opened as named: it may be a link the user made) one folder at a time, never
    through a link; with ``make``, missing folders are made on the way. UsageError when a link
    or a file is in the way, naming it."""
    root = folder if root is None else root
    if make:
        make_folder(Path(root))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    here = Path(root)
    try:
        for part in Path(os.path.relpath(folder, root)).parts if folder != root else ():
            here = here / part
            if part in (os.curdir, os.pardir):
                raise OSError(errno.EINVAL, "leaves the folder")
            if make:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)  # (as make_folder)
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = step
    except OSError as e:
        os.close(fd)
        if isinstance(e, FileNotFoundError):
            raise
        raise UsageError(f"{str(here)!r} is in the way ({_what(here, e)}): seedgrid neither "
                         f"writes nor removes anything through it; {fix}") from None
    return fd


def _what(path: Path, error: OSError) -> str:
    """What stands at ``path``, which could not be opened as a folder (``error``)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return error.strerror or str(error)
    return ("a symbolic link, not a folder seedgrid made" if stat.S_ISLNK(mode) else
            "a file, not a folder" if stat.S_ISREG(mode) else
            f"{kind_of(mode)}, not a folder" if not stat.S_ISDIR(mode) else
            error.strerror or str(error))


def digest(path: str | Path) -> str:
    """SHA-256 of the regular file ``path`` (never through a link), hex."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return hashlib.file_digest(f, "sha256").hexdigest()


def provably_own(path: Path, root: Path | None = None, digests=None) -> bool:
    """Whether ``path`` is a file seedgrid can prove it wrote (the rule above): a regular file
    of this user, reached from ``root`` through real folders, of one of ``digests`` if given."""
    try:
        fd = folder_fd(path.parent, root)
    except (OSError, UsageError):
        return False
    try:
        st = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return False
        if digests is None:
            return True
        with os.fdopen(os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest() in digests
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_own(path: Path, root: Path | None = None, digests=None) -> bool:
    """Remove ``path`` if it is provably seedgrid's (:func:`provably_own`); True when removed.
    Nothing there is not a problem; anything else there stays, with one warning."""
    if not os.path.lexists(path):
        return False
    if not provably_own(path, root, digests):
        logger.warning(f"left {clean_text(str(path))} in place: not a file seedgrid can "
                       "prove it wrote (a link, another's file, changed since, or under a link)")
        return False
    fd = folder_fd(path.parent, root)
    try:
        os.unlink(path.name, dir_fd=fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale_temporaries(path: Path, max_age_s: float = 7 * 86400,
                             now: float | None = None) -> None:
    """Remove the temporary files and folders that writes of ``path`` killed mid-way left
    behind (``.<name>.<host>.<pid>.<random>.tmp``; a BERT-large checkpoint's is 4 GB): those of
    a process of this host that no longer runs, and any older than ``max_age_s`` (a host that
    is gone) by the clock of the file server (``now``: the time stamp it gave a file just
    made; a probe file otherwise), whatever this host's clock says. Only this user's regular
    files and folders; a link is left alone."""
    me, host = os.getuid(), re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    found = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    if found and now is None:
        now = _server_time(path)
    for tmp in found:
        parts = tmp.name[len(path.name) + 2:].split(".")
        try:
            st = os.lstat(tmp)
        except OSError:
            continue
        if st.st_uid != me or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue
        here = len(parts) >= 3 and parts[0] == host and parts[1].isdigit()
        dead = here and not _alive(int(parts[1]))
        if not (dead or (now or 0) - st.st_mtime > max_age_s or not here and len(parts) < 3):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(tmp)  # (rmtree never follows a link inside)
            else:
                tmp.unlink()


def _server_time(path: Path) -> float:
    """The file server's clock: the time stamp of a probe file made beside ``path`` (as one of
    its temporaries; this host's clock where nothing can be made there)."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path),
                                    suffix=".tmp")
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


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
