"""Task metrics, vectorised over any leading dimensions.

Every function takes predictions ``pred`` of shape ``(..., example)`` and gold ``labels`` of
shape ``(example,)`` and returns one value per leading index — e.g. a whole
(seed_wi, seed_do, step) array at once. Conventions follow scikit-learn: F1 and the Matthews
correlation are 0 where their denominator is 0 (constant predictions or labels). F1 is binary,
with class 1 positive; ``macro_f1`` (CB) averages the F1 of each class over the classes that
occur in the labels or the predictions, as ``f1_score(average="macro")``; the Matthews
correlation takes any number of classes (``matthews_corrcoef``: Gorodkin's R_K, the binary one
for two); accuracy, macro-F1 and MCC take any number of classes.

MultiRC's question-level exact match ``em`` (the share of questions whose every candidate answer
is labelled right) also needs the question of each example: :func:`questions` reads it from the
example ids, MultiRC's own ``paragraph/question/answer``.

A regression task (STS-B: one real output per example) has ``pearson`` and ``spearman`` (the
correlation of the outputs with the gold scores, as ``scipy.stats.pearsonr``/``spearmanr``;
ties take their mean rank), 0 where the outputs are constant (a collapsed model), as MCC.
Here ``labels`` may also carry leading dimensions that broadcast against ``pred``'s (a
bootstrap resample of the examples per draw).

:func:`score` goes from logits to the metric and gives NaN where a run has no logits (a missing
or diverged evaluation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats

from seedgrid.errors import UsageError


def _counts(pred: np.ndarray, labels: np.ndarray):
    pos, gold = pred == 1, labels == 1
    tp = np.sum(pos & gold, axis=-1, dtype=np.float64)
    fp = np.sum(pos & ~gold, axis=-1, dtype=np.float64)
    fn = np.sum(~pos & gold, axis=-1, dtype=np.float64)
    tn = np.sum(~pos & ~gold, axis=-1, dtype=np.float64)
    return tp, fp, fn, tn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.mean(pred == labels, axis=-1)


def f1(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return from_counts("f1", *_counts(pred, labels))


def mcc(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The Matthews correlation of any number of classes (Gorodkin's R_K, as scikit-learn's
    ``matthews_corrcoef``); with two, the binary one."""
    tp, fp, fn = _class_counts(pred, labels)
    return from_class_counts("mcc", tp, fp, fn, np.float64(pred.shape[-1]))


