"""The cube schema, and shards written atomically — the data contract of seedgrid.

A cube is one ``xarray.Dataset`` (netCDF4 on disk):

============  =============================================  =====================================
name          dims                                           meaning
============  =============================================  =====================================
logits        (seed_wi, seed_do, example, step, class)       validation logits at each evaluation
label         (example)                                      gold label
train_loss    (seed_wi, seed_do, update)                     mean loss of each optimizer update
status        (seed_wi, seed_do)                             done / failed / diverged / stopped / missing
wall_time_s   (seed_wi, seed_do)                             seconds the cell trained
============  =============================================  =====================================

Coordinates: ``seed_wi``, ``seed_do``; ``example`` holds the dataset's own ids; ``step`` holds the
number of optimizer updates done at each evaluation (0 = before training), with ``epoch``
(fractional) along it; ``update`` counts updates from 1 (read it as ``ds["update"]``:
``ds.update`` is xarray's Dataset.update method). (``step`` carries the update count as
its values rather than a second coordinate named ``update``, because xarray forbids a coordinate
that shares its name with another dimension.) Attributes: schema_version, task, metric, model,
config_hash, the frozen config (TOML text), package versions, created.

A shard is the same schema with length-1 seed dimensions: one cell. It is written to a
temporary name in the same folder and renamed, so a reader never sees half a file. Missing or
diverged evaluations are NaN, never dropped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import xarray as xr

SCHEMA_VERSION = 1
STATUS = ("done", "failed", "diverged", "stopped", "missing")
#: every variable of a cube (and a shard) and its dimensions, in order
VARIABLES = {
    "logits": ("seed_wi", "seed_do", "example", "step", "class"),
    "label": ("example",),
    "train_loss": ("seed_wi", "seed_do", "update"),
    "status": ("seed_wi", "seed_do"),
    "wall_time_s": ("seed_wi", "seed_do"),
}
#: attributes every cube (and shard) carries
ATTRS = ("schema_version", "task", "metric", "model", "majority_baseline", "config_hash", "config")


#: a shard's file name, and nothing else: ``wi3_do12.nc`` (not ``wi3_do12.bak.nc``)
SHARD_NAME = re.compile(r"wi(\d+)_do(\d+)\.nc")


def shard_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / "shards" / f"wi{seed_wi}_do{seed_do}.nc"


def shards_on_disk(run_dir: str | Path) -> dict[tuple[int, int], Path]:
    """The run folder's shard files by cell; other files in ``shards/`` are not shards."""
    found = {}
    for path in sorted((Path(run_dir) / "shards").glob("wi*_do*.nc")):
        match = SHARD_NAME.fullmatch(path.name)
        if match:
            found[int(match[1]), int(match[2])] = path
    return found


def cell_dataset(*, seed_wi: int, seed_do: int, logits: np.ndarray, labels: np.ndarray,
                 example_ids: np.ndarray, steps: np.ndarray, epochs: np.ndarray,
                 train_loss: np.ndarray, status: str, wall_time_s: float,
                 attrs: dict) -> xr.Dataset:
    """One cell as a Dataset of the cube schema; ``logits`` is (step, example, class)."""
    if status not in STATUS:
        raise ValueError(f"status {status!r} is not one of {STATUS}")
    values = {
        "logits": logits.transpose(1, 0, 2)[None, None].astype(np.float32),
        "label": labels.astype(np.int64),
        "train_loss": train_loss[None, None].astype(np.float32),
        "status": np.array([[status]], dtype=object),
        "wall_time_s": np.array([[wall_time_s]], dtype=np.float64),
    }
    return xr.Dataset(
        {name: (dims, values[name]) for name, dims in VARIABLES.items()},
        coords={
            "seed_wi": [seed_wi], "seed_do": [seed_do], "example": example_ids,
            "step": steps.astype(np.int64), "epoch": ("step", epochs.astype(np.float64)),
            "class": np.arange(logits.shape[-1]), "update": np.arange(1, len(train_loss) + 1),
        },
        attrs={"schema_version": SCHEMA_VERSION, **{k: _attr(v) for k, v in attrs.items()}},
    )


def schema_problem(ds: xr.Dataset) -> str | None:
    """What makes ``ds`` not a cube (or shard) of this schema version, or None."""
    version = ds.attrs.get("schema_version")
    if version is None:
        return "no schema_version attribute: not written by seedgrid"
    if int(version) != SCHEMA_VERSION:
        return f"schema version {version}, this seedgrid reads version {SCHEMA_VERSION}"
    for name, dims in VARIABLES.items():
        if name not in ds.variables:
            return f"no variable {name!r}"
        if ds[name].dims != dims:
            return f"variable {name!r} has dimensions {ds[name].dims}, expected {dims}"
    missing = [a for a in ATTRS if a not in ds.attrs]
    return f"no attribute {missing[0]!r}" if missing else None


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


def write_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` as netCDF4 to ``path`` through a temporary name and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        _fsync(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise_if_disk_full(e, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary name, fsync and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise_if_disk_full(e, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_json(path: str | Path, default):
    """A JSON file seedgrid wrote, or ``default`` when there is none. A damaged one (cut short,
    edited by hand) is set aside as ``<name>.damaged`` and ``default`` returned: a command
    says so on stderr and goes on, never dies on it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except ValueError as e:
        print(f"seedgrid: warning: {path} was damaged ({e}); moved to "
              f"{set_aside(path).name}", file=sys.stderr)
        return default


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (kept for a look, out of every glob)."""
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    return aside


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files that writes of ``path`` killed mid-way left behind
    (``.<name>.<pid>.tmp``; a BERT-large checkpoint's is 4 GB), except this process's own."""
    mine = f".{path.name}.{os.getpid()}.tmp"
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if tmp.name != mine:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold ``<path>.lock`` (filelock: works on NFS and Lustre) for a read-modify-write of
    ``path``, so two writers (two submits, a submit and the decider job) never lose a record."""
    import filelock

    with filelock.FileLock(str(path) + ".lock", timeout=120):
        yield


def read_shard(path: str | Path) -> xr.Dataset:
    """A shard, loaded into memory and the file closed."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def _attr(value):
    """netCDF attributes take strings and numbers only."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    return str(value)


def shard_state(path: Path) -> str | None:
    """A shard's status without reading its arrays; None when there is no shard, ``damaged``
    when there is one that cannot be read."""
    import netCDF4

    if not Path(path).exists():
        return None
    try:
        with netCDF4.Dataset(path) as nc:
            status = str(nc["status"][0, 0])
    except (OSError, RuntimeError, KeyError, IndexError, ValueError):
        return "damaged"
    return status if status in STATUS else "damaged"
