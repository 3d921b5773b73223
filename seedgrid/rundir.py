"""The run folder ``runs/<name>/``: every path in it is formatted and parsed here, and only here.

    runs/<name>/
      config.toml                  the frozen config (its hash names what the folder holds)
      shards/wi<W>_do<D>.nc        one per finished cell (the truth: a cell is done by its shard)
      checkpoints/wi<W>_do<D>.pt   a cell in training (removed when its shard is written)
      running/wi<W>_do<D>.json     a cell training under the local executor (pid, host, start)
      jobs.json                    every submission: array job ids, each task's cells
      early_stop.json              the --early-stop plan and its decision
      logs/                        submitit's folder: <job id>_<rank>_log.{out,err}, pickles
      cube.nc, report/             what collect and report write

A folder belongs to one config (by hash): cells of another config are refused, never mixed in.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from seedgrid.config import Config, load_config, with_seeds
from seedgrid.errors import UsageError
from seedgrid.store import read_json, write_text_atomic

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
    match = _CELL_NAME.fullmatch(name[:-len(suffix)]) if name.endswith(suffix) else None
    return (int(match[1]), int(match[2])) if match else None


def shard_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / SHARDS / f"{cell_name(seed_wi, seed_do)}.nc"


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
    """jobs.json: every submission of the run (none when it is missing or damaged)."""
    record = read_json(Path(run_dir) / JOBS, None)
    if not isinstance(record, dict) or not isinstance(record.get("submissions"), list):
        return {"submissions": []}
    return record


def recorded_cluster(jobs: dict) -> str:
    """The profile a run's cells were last submitted to ("" before any), from its jobs.json."""
    submissions = jobs["submissions"]
    return str(submissions[-1].get("cluster", "")) if submissions else ""


def resubmit_command(run_dir: str | Path, cluster: str = "") -> str:
    """The command that trains the run's unfinished cells, on ``cluster`` or else the profile
    they were last submitted to (never the login node by omission)."""
    cluster = cluster or recorded_cluster(read_jobs(run_dir))
    return (f"python -m seedgrid submit --resume {run_dir}"
            + (f" --cluster {cluster}" if cluster else ""))


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
    return load_config(path)


def check_writable(run_dir: Path, option: str = "--out") -> None:
    """Raise UsageError unless ``run_dir`` exists as a folder or can be created, with a plain
    name (it goes into SLURM job names, log paths and hints); writes nothing."""
    check_output(run_dir, option, folder=True)


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
        old = load_config(path)
        if old.hash != cfg.hash:
            raise UsageError(f"{str(run_dir)!r} holds cells of config {old.hash}, not {cfg.hash} "
                             f"({config_difference(old, cfg)}): use another --out")
        if cfg.grid.seeds_wi and old.grid.coupled != cfg.grid.coupled:
            kind = "a coupled" if old.grid.coupled else "a WI x DO"
            raise UsageError(f"{str(run_dir)!r} holds {kind} grid and this config's [grid] is "
                             "not: use another --out")


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
        old = load_config(path)
        wi = sorted(set(old.grid.seeds_wi) | set(cfg.grid.seeds_wi))
        do = sorted(set(old.grid.seeds_do) | set(cfg.grid.seeds_do))
        if (tuple(wi), tuple(do)) == (old.grid.seeds_wi, old.grid.seeds_do):
            return
        cfg = with_seeds(old, wi, do)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, cfg.to_toml())
