"""Runs trained elsewhere (transformers' Trainer, Lightning, a loop of your own) as a seed grid:
``python -m seedgrid import TABLE --out RUN`` builds a run folder with its cube from a long table
of their validation predictions, so that ``report``, ``compare``, ``regress`` and ``export``
serve them as they serve a grid seedgrid trained.

The table (csv, tsv, parquet; gzip'd csv too) has one row per (run, example, evaluation):
``seed_wi``, ``seed_do`` (non-negative integers; a run of one seed: its seed in ``seed_wi`` and
``seed_do`` constant), ``example`` (any id), ``step`` (the update of the evaluation, an integer),
``label`` (the gold label: an integer class, or a real value for a regression target), and
either ``logit_0 .. logit_<C-1>`` (the model's outputs) or ``prediction`` (the predicted class,
or the real output); optionally ``epoch``, the (fractional) epoch of each step — without it,
the analyses that need epochs (the best at epoch ends) have nothing to say. With predictions only, the cube's logits are one-hot (1 for the predicted
class, 0 elsewhere): every analysis of predictions holds, a softmax of them means nothing.

What the table cannot be is one line, exit status 2, nothing written: a missing column, a row
repeated (the same run, example and step twice), a run missing some (example, step) rows, an
example with two labels, a label or logit that is not a number. A run absent from the grid of
the seeds given (a WI × DO rectangle) is ``missing``, as in a cube seedgrid trained. The cube
says it was imported (``imported``: the table, its rows, its SHA-256) and has no training
record (``train_loss`` over zero updates).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from seedgrid import metrics
from seedgrid.errors import UsageError, shown
from seedgrid.files import check_regular
from seedgrid.store import SCHEMA_VERSION, VARIABLES, write_atomic

KEYS = ("seed_wi", "seed_do", "example", "step")
READERS = {".csv": pd.read_csv, ".gz": pd.read_csv, ".tsv": lambda f: pd.read_csv(f, sep="\t"),
           ".parquet": pd.read_parquet}


@dataclass(frozen=True)
class Imported:
    path: Path
    cells: int
    missing: int
    examples: int
    steps: int
    classes: int
    metric: str

    def summary(self) -> str:
        return (f"wrote {self.path} (imported): {self.cells} cells, {self.missing} missing, "
                f"{self.examples} examples, {self.steps} evaluations, "
                + ("a regression target" if self.classes == 1 else f"{self.classes} classes")
                + f"; metric {self.metric}")


def import_table(table: str | Path, out: str | Path, *, task: str = "", metric: str = "",
                 model: str = "") -> Imported:
    """Read ``table``, check it whole, and write ``out/cube.nc``; see the module's text."""
    table, out = Path(table), Path(out)
    frame = _read(table)
    logits, regression = _logits(frame, metric)
    metric = metric or ("pearson" if regression else "accuracy")
    metrics.check_metric(metric, regression, option="--metric")
    cube = _cube(frame, logits, regression, table)
    labels = cube.label.values
    asked = metrics.questions_for(metric, cube.example.values)
    cube.attrs.update({
        "schema_version": SCHEMA_VERSION, "task": task or table.stem.split(".")[0],
        "metric": metric, "model": model or "unknown (imported)",
        "majority_baseline": metrics.majority_baseline(labels, metric, asked),
        "config_hash": _digest(table)[:12], "config": "",
        "imported": f"{table} ({len(frame)} rows, sha256 {_digest(table)}), "
                    f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        "title": f"seed grid imported from {table.name}"})
    path = out / "cube.nc"
    write_atomic(cube, path)
    status = cube.status.values
    return Imported(path, int((status != "missing").sum()), int((status == "missing").sum()),
                    cube.sizes["example"], cube.sizes["step"], cube.sizes["class"], metric)


def _read(table: Path) -> pd.DataFrame:
    reader = READERS.get(table.suffix)
    if reader is None:
        raise UsageError(f"{str(table)!r}: give a .csv, .csv.gz, .tsv or .parquet table")
    try:
        check_regular(table)
        frame = reader(table)
    except FileNotFoundError:
        raise UsageError(f"table {str(table)!r} not found: give the path of your predictions "
                         "table") from None
    except Exception as e:  # pandas and pyarrow raise many kinds: all mean "not that format"
        raise UsageError(f"{str(table)!r} cannot be read as a table ({type(e).__name__}: "
                         f"{str(e).strip()[:120]}): give a {table.suffix} file") from None
    missing = [c for c in (*KEYS, "label") if c not in frame.columns]
    if missing:
        raise UsageError(f"{str(table)!r} has no column {missing[0]!r}: a row per run, example "
                         "and evaluation needs seed_wi, seed_do, example, step, label and "
                         "logit_0.. or prediction")
    if frame.empty:
        raise UsageError(f"{str(table)!r} has no rows")
    for key in ("seed_wi", "seed_do", "step"):
        values = frame[key]
        if not pd.api.types.is_integer_dtype(values) or (values < 0).any():
            raise UsageError(f"column {key!r} of {str(table)!r} must hold non-negative integers "
                             f"(it holds {shown(values.iloc[0])}, ...)")
    repeated = frame.duplicated(list(KEYS))
    if repeated.any():
        row = frame.loc[repeated, list(KEYS)].head(1).to_dict("records")[0]  # (its own types)
        raise UsageError(f"{str(table)!r} repeats run (seed_wi {row['seed_wi']}, seed_do "
                         f"{row['seed_do']}), example {shown(row['example'])}, step {row['step']}: "
                         "give each once")
    return frame