def acc_f1(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """MRPC's metric in Dodge et al. 2020: the mean of accuracy and F1."""
    return (accuracy(pred, labels) + f1(pred, labels)) / 2


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    tp, fp, fn = _class_counts(pred, labels)
    return from_class_counts("macro_f1", tp, fp, fn, np.float64(pred.shape[-1]))


def _class_counts(pred: np.ndarray, labels: np.ndarray
                  ) -> tuple:
    """Per class c: (tp, fp, fn), each (..., class); classes 0..max(label, prediction)."""
    classes = np.arange(max(int(labels.max(initial=0)), int(pred.max(initial=0))) + 1)
    p, g = pred[..., None] == classes, (labels[:, None] == classes)
    tp = np.sum(p & g, axis=-2, dtype=np.float64)
    fp = np.sum(p & ~g, axis=-2, dtype=np.float64)
    fn = np.sum(~p & g, axis=-2, dtype=np.float64)
    return tp, fp, fn


def pearson(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    pred, labels = np.asarray(pred, np.float64), np.asarray(labels, np.float64)
    p = pred - pred.mean(axis=-1, keepdims=True)
    g = labels - labels.mean(axis=-1, keepdims=True)
    constant = (pred.max(axis=-1) == pred.min(axis=-1)) | (
        labels.max(axis=-1) == labels.min(axis=-1))  # exactly: no rounding residue counts
    r = _ratio(np.sum(p * g, axis=-1), np.sqrt(np.sum(p * p, axis=-1) * np.sum(g * g, axis=-1)))
    return np.where(constant, 0.0, np.clip(r, -1.0, 1.0))


def spearman(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return pearson(scipy.stats.rankdata(pred, axis=-1), scipy.stats.rankdata(labels, axis=-1))


def questions(example_ids: np.ndarray) -> np.ndarray | None:
    """The question (group) of each example, an integer per distinct one, where every example
    id is ``<group>/<id>``: MultiRC's ``paragraph/question/answer`` (the group: paragraph and
    question), or a task of your own's with a ``group_field``; None where they are not."""
    ids = pd.Series(np.asarray(example_ids).astype(str))
    if ids.empty or not ids.str.fullmatch(r".+/[^/]+").all():
        return None
    return pd.factorize(ids.str.rpartition("/")[0])[0]


def questions_for(metric: str, example_ids: np.ndarray) -> np.ndarray | None:
    """What :func:`score_predictions` needs as ``asked`` for ``metric``: the examples' questions
    for ``em``, None for every other metric; UsageError where ``em`` has no questions."""
    if metric not in BY_QUESTION:
        return None
    asked = questions(example_ids)
    if asked is None:
        raise UsageError(f"metric {metric!r} scores groups of examples (MultiRC's questions), "
                         "and these examples' ids say none (MultiRC's paragraph/question/answer, "
                         "or <group>/<id> from a task's group_field): choose another metric")
    return asked


def exact_match(pred: np.ndarray, labels: np.ndarray, asked: np.ndarray) -> np.ndarray:
    """MultiRC's EM: the share of questions (``asked``: the question of each example) whose
    every candidate answer is predicted right."""
    order = np.argsort(asked, kind="stable")
    grouped = asked[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    right = np.take(pred == labels, order, axis=-1)
    return np.logical_and.reduceat(right, starts, axis=-1).mean(axis=-1)


CLASSIFICATION = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "acc_f1": acc_f1,
                  "macro_f1": macro_f1}
REGRESSION = {"pearson": pearson, "spearman": spearman}
METRICS = {**CLASSIFICATION, **REGRESSION}
BY_QUESTION = {"em": exact_match}  # classification metrics that need each example's question


def check_metric(name: str, regression: bool, option: str = "--metric") -> None:
    """UsageError unless ``name`` is a metric of this kind of task (classification or
    regression), naming the ones that are."""
    kind = list(REGRESSION) if regression else [*CLASSIFICATION, *BY_QUESTION]
    if name in kind:
        return
    what = "a regression task (one output per example)" if regression else \
        "a classification task"
    if name in METRICS or name in BY_QUESTION:
        raise UsageError(f"{option} {name!r} is not a metric of {what}: choose one of "
                         f"{', '.join(kind)}")
    raise UsageError(f"unknown {option} {name!r}: choose one of {', '.join(kind)}")


def from_class_counts(metric: str, tp, fp, fn, total) -> np.ndarray:
    """Any metric from per-class confusion counts (..., class) — possibly weighted, e.g. by
    bootstrap multiplicities — and the (weighted) number of examples ``total`` (...). The
    binary metrics take class 1 as positive; a class absent from labels and predictions
    (all counts 0) does not count in macro-F1."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    if metric == "accuracy":
        return _ratio(tp.sum(axis=-1), np.asarray(total, dtype=np.float64) + 0 * tp[..., 0])
    if metric == "macro_f1":
        present = (tp + fp + fn) > 0
        per_class = _ratio(2 * tp, 2 * tp + fp + fn)
        return _ratio((per_class * present).sum(axis=-1), present.sum(axis=-1).astype(np.float64))
    if metric == "mcc":  # R_K from the confusion matrix's diagonal and margins
        s = np.asarray(total, dtype=np.float64) + 0 * tp[..., 0]
        true, said = tp + fn, tp + fp
        num = tp.sum(axis=-1) * s - (said * true).sum(axis=-1)
        den = np.sqrt((s**2 - (said**2).sum(axis=-1)) * (s**2 - (true**2).sum(axis=-1)))
        return _ratio(num, den)
    tp1, fp1, fn1 = (x[..., 1] if x.shape[-1] > 1 else np.zeros_like(x[..., 0])
                     for x in (tp, fp, fn))
    return from_counts(metric, tp1, fp1, fn1, total - tp1 - fp1 - fn1)


def from_counts(metric: str, tp, fp, fn, tn) -> np.ndarray:
    """A binary metric from (possibly weighted, e.g. bootstrap) confusion counts."""
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    acc = _ratio(tp + tn, tp + fp + fn + tn)
    f = _ratio(2 * tp, 2 * tp + fp + fn)
    if metric == "accuracy":
        return acc
    if metric == "f1":
        return f
    if metric == "acc_f1":
        return (acc + f) / 2
    if metric == "mcc":
        return _ratio(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    raise ValueError(f"unknown metric {metric!r}")


def weighted_class_counts(pred: np.ndarray, labels: np.ndarray, weights: np.ndarray):
    """Per-class (tp, fp, fn) of each run in ``pred`` (run, example) under each row of example
    ``weights`` (draw, example), e.g. bootstrap multiplicities: (draw, run, class) each; and
    the weighted number of examples (draw, 1). For :func:`from_class_counts`."""
    classes = np.arange(max(int(labels.max(initial=0)), int(pred.max(initial=0))) + 1)
    p, g = pred[..., None] == classes, (labels[:, None] == classes)[None]  # (run, ex, class)
    cells = [p & g, p & ~g, ~p & g]
    counts = tuple(np.einsum("de,rec->drc", weights, c.astype(np.float64)) for c in cells)
    return (*counts, weights.sum(axis=1, keepdims=True))


def majority_label(labels: np.ndarray) -> int:
    """The most frequent label (the smallest of those tied)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64)).argmax())


