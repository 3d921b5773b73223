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

import os
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


def shard_path(run_dir: str | Path, seed_wi: int, seed_do: int) -> Path:
    return Path(run_dir) / "shards" / f"wi{seed_wi}_do{seed_do}.nc"


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


def write_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` as netCDF4 to ``path`` through a temporary name and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary name and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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


def shard_status(path: Path) -> str:
    """A shard's status without reading its arrays."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        return str(nc["status"][0, 0])