def _logits(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, bool]:
    """The table's outputs as logits (row, class), and whether the task is a regression."""
    columns = sorted((c for c in frame.columns if str(c).startswith("logit_")),
                     key=lambda c: int(c.split("_", 1)[1]) if c.split("_", 1)[1].isdigit()
                     else -1)
    expected = [f"logit_{k}" for k in range(len(columns))]
    if columns and columns != expected:
        raise UsageError(f"logit columns {', '.join(columns)}: number them logit_0 .. "
                         f"logit_{len(columns) - 1}, one per class")
    if not columns and "prediction" not in frame.columns:
        raise UsageError("the table has neither logit_0.. nor prediction columns: give the "
                         "model's outputs")
    source = frame[columns] if columns else frame[["prediction"]]
    if not all(pd.api.types.is_numeric_dtype(t) for t in source.dtypes):
        raise UsageError(f"the {'logit' if columns else 'prediction'} columns must hold numbers")
    labels = frame["label"]
    if not pd.api.types.is_numeric_dtype(labels) or labels.isna().any():
        raise UsageError("column 'label' must hold a number in every row: a class or a value")
    regression = (len(columns) == 1 if columns else
                  metric in metrics.REGRESSION or not np.all(np.mod(labels, 1) == 0))
    if columns or regression:
        return source.to_numpy(np.float64), regression
    pred = frame["prediction"].to_numpy(np.float64)
    if np.any(np.mod(pred, 1) != 0) or (pred < 0).any() or (labels < 0).any():
        raise UsageError("predictions and labels of classes are integers from 0: give classes "
                         "0..C-1 (or logit columns)")
    classes = int(max(pred.max(), labels.max())) + 1
    return np.eye(classes)[pred.astype(np.int64)], False


def _cube(frame: pd.DataFrame, logits: np.ndarray, regression: bool, table: Path
          ) -> xr.Dataset:
    """The WI × DO × example × step × class cube of the rows (pivoted, not looped)."""
    index = {k: pd.factorize(frame[k], sort=k != "example") for k in KEYS}
    codes = [index[k][0] for k in KEYS]
    sizes = [len(index[k][1]) for k in KEYS]
    full = np.full((*sizes, logits.shape[1]), np.nan, np.float32)
    full[tuple(codes)] = logits
    seen = np.zeros(sizes, bool)
    seen[tuple(codes)] = True
    per_cell = seen.reshape(sizes[0], sizes[1], -1)
    partial = per_cell.any(axis=2) & ~per_cell.all(axis=2)
    if partial.any():
        wi, do = np.argwhere(partial)[0]
        have = int(per_cell[wi, do].sum())
        raise UsageError(f"run (seed_wi {index['seed_wi'][1][wi]}, seed_do "
                         f"{index['seed_do'][1][do]}) has {have} of the {per_cell.shape[2]} "
                         "(example, step) rows the other runs have: give every run every "
                         "example at every step")
    labels = frame.groupby(index["example"][0])["label"]
    if (labels.nunique() > 1).any():
        bad = index["example"][1][int(np.flatnonzero(labels.nunique() > 1)[0])]
        raise UsageError(f"example {shown(bad)} has two labels in {str(table)!r}: one gold label an "
                         "example")
    gold = labels.first().to_numpy()
    wrong = [] if regression else gold[(np.mod(gold, 1) != 0) | (gold < 0)
                                       | (gold >= logits.shape[1])]
    if len(wrong):
        raise UsageError(f"label {shown(wrong[0])} in {str(table)!r} is not a class of "
                         f"0..{logits.shape[1] - 1} (one per logit column): fix the labels or "
                         "give a logit column per class")
    status = np.where(per_cell.any(axis=2), "done", "missing").astype(object)
    steps = np.asarray(index["step"][1], np.int64)
    epochs = np.full(len(steps), np.nan)
    if "epoch" in frame.columns:
        by_step = frame.groupby(index["step"][0])["epoch"]
        if (by_step.nunique() > 1).any() or not pd.api.types.is_numeric_dtype(frame["epoch"]):
            raise UsageError(f"column 'epoch' of {str(table)!r} must give each step one number")
        epochs[by_step.first().index] = by_step.first().to_numpy(np.float64)
    data = {"logits": full,
            "label": gold.astype(np.float64) if regression else gold.astype(np.int64),
            "train_loss": np.zeros((sizes[0], sizes[1], 0), np.float32),
            "status": status, "wall_time_s": np.full(sizes[:2], np.nan)}
    return xr.Dataset(
        {name: (dims, data[name]) for name, dims in VARIABLES.items()},
        coords={"seed_wi": np.asarray(index["seed_wi"][1], np.int64),
                "seed_do": np.asarray(index["seed_do"][1], np.int64),
                "example": np.asarray(index["example"][1]),
                "step": steps, "epoch": ("step", epochs),
                "class": np.arange(logits.shape[1]), "update": np.arange(1, 1)})


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