def majority_baseline(labels: np.ndarray, metric: str, asked: np.ndarray | None = None
                      ) -> float:
    """The metric of always predicting the majority label: where a collapsed classifier
    lands (Dodge et al.'s Table 2 gives it for the full GLUE validation sets). For a
    regression metric, a constant output: a correlation of 0. ``asked``: as for
    :func:`score_predictions`."""
    if metric in REGRESSION:
        return 0.0
    labels = np.asarray(labels, dtype=np.int64)
    guess = np.full(labels.shape, float(majority_label(labels)))
    return float(score_predictions(guess, labels, metric, asked))


def predict(logits: np.ndarray) -> np.ndarray:
    """Predictions from ``logits`` (..., example, class): the class with the largest logit, or
    the output itself where there is one (regression); NaN where any logit is NaN."""
    if logits.shape[-1] == 1:
        return logits[..., 0].astype(np.float64)
    pred = np.argmax(logits, axis=-1).astype(np.float64)  # (no copy of the logits: a big cube
    pred[np.isnan(logits).any(axis=-1)] = np.nan  # is read a chunk at a time, in little memory)
    return pred


def score(logits: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Metric of ``logits`` (..., example, class); NaN where any logit of a run is NaN."""
    return score_predictions(predict(logits), labels, metric)


def score_predictions(pred: np.ndarray, labels: np.ndarray, metric: str,
                      asked: np.ndarray | None = None) -> np.ndarray:
    """Metric of predictions ``pred`` (..., example): classes, or real outputs for a regression
    metric; NaN where any prediction is NaN. ``asked``: the question of each example, for
    ``em`` (see :func:`questions`)."""
    missing = np.isnan(pred).any(axis=-1)
    known = np.where(np.isnan(pred), -1, pred)
    if metric in BY_QUESTION:
        if asked is None:
            raise ValueError(f"metric {metric!r} needs asked= (see questions_for)")
        value = BY_QUESTION[metric](known.astype(np.int64), labels, asked)
    else:
        value = METRICS[metric](known if metric in REGRESSION else known.astype(np.int64),
                                labels)
    return np.where(missing, np.nan, value)
