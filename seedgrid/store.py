"""The cube schema, and shards written atomically — the data contract of seedgrid.

A cube is one ``xarray.Dataset`` (netCDF4 on disk):

============  =============================================  =====================================
name          dims                                           meaning
============  =============================================  =====================================
logits        (seed_wi, seed_do, example, step, class)       validation logits at each evaluation
label         (example)                                      gold label (regression: gold score)
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
config_hash, the frozen config (TOML text), created.

On disk (schema 2) the files follow the CF conventions (``Conventions = "CF-1.10"``): every
variable and coordinate has a ``long_name`` (and ``units`` where it has any), ``status`` is a
byte flag variable (``flag_values`` 0-4, ``flag_meanings`` the names above) and ``label`` names
its classes in ``flag_meanings`` where the task has names. :func:`decode` gives status back as
names; :func:`open_cube` and :func:`read_shard` apply it, so in memory ``ds.status == "done"``.
A cube also keeps, per cell, what the cell ran on and with (``host``, ``device``, ``gpu``,
``started``, ``created``, ``versions``: text variables over (seed_wi, seed_do)); a shard keeps
them as attributes.
Schema 1 files (status as strings, no CF metadata) still open. A regression task (STS-B) has
one output per example: ``class`` of length 1, ``label`` as float64 scores.

A shard is the same schema with length-1 seed dimensions: one cell. It is written to a
temporary name in the same folder and renamed, so a reader never sees half a file. Missing or
diverged evaluations are NaN, never dropped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import xarray as xr

from seedgrid.log import logger

SCHEMA_VERSION = 2
#: the schema versions this seedgrid opens
READABLE = (1, 2)
CONVENTIONS = "CF-1.10"
#: the two seed dimensions of every cell: weight initialisation, data order
SEEDS = ("seed_wi", "seed_do")
#: unused: a cell outside the design (off the diagonal of a coupled grid), never trained
STATUS = ("done", "failed", "diverged", "stopped", "missing", "unused")
#: every variable of a cube (and a shard) and its dimensions, in order
VARIABLES = {
    "logits": ("seed_wi", "seed_do", "example", "step", "class"),
    "label": ("example",),
    "train_loss": ("seed_wi", "seed_do", "update"),
    "status": SEEDS,
    "wall_time_s": SEEDS,
}
#: attributes every cube (and shard) carries
ATTRS = ("schema_version", "task", "metric", "model", "majority_baseline", "config_hash", "config")
#: a shard's attributes that describe its cell, not the grid: per-cell variables in a cube
#: (text, then integers; ``versions`` joins the shard's ``<package>_version`` attributes)
PER_CELL_TEXT = ("host", "device", "gpu", "started", "created", "versions")
PER_CELL_INT = ("num_processes", "gradient_accumulation", "deterministic", "torch_threads")
#: CF metadata of every variable and coordinate
CF_ATTRS: dict[str, dict[str, str]] = {
    "seed_wi": {"long_name": "weight-initialisation seed (the classifier head's draw)"},
    "seed_do": {"long_name": "data-order seed (training batches and dropout)"},
    "example": {"long_name": "validation example id (the dataset's own)"},
    "step": {"long_name": "optimizer updates done at the evaluation", "units": "1"},
    "epoch": {"long_name": "epochs of training done at the evaluation", "units": "1"},
    "class": {"long_name": "class index of the logits (names: label's flag_meanings; one "
                       "output for a regression task)"},
    "update": {"long_name": "optimizer update (from 1)", "units": "1"},
    "logits": {"long_name": "validation logits (regression: outputs) at each evaluation",
               "units": "1"},
    "label": {"long_name": "gold label (regression: gold score) of each validation example"},
    "train_loss": {"long_name": "mean training loss of each update (cross-entropy in nats; "
                                "regression: squared error)", "units": "1"},
    "status": {"long_name": "how the cell ended"},
    "wall_time_s": {"long_name": "wall-clock time the cell trained", "units": "s"},
    "host": {"long_name": "host the cell trained on"},
    "device": {"long_name": "device the cell trained on (GPU name or cpu)"},
    "gpu": {"long_name": "CUDA_VISIBLE_DEVICES the cell trained with (empty: none)"},
    "started": {"long_name": "when the cell began training, or resumed after a requeue "
                            "(UTC, ISO 8601)"},
    "created": {"long_name": "when the cell's shard was written (UTC, ISO 8601)"},
    "versions": {"long_name": "seedgrid and library versions the cell trained with"},
    "num_processes": {"long_name": "processes that trained the cell", "units": "1"},
    "gradient_accumulation": {"long_name": "micro-batches per global batch", "units": "1"},
    "deterministic": {"long_name": "deterministic kernels (1) or not (0)"},
    "torch_threads": {"long_name": "torch CPU threads of the cell", "units": "1"},
}


def cell_attrs(attrs: dict) -> dict:
    """A shard's per-cell attributes (:data:`PER_CELL_TEXT`, :data:`PER_CELL_INT`); missing
    ones are "" and -1, the integers' fill value (xarray reads it as NaN)."""
    versions = ", ".join(f"{k.removesuffix('_version')} {v}" for k, v in attrs.items()
                         if _is_package_version(k))
    return {**{k: str(attrs.get(k, "")) for k in PER_CELL_TEXT if k != "versions"},
            "versions": versions, **{k: int(attrs.get(k, -1)) for k in PER_CELL_INT}}


