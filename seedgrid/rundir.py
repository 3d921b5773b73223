"""The run folder ``runs/<name>/``: everything a later shell needs is read from here.

It holds the frozen ``config.toml`` and ``shards/wi<W>_do<D>.nc`` (one per finished cell); later,
``jobs.json``, submitit logs, ``checkpoints/``, ``cube.nc`` and ``report/``. A folder belongs to
one config (by hash): cells of another config are refused, never mixed in.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from seedgrid.config import Config, load_config, with_seeds
from seedgrid.errors import UsageError
from seedgrid.store import write_text_atomic

CONFIG = "config.toml"


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


def config_difference(old: Config, new: Config) -> str:
    """The hashed settings that differ, e.g. "[train] learning_rate 0.001 -> 0.5"."""
    a, b = old.to_dict(), new.to_dict()
    changes = [f"[{section}] {key} {a[section][key]!r} -> {b[section][key]!r}"
               for section in ("model", "task", "train") for key in a[section]
               if a[section][key] != b[section][key]]
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
