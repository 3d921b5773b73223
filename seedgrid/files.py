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
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from seedgrid.errors import UsageError
from seedgrid.folders import (aside_said, digest, folder_fd, kind_of, provably_own,
                              remove_own, remove_stale_temporaries, temporary_prefix)
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
def atomic_path(path: str | Path, *, through_link: bool = False, mode: int | None = None,
                root: str | Path | None = None) -> Iterator[Path]:
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
    killed are removed first (:func:`remove_stale_temporaries`). ``mode``: the file's
    permissions (default: as a plain ``open()`` makes it under the umask). ``root``: the run
    folder a file of its own folders (``shards/``, ``checkpoints/``...) is written in: those
    folders are made if missing and must be real folders, never links (:func:`folder_fd`)."""
    target = write_target(Path(path), through_link)
    if root is not None:
        os.close(folder_fd(target.parent, Path(root), make=True))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=temporary_prefix(target),
                                suffix=".tmp")
    tmp, made = Path(name), os.fstat(fd)
    remove_stale_temporaries(target, now=made.st_mtime)  # (the file server's clock)
    try:
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)  # (not mkstemp's 0600)
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
    raise UsageError(f"{str(path)!r} is {kind_of(st.st_mode)}, not a file seedgrid writes: "
                     "remove it or choose another place")


def temporary_folder(path: Path) -> Path:
    """A new private folder beside ``path`` (random name, mode 0700) to build ``path``'s
    content in before it is moved into place; those of killed writers are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp"))
    remove_stale_temporaries(path, now=os.stat(made).st_mtime)  # (the file server's clock)
    return made


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


def write_text_atomic(path: str | Path, text: str, through_link: bool = False,
                      mode: int | None = None, root: str | Path | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, through_link=through_link, mode=mode, root=root) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, value, through_link: bool = False,
                      mode: int | None = None) -> Path:
    """Write ``value`` as JSON (see :func:`json_ready`) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(json_ready(value), indent=1, allow_nan=False),
                             through_link, mode)


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
    logger.warning(f"{path} was damaged ({error}); {aside_said(path)}")
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
            raise OSError(errno.EINVAL, f"{kind_of(st.st_mode)}, not a regular file")
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
            raise OSError(errno.EINVAL, f"{kind_of(st.st_mode)}, not a regular file")
        start = max(0, st.st_size - size)
        f.seek(start)
        data = f.read(size)
        if start:  # from the first whole line
            data = data[data.find(b"\n") + 1:]
        return data.decode("utf-8", errors="replace")


def publish(tmp: Path, out: Path, manifest: str, ours_by_name: bool = False) -> None:
    """Move the files made in the folder ``tmp`` into the folder ``out``, each by an atomic
    rename, recorded with their digests in ``out/manifest``. A file replaces only what an
    earlier publish provably wrote there (:func:`provably_own`, against the manifest's
    digests — a manifest this user wrote, others cannot write: a claim checked, never a list
    obeyed) or, in a folder that is seedgrid's by name (``ours_by_name``: a run's own
    ``report/``), a file of the same name. Anything else in the way is refused before anything
    moves (one line); earlier files not published again are removed when provably seedgrid's;
    nothing else in ``out`` is touched, no folder is removed, no link followed. The manifest
    names the new files before they move: a publish killed half-way is finished by the next."""
    new = {str(p.relative_to(tmp)): digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    old = _manifest(out / manifest)
    write_target(out / manifest)  # (refuses a folder or FIFO in its place, before any move)
    for name in new:
        target = out / name
        try:
            os.close(folder_fd(target.parent, out, fix="move it away, or choose another --out"))
        except FileNotFoundError:
            continue  # (its folder is made when it moves)
        if os.path.isdir(target) and not target.is_symlink() or os.path.lexists(target) and \
                not (ours_by_name or provably_own(target, out, old.get(name, ()))):
            raise UsageError(f"{str(target)!r} is not a file an earlier report wrote there: "
                             "move it away, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    intent = {**old, **{n: sorted({*old.get(n, ()), d}) for n, d in new.items()}}
    write_json_atomic(out / manifest, {"seedgrid_report_files": intent}, mode=0o644)
    for name in sorted(new, key=lambda n: n.startswith("report.")):  # report.md last
        fd = folder_fd((out / name).parent, out, make=True)
        try:  # (a link there is replaced, never followed)
            os.replace(tmp / name, Path(name).name, dst_dir_fd=fd)
        finally:
            os.close(fd)
    for name in sorted(set(old) - set(new)):  # an earlier report's figures, gone from this one
        remove_own(out / name, out, old[name])
    write_json_atomic(out / manifest, {"seedgrid_report_files": {n: [d] for n, d in new.items()}},
                      mode=0o644)


def _manifest(path: Path) -> dict[str, list[str]]:
    """What an earlier :func:`publish` wrote beside ``path`` (name -> digests), if this user
    wrote ``path`` and nobody else can write it; names that would leave the folder are not
    taken. Empty otherwise."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return {}
        files = json.loads(read_regular(path))["seedgrid_report_files"]
        return {n: [d for d in ds if isinstance(d, str)] for n, ds in files.items()
                if isinstance(n, str) and n and not Path(n).is_absolute()
                and ".." not in Path(n).parts and isinstance(ds, list)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


@contextlib.contextmanager
def locked(path: str | Path, timeout_s: float = 120):
    """Hold ``<path>.lock`` for a read-modify-write of ``path``, so two writers (two submits, a
    submit and the decider job) never lose a record: an exclusive flock on a regular file
    opened without following a link (a link or folder planted there is refused, one line;
    nothing it points to is opened, let alone truncated). On NFS and Lustre the lock holds
    only where the filesystem is mounted with locking (NFS's ``lock``, not ``nolock``;
    Lustre's ``flock``, not ``localflock`` or ``noflock``); without locks, a warning."""
    import fcntl
    import time

    lock = Path(str(path) + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        raise UsageError(f"cannot open the lock file {str(lock)!r} ({e.strerror}: seedgrid "
                         "makes it a regular file): move what is there away") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"the lock file {str(lock)!r} is {kind_of(os.fstat(fd).st_mode)}, "
                             "not a regular file: move it away")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(f"{str(lock)!r} stayed locked for {timeout_s:.0f} s by "
                                     "another seedgrid (a submit, the decider job): run again "
                                     "once it has finished") from None
                time.sleep(0.1)
            except OSError as e:  # a filesystem without locks
                logger.warning(f"cannot lock {lock} ({e.strerror}): two writers at once could "
                               "lose a record")
                break
        yield
    finally:
        os.close(fd)  # (the lock goes with the descriptor; the file stays: see claim)


def check_regular(path: str | Path) -> None:
    """OSError unless ``path`` is a regular file (through a link): readers open nothing else,
    so a FIFO or device planted in a run folder cannot make them wait forever."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"{path} is {kind_of(mode)}, not a regular file")