def grid_attrs(attrs: dict) -> dict:
    """A shard's attributes that hold for the whole grid (a cube's global attributes)."""
    return {k: v for k, v in attrs.items()
            if k not in PER_CELL_TEXT + PER_CELL_INT and not _is_package_version(k)}


def _is_package_version(attr: str) -> bool:
    return attr.endswith("_version") and attr != "schema_version"


def status_flags() -> dict:
    """The CF flag attributes of ``status`` (byte codes 0.. in the order of STATUS)."""
    return {"flag_values": np.arange(len(STATUS), dtype=np.int8),
            "flag_meanings": " ".join(STATUS)}


def encode(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as it is written (schema 2): status as byte flags, CF attributes everywhere."""
    ds = ds.copy()
    names = ds["status"].values.astype(str)
    known = names[..., None] == np.array(STATUS)
    if not known.any(-1).all():
        raise ValueError(f"status {str(names[~known.any(-1)].ravel()[0])!r} is not one of {STATUS}")
    codes = known.argmax(-1).astype(np.int8)
    ds["status"] = ds["status"].copy(data=codes)
    for name, attrs in CF_ATTRS.items():
        if name in ds.variables:
            ds[name].attrs.update(attrs)
    ds["status"].attrs.update(status_flags())
    ds.attrs["Conventions"] = CONVENTIONS
    return ds


def decode(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``status`` as names (``"done"``...), whatever the schema version wrote."""
    status = ds["status"]
    if status.dtype.kind not in "iu":
        return ds
    meanings = np.array(status.attrs.get("flag_meanings", " ".join(STATUS)).split(), dtype=object)
    codes = np.asarray(status.values)
    bad = (codes < 0) | (codes >= len(meanings))
    if bad.any():
        raise ValueError(f"status code {codes[bad].ravel()[0]} is not one of its flag_values")
    attrs = {k: v for k, v in status.attrs.items() if not k.startswith("flag_")}
    return ds.assign(status=(status.dims, meanings[codes], attrs))


def status_name(value) -> str:
    """One status as read from a file by netCDF4: a byte code (schema 2) or a name (1)."""
    if isinstance(value, (str, np.str_)):
        return str(value)
    code = int(value)
    return STATUS[code] if 0 <= code < len(STATUS) else "damaged"


def cell_dataset(*, seed_wi: int, seed_do: int, logits: np.ndarray, labels: np.ndarray,
                 example_ids: np.ndarray, steps: np.ndarray, epochs: np.ndarray,
                 train_loss: np.ndarray, status: str, wall_time_s: float,
                 attrs: dict, label_names: tuple[str, ...] = ()) -> xr.Dataset:
    """One cell as a Dataset of the cube schema; ``logits`` is (step, example, class)."""
    if status not in STATUS:
        raise ValueError(f"status {status!r} is not one of {STATUS}")
    values = {
        "logits": logits.transpose(1, 0, 2)[None, None].astype(np.float32),
        "label": labels.astype(np.float64 if labels.dtype.kind == "f" else np.int64),
        "train_loss": train_loss[None, None].astype(np.float32),
        "status": np.array([[status]], dtype=object),
        "wall_time_s": np.array([[wall_time_s]], dtype=np.float64),
    }
    flags = {"flag_values": np.arange(len(label_names), dtype=np.int64),
             "flag_meanings": " ".join(label_names)} if label_names else {}
    return xr.Dataset(
        {name: (dims, values[name], flags if name == "label" else {})
         for name, dims in VARIABLES.items()},
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
    if int(version) not in READABLE:
        return (f"schema version {version}, this seedgrid reads versions "
                f"{', '.join(map(str, READABLE))}: upgrade seedgrid")
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The one way seedgrid writes a file: yield a temporary name beside ``path``
    (``.<name>.<pid>.tmp``) to write; when the block ends well, fsync it and rename it over
    ``path`` (atomic: a reader sees the old file or the new one, never half of one). On any
    error the temporary file is removed, and a full disk says so (:class:`DiskFullError`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # netCDF's HDF errors are RuntimeErrors
        raise_if_disk_full(e, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` (a shard, or any Dataset of the schema) as netCDF4 to ``path`` atomically,
    in the on-disk form of :func:`encode`."""
    with atomic_path(path) as tmp:
        encode(ds).to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, value) -> Path:
    """Write ``value`` as JSON (see :func:`json_ready`) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(json_ready(value), indent=1, allow_nan=False))


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
        logger.warning(f"{path} was damaged ({e}); moved to {set_aside(path).name}")
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
        return decode(ds.load())


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
            status = status_name(nc["status"][0, 0])
    except (OSError, RuntimeError, KeyError, IndexError, ValueError, TypeError):
        return "damaged"
    return status if status in STATUS else "damaged"
