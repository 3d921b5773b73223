"""The cube schema and the shard — the data contract of seedgrid (written through
:mod:`seedgrid.files`).

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

On disk (schema 2) the files follow the CF conventions (``Conventions = "CF-1.8"``, the
newest the CF community's own checker knows; nothing later is used), with a ``title`` and a
``history``: every variable and coordinate has a ``long_name`` and ``units`` (``"1"`` for
seeds, ids, indices and counts), ``status`` is a
byte flag variable (``flag_values`` 0-5, ``flag_meanings`` the names above) and ``label`` names
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

from pathlib import Path

import numpy as np
import xarray as xr

from seedgrid.files import atomic_path, check_regular
from seedgrid.log import clean_text

SCHEMA_VERSION = 2
#: the schema versions this seedgrid opens
READABLE = (1, 2)
CONVENTIONS = "CF-1.8"
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
PER_CELL_TEXT = ("host", "device", "gpu", "pack", "started", "created", "versions")
#: the longest per-cell text a shard may hold (eight GPU UUIDs and a pack take a few hundred)
TEXT_LIMIT = 4096
PER_CELL_INT = ("num_processes", "gradient_accumulation", "deterministic", "torch_threads")
#: CF metadata of every variable and coordinate
CF_ATTRS: dict[str, dict[str, str]] = {
    "seed_wi": {"long_name": "weight-initialisation seed (the classifier head's draw)",
                "units": "1"},
    "seed_do": {"long_name": "data-order seed (training batches and dropout)", "units": "1"},
    "example": {"long_name": "validation example id (the dataset's own)", "units": "1"},
    "step": {"long_name": "optimizer updates done at the evaluation", "units": "1"},
    "epoch": {"long_name": "epochs of training done at the evaluation", "units": "1"},
    "class": {"long_name": "class index of the logits (names: label's flag_meanings; one "
                       "output for a regression task)", "units": "1"},
    "update": {"long_name": "optimizer update (from 1)", "units": "1"},
    "logits": {"long_name": "validation logits (regression: outputs) at each evaluation",
               "units": "1"},
    "label": {"long_name": "gold label (regression: gold score) of each validation example",
              "units": "1"},
    "train_loss": {"long_name": "mean training loss of each update (cross-entropy in nats; "
                                "regression: squared error)", "units": "1"},
    "status": {"long_name": "how the cell ended"},
    "wall_time_s": {"long_name": "wall-clock time the cell trained", "units": "s"},
    "host": {"long_name": "host the cell trained on"},
    "device": {"long_name": "device the cell trained on (GPU name or cpu)"},
    "gpu": {"long_name": "CUDA_VISIBLE_DEVICES the cell trained with (empty: none)"},
    "pack": {"long_name": "the cells trained with it as one stacked model (empty: alone)"},
    "started": {"long_name": "when the cell began training, or resumed after a requeue "
                            "(UTC, ISO 8601)"},
    "created": {"long_name": "when the cell's shard was written (UTC, ISO 8601)"},
    "versions": {"long_name": "seedgrid and library versions the cell trained with"},
    "num_processes": {"long_name": "processes that trained the cell", "units": "1"},
    "gradient_accumulation": {"long_name": "micro-batches per global batch", "units": "1"},
    "deterministic": {"long_name": "deterministic kernels (1) or not (0)", "units": "1"},
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
    ds.attrs.setdefault("title", f"seedgrid shard: task {ds.attrs.get('task', '?')}, cell "
                                 f"wi={ds['seed_wi'].values[0]} do={ds['seed_do'].values[0]}"
                        if ds.sizes.get("seed_wi") == ds.sizes.get("seed_do") == 1 else
                        f"seedgrid cube: task {ds.attrs.get('task', '?')}")
    ds.attrs.setdefault("history", f"{ds.attrs.get('created', '')} written by seedgrid "
                                   f"{version()}".strip())
    return ds


def version() -> str:
    """seedgrid's version (the package's ``__version__``), as files record it."""
    from seedgrid.version import __version__

    return __version__


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
             # (CF: the names separated by blanks, each one word)
             "flag_meanings": " ".join("_".join(n.split()) for n in label_names)
             } if label_names else {}
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
    if missing:
        return f"no attribute {missing[0]!r}"
    for coord in (*SEEDS, "example", "step"):  # labels a cell or an evaluation by: each once
        values = np.asarray(ds[coord].values)
        unique, counts = np.unique(values, return_counts=True)
        if (counts > 1).any():
            return f"{coord} {unique[counts > 1][0]} is given twice"
    return None


def write_atomic(ds: xr.Dataset, path: str | Path, root: str | Path | None = None) -> Path:
    """Write ``ds`` (a shard, or any Dataset of the schema) as netCDF4 to ``path`` atomically,
    in the on-disk form of :func:`encode` (``root``: see :func:`seedgrid.files.atomic_path`)."""
    with atomic_path(path, root=root) as tmp:
        encode(ds).to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    return Path(path)


def read_shard(path: str | Path) -> xr.Dataset:
    """A shard, loaded into memory and the file closed (OSError for anything but a regular
    file: a FIFO is never opened)."""
    check_regular(path)
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return decode(ds.load())


def _attr(value):
    """netCDF attributes take strings and numbers only."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    return str(value)


def shard_state(path: Path, cell: tuple[int, int] | None = None) -> str | None:
    """A shard's status without reading its arrays; None when there is no shard, ``damaged``
    when what is there is not a whole shard of ``cell`` (not a regular file, unreadable, a
    variable missing or of other dimensions, the seeds of another cell)."""
    import netCDF4

    try:
        check_regular(path)
    except FileNotFoundError:
        return None
    except OSError:
        return "damaged"
    try:
        with netCDF4.Dataset(path) as nc:
            problem = shard_problem(nc, cell)
            status = status_name(nc["status"][0, 0])
    except (OSError, RuntimeError, KeyError, IndexError, ValueError, TypeError):
        return "damaged"
    return status if status in STATUS and problem is None else "damaged"


def shard_problem(nc, cell: tuple[int, int] | None) -> str | None:
    """What makes the open netCDF4 file ``nc`` not a whole shard of ``cell``, or None: every
    variable of the schema with its dimensions, one cell, and that cell's seeds."""
    version = getattr(nc, "schema_version", None)
    if not isinstance(version, (int, np.integer)) or int(version) not in READABLE:
        return (f"schema version {clean_text(str(version))[:20]}, this seedgrid reads versions "
                f"{', '.join(map(str, READABLE))}")
    for name, dims in VARIABLES.items():
        if name not in nc.variables or tuple(nc[name].dimensions) != dims:
            return f"no variable {name!r} of dimensions {dims}"
    long = next((k for k in nc.ncattrs() if (k in PER_CELL_TEXT or _is_package_version(k))
                 and len(str(nc.getncattr(k))) > TEXT_LIMIT), None)
    if long is not None:  # (each becomes a column of the cube as wide as the longest)
        return f"its attribute {long!r} is over {TEXT_LIMIT} characters"
    if any(nc.dimensions[seed].size != 1 for seed in SEEDS):
        return "not one cell"
    held = (int(nc["seed_wi"][0]), int(nc["seed_do"][0]))
    if cell is not None and held != tuple(cell):
        return f"it holds cell (wi={held[0]}, do={held[1]}), not the one its name says"
    return None
