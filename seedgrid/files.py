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
import hashlib
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
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_temporary_prefix(target),
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
    made = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp"))
    remove_stale_temporaries(path, now=os.stat(made).st_mtime)  # (the file server's clock)
    return made



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


# --- what seedgrid removes: only what it can prove it wrote --------------------------------
#
# The one rule for every deletion and every move seedgrid makes (a stale report file, a
# checkpoint, a marker, a temporary, a damaged record set aside): the file is a regular file
# (a link is never removed, moved over, or followed), reached from the folder the user named
# through real folders only (a link planted inside a run or report folder stops it), owned by
# this user, and — where seedgrid recorded what it wrote (a report's manifest) — holding
# exactly that content. What fails the proof stays where it is, with one warning.


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
            f"{_kind(mode)}, not a folder" if not stat.S_ISDIR(mode) else
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


def _server_time(path: Path) -> float:
    """The file server's clock: the time stamp of a probe file made beside ``path`` (as one of
    its temporaries; this host's clock where nothing can be made there)."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path),
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
