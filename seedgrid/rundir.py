"""The run folder ``runs/<name>/``: every path in it is formatted and parsed here, and only here.

    runs/<name>/
      config.toml                  the frozen config (its hash names what the folder holds)
      shards/wi<W>_do<D>.nc        one per finished cell (the truth: a cell is done by its shard)
      checkpoints/wi<W>_do<D>.pt   a cell in training (removed when its shard is written)
      running/wi<W>_do<D>.json     a cell in training (pid, host, GPUs, start)
      running/wi<W>_do<D>.lock     its claim: locked while a process trains it (one trainer)
      jobs.json                    every submission: array job ids, each task's cells
      early_stop.json              the --early-stop plan and its decision
      logs/                        submitit's folder: <job id>_<rank>_log.{out,err}, pickles
      weights/wi<W>_do<D>/         [output] keep_weights: a cell's final save_pretrained folder
      cube.nc, report/             what collect and report write

A folder belongs to one config (by hash): cells of another config are refused, never mixed in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import stat
import sys
import tempfile
import time
from pathlib import Path

from seedgrid.config import Config, config_from_toml, load_config, with_seeds
from seedgrid.errors import UsageError
from seedgrid.log import clean_text, logger
from seedgrid.files import check_regular, read_json, write_target, write_text_atomic
from seedgrid.folders import aside_said, folder_fd, make_folder
from seedgrid.store import shard_state

CONFIG = "config.toml"
JOBS = "jobs.json"
EARLY_STOP = "early_stop.json"
CUBE = "cube.nc"
REPORT = "report"
LOGS = "logs"
SHARDS = "shards"
CHECKPOINTS = "checkpoints"
RUNNING = "running"

Cell = tuple[int, int]

#: a cell's file name stem, and nothing else: ``wi3_do12`` (not ``wi3_do12.bak``)
_CELL_NAME = re.compile(r"wi(\d+)_do(\d+)")


def cell_name(seed_wi: int, seed_do: int) -> str:
    return f"wi{seed_wi}_do{seed_do}"


def cell_of(path: str | Path, suffix: str) -> Cell | None:
    """The cell a file of the run folder belongs to (``wi3_do12.nc`` -> (3, 12)); None when its
    name is not exactly a cell's name with ``suffix``."""
    name = Path(path).name
    match = _CELL_NAME.fullmatch(name[:len(name) - len(suffix)]) if name.endswith(suffix) \
        else None
    return (int(match[1]), int(match[2])) if match else None


def shard_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / SHARDS / f"{cell_name(seed_wi, seed_do)}.nc"


def claim_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / RUNNING / f"{cell_name(seed_wi, seed_do)}.lock"


def claim(run_dir: str | Path, cell: Cell, tries: int = 5) -> int | None:
    """Claim ``cell`` for this process: an exclusive lock (flock) on its claim file, which dies
    with the process; the open descriptor, or None when another process holds the cell. The
    claim file is never removed (removing it would let two processes each lock a file of the
    name). A status's brief probe is waited out (``tries``)."""
    path = claim_path(run_dir, *cell)
    folder = folder_fd(path.parent, Path(run_dir), make=True)  # (running/: never a link)
    try:
        fd = os.open(path.name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=folder)
    finally:
        os.close(folder)
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.2 * (attempt < tries - 1))
        except OSError as e:  # a filesystem without locks: the cell trains unclaimed
            logger.warning(f"cannot lock {path} ({e.strerror}): the cell is not claimed, and a "
                           "second trainer of it would not be stopped")
            return fd
    os.close(fd)
    return None


def claimed(run_dir: str | Path, cell: Cell) -> bool:
    """Whether a process holds ``cell``'s claim now (a shared lock probe, released at once)."""
    try:
        fd = os.open(claim_path(run_dir, *cell), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks on this filesystem: nothing tells
        return False
    finally:
        os.close(fd)
    return False


def cell_state(run_dir: str | Path, cell: Cell) -> str | None:
    """The state of ``cell``'s shard (:func:`seedgrid.store.shard_state`): None without one,
    ``damaged`` when it is not a whole shard of this cell, else its status."""
    return shard_state(shard_path(run_dir, *cell), cell)


def checkpoint_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{cell_name(seed_wi, seed_do)}.pt"


def running_marker(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / RUNNING / f"{cell_name(seed_wi, seed_do)}.json"


def shards_on_disk(run_dir: str | Path) -> dict[Cell, Path]:
    """The run folder's shard files by cell; other files in ``shards/`` are not shards."""
    found = {}
    for path in sorted((Path(run_dir) / SHARDS).glob("wi*_do*.nc")):
        cell = cell_of(path, ".nc")
        if cell is not None:
            found[cell] = path
    return found


def read_jobs(run_dir: str | Path) -> dict:
    """jobs.json: every submission of the run (none when it is missing or damaged: one that is
    not of seedgrid's shape is set aside as ``jobs.json.damaged``, with a warning)."""
    path = Path(run_dir) / JOBS
    record = read_json(path, None)
    if record is None:
        return {"submissions": []}
    if not _jobs_shape(record):
        logger.warning(f"{path} is not a record of submissions; {aside_said(path)}")
        return {"submissions": []}
    return record


def _jobs_shape(record) -> bool:
    """Whether ``record`` has jobs.json's shape: submissions of arrays, each a job id, its
    tasks' ids and each task's cells (pairs of seeds); the texts status prints, short."""
    def text(x) -> bool:
        return isinstance(x, str) and len(x) <= 256 and x.isprintable()

    def cell(c) -> bool:
        return (isinstance(c, list) and len(c) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in c))

    def array(a) -> bool:
        return (isinstance(a, dict) and text(a.get("job_id"))
                and isinstance(a.get("task_ids"), list) and isinstance(a.get("tasks"), list)
                and len(a["task_ids"]) == len(a["tasks"])
                and all(text(t) for t in a["task_ids"])
                and all(isinstance(t, list) and all(cell(c) for c in t) for t in a["tasks"]))

    return (isinstance(record, dict) and isinstance(record.get("submissions"), list)
            and all(isinstance(s, dict) and isinstance(s.get("arrays"), list)
                    and all(array(a) for a in s["arrays"])
                    and all(text(s.get(k, "")) for k in ("cluster", "executor", "host", "id"))
                    and all(isinstance(s.get(k, []), list) and all(map(cell, s.get(k, [])))
                            for k in ("intended", "unrecorded"))
                    for s in record["submissions"]))


def recorded_cluster(jobs: dict) -> str:
    """The profile a run's cells were last submitted to ("" before any), from its jobs.json."""
    submissions = jobs["submissions"]
    return str(submissions[-1].get("cluster", "")) if submissions else ""


def recorded_pack(jobs: dict, pack_as: str | None) -> tuple[int | None, str | None]:
    """(cells_per_gpu, pack_as) of the run's last submission (None, ``pack_as`` before any, or
    when it did not record them)."""
    last = jobs["submissions"][-1] if jobs["submissions"] else {}
    k = last.get("cells_per_gpu")
    if not isinstance(k, int) or not 1 <= k <= 64:
        return None, pack_as
    recorded = last.get("pack_as")
    return k, pack_as or (recorded if recorded in ("stacked", "processes") else None)


def command(*args: str | Path) -> str:
    """A seedgrid command line as a hint prints it, each argument shell-quoted: pasted, a run
    folder named ``a b;rm x`` stays one argument."""
    return f"{program()} " + shlex.join(str(a) for a in args)


def program() -> str:
    """How the user ran seedgrid: ``seedgrid`` (the console script) or ``python -m seedgrid``;
    usage lines and hints say the same."""
    return "seedgrid" if Path(sys.argv[0]).name == "seedgrid" else "python -m seedgrid"


def resubmit_command(run_dir: str | Path, cluster: str = "") -> str:
    """The command that trains the run's unfinished cells, on ``cluster`` or else the profile
    they were last submitted to (never the login node by omission)."""
    cluster = cluster or recorded_cluster(read_jobs(run_dir))
    return command("submit", "--resume", run_dir, *(["--cluster", cluster] if cluster else []))


def decider_log(run_dir: str | Path) -> Path:
    """The log of the --early-stop decider job (``continue`` run by SLURM)."""
    return Path(run_dir) / LOGS / "continue.log"


def task_log(run_dir: str | Path, job_id: str) -> Path:
    """The stderr log of an array task (or any job) of the run, as submitit names it."""
    from submitit.core.utils import JobPaths

    return JobPaths(Path(run_dir) / LOGS, job_id=job_id, task_id=0).stderr


def load_run_config(run_dir: Path) -> Config:
    """The frozen config of an existing run folder; UsageError if it is not one."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise UsageError(f"{str(run_dir)!r} is not a run folder (no {CONFIG}): give the folder "
                         "that submit or run wrote")
    return load_config(path, frozen=True)


def check_writable(run_dir: Path, option: str = "--out") -> None:
    """Raise UsageError unless ``run_dir`` exists as a folder or can be created, with a plain
    name (it goes into SLURM job names, log paths and hints), whose own folders (shards/,
    checkpoints/, ...) are real folders where they exist, never links; writes nothing."""
    check_output(run_dir, option, folder=True)
    for name in (SHARDS, CHECKPOINTS, RUNNING, LOGS):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.close(folder_fd(Path(run_dir) / name, Path(run_dir)))


def check_output(path: str | Path, option: str, folder: bool = False) -> None:
    """Raise UsageError (naming ``option``) unless ``path`` can be written — a file, or a
    ``folder`` — before any work is done: a long report or test must not end in a traceback
    (whose exit status 1 would read as a verdict). Writes nothing but a probe it removes."""
    path = Path(path)
    what = "folder" if folder else "file"
    bad = next((c for c in str(path) if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise UsageError(f"{option} {str(path)!r} has a control character ({bad!r}) in its name: "
                         "choose a plain name")
    too_long = next((part for part in path.parts if len(part.encode()) > 255), None)
    if too_long is not None:
        raise UsageError(f"{option}: the name {too_long[:40]!r}... is {len(too_long.encode())} "
                         "bytes, more than the 255 a file system allows: choose a shorter one")
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:  # a loop of symbolic links, a folder it may not read
        raise UsageError(f"{option} {str(path)!r} cannot be used ({e.strerror}): choose another "
                         f"{option}") from None
    if not folder:
        try:
            write_target(path, through_link=True)  # a FIFO, device or folder is refused
        except UsageError as e:
            raise UsageError(f"{option}: {e}") from None
    if path.exists() and path.is_dir() != folder:
        raise UsageError(f"{option} {str(path)!r} is a {'file' if folder else 'folder'}, not a "
                         f"{what}: choose another {option}")
    probe = path if folder and path.exists() else path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{option} {str(path)!r} cannot be made: {str(probe)!r} is a file; "
                         f"choose another {option}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UsageError(f"{option} {str(path)!r} is not writable ({e.strerror}): choose "
                         f"another {option}") from None


def check_config(run_dir: Path, cfg: Config) -> None:
    """Refuse a run folder made with another config (a different hash)."""
    path = run_dir / CONFIG
    if path.exists():
        old = load_config(path, frozen=True)
        if old.hash != cfg.hash:
            raise UsageError(f"{str(run_dir)!r} holds cells of config {old.hash}, not {cfg.hash} "
                             f"({config_difference(old, cfg)}): use another --out")
        if cfg.grid.seeds_wi and old.grid.coupled != cfg.grid.coupled:
            kind = "a coupled" if old.grid.coupled else "a WI x DO"
            raise UsageError(f"{str(run_dir)!r} holds {kind} grid and this config's [grid] is "
                             "not: use another --out")


def check_unchanged(run_dir: Path, cfg: Config, fingerprints: dict[str, str]) -> None:
    """Refuse (UsageError) to train more cells of ``run_dir`` when its cells were trained on
    another config (a config.toml edited since) or other data (a data file changed since):
    the new cells could not share a cube with them. Compares with a shard on disk (the first
    readable one); a folder without shards passes."""
    import netCDF4

    for cell, path in shards_on_disk(run_dir).items():
        try:
            check_regular(path)
            with netCDF4.Dataset(path) as nc:
                attrs: dict[str, str] = {
                    k: str(nc.getncattr(k)) for k in ("config_hash", "config", "data_train",
                                                      "data_validation") if k in nc.ncattrs()}
        except (OSError, RuntimeError):
            continue
        if "config_hash" not in attrs:
            continue
        name = f"{str(run_dir / SHARDS)!r}"
        if attrs["config_hash"] != cfg.hash:
            try:
                change = config_difference(config_from_toml(str(attrs.get("config", ""))), cfg)
            except UsageError:
                change = "its config cannot be read"
            raise UsageError(f"the cells in {name} were trained with config "
                             f"{attrs['config_hash']}, and {str(run_dir / CONFIG)!r} now says "
                             f"{cfg.hash} ({change}): it was edited since; restore it, or "
                             "start a new run folder")
        for split in ("train", "validation"):
            recorded, now = attrs.get(f"data_{split}"), fingerprints.get(f"data_{split}")
            if recorded and now and recorded != now:
                where = cfg.task.data_files.get(split) or f"task {cfg.task.name!r}"
                raise UsageError(f"the {split} data ({where}) changed since the cells in {name} "
                                 f"trained (fingerprint {recorded}, now {now}): restore it, or "
                                 "start a new run folder for the new data")
        return


def config_difference(old: Config, new: Config) -> str:
    """The hashed settings that differ, e.g. "[train] learning_rate 0.001 -> 0.5"."""
    a, b = old.to_dict(), new.to_dict()
    changes = [f"[{section}] {key} {a.get(section, {}).get(key)!r} -> "
               f"{b.get(section, {}).get(key)!r}"
               for section in dict.fromkeys(old.hashed_sections() + new.hashed_sections())
               for key in {**a.get(section, {}), **b.get(section, {})}
               if a.get(section, {}).get(key) != b.get(section, {}).get(key)]
    return "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")


def write_config(run_dir: Path, cfg: Config) -> None:
    """Freeze the config into the run folder (atomically); later grids widen the frozen one.

    The grid is not part of the config hash: submitting more seeds to a run folder (a 10 x 10
    grid grown to 25 x 25) keeps one config whose grid is the union of the seeds.
    """
    path = run_dir / CONFIG
    if path.exists():
        old = load_config(path, frozen=True)
        wi = sorted(set(old.grid.seeds_wi) | set(cfg.grid.seeds_wi))
        do = sorted(set(old.grid.seeds_do) | set(cfg.grid.seeds_do))
        if (tuple(wi), tuple(do)) == (old.grid.seeds_wi, old.grid.seeds_do):
            return
        cfg = with_seeds(old, wi, do)
    make_folder(run_dir)
    write_text_atomic(path, cfg.to_toml())


def check_private(run_dir: Path) -> None:
    """Refuse (UsageError, one line) a run folder that someone else could write into: submitit
    keeps each task's function and result as pickles in ``logs/``, which the task loads on
    its node, so whoever can replace one runs code as you (as ssh refuses a ``~/.ssh`` others
    can write). The folder and ``logs/`` must be yours and writable by you only; every folder
    above them yours or root's, and not writable by others unless sticky (as ``/tmp``).
    Folders not made yet are skipped (seedgrid makes them so: :func:`make_folder`)."""
    real = Path(os.path.realpath(run_dir))
    me = os.getuid()
    chain = [(real / LOGS, True), (real, True)] + [(p, False) for p in real.parents]
    for folder, strict in chain:
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise UsageError(f"cannot check {str(folder)!r} ({e.strerror}): choose another "
                             "run folder") from None
        shared = st.st_mode & 0o022 and (strict or not st.st_mode & stat.S_ISVTX)
        if st.st_uid not in (me, 0) or strict and st.st_uid != me or shared:
            who = ("writable by " + ("others" if st.st_mode & 0o002 else "its group")
                   if shared else "owned by another user")
            fix = (f"chmod go-w {shlex.quote(str(folder))}" if shared and st.st_uid == me
                   else "use a run folder under a folder only you can write to")
            raise UsageError(f"{str(folder)!r} is {who} (mode {stat.filemode(st.st_mode)}): "
                             "the array tasks load submitit's pickles from the run folder, and "
                             f"whoever can replace them runs code as you: {fix}")


def guard(run_dir: str) -> None:
    """What each array task runs before submitit loads its pickle (the first line of its
    setup): exit status 2 with one line when :func:`check_private` refuses the folder."""
    try:
        check_private(Path(run_dir))
    except UsageError as e:
        print(f"seedgrid: error: {clean_text(str(e))}", file=sys.stderr)
        raise SystemExit(2) from None


def guard_line(run_dir: Path) -> str:
    """The shell line an array task starts with: :func:`guard`, its folder given absolute."""
    code = "import sys; from seedgrid.rundir import guard; guard(sys.argv[1])"
    return shlex.join([sys.executable, "-c", code, os.path.realpath(run_dir)]) + " || exit 2"
