"""Task metrics, vectorised over any leading dimensions.

Every function takes predictions ``pred`` of shape ``(..., example)`` and gold ``labels`` of
shape ``(example,)`` and returns one value per leading index — e.g. a whole
(seed_wi, seed_do, step) array at once. Conventions follow scikit-learn: F1 and the Matthews
correlation are 0 where their denominator is 0 (constant predictions or labels). F1 and MCC are
binary, with class 1 positive.

:func:`score` goes from logits to the metric and gives NaN where a run has no logits (a missing
or diverged evaluation).
"""

from __future__ import annotations

import numpy as np


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
    return from_counts("mcc", *_counts(pred, labels))


def acc_f1(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """MRPC's metric in Dodge et al. 2020: the mean of accuracy and F1."""
    return (accuracy(pred, labels) + f1(pred, labels)) / 2


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "acc_f1": acc_f1}


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


def weighted_counts(pred: np.ndarray, labels: np.ndarray, weights: np.ndarray):
    """Confusion counts (tp, fp, fn, tn) of each run in ``pred`` (run, example) under each row
    of example ``weights`` (draw, example), e.g. bootstrap multiplicities: (draw, run) each."""
    pos, gold = pred == 1, labels == 1
    cells = [pos & gold, pos & ~gold, ~pos & gold, ~pos & ~gold]
    return tuple(weights @ c.T.astype(np.float64) for c in cells)


def majority_label(labels: np.ndarray) -> int:
    """The most frequent label (the smallest of those tied)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64)).argmax())


def majority_baseline(labels: np.ndarray, metric: str) -> float:
    """The metric of always predicting the majority label: where a collapsed classifier
    lands (Dodge et al.'s Table 2 gives it for the full GLUE validation sets)."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(METRICS[metric](np.full_like(labels, majority_label(labels)), labels))


def score(logits: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Metric of ``logits`` (..., example, class); NaN where any logit of a run is NaN."""
    pred = np.argmax(np.where(np.isnan(logits), 0.0, logits), axis=-1).astype(np.float64)
    return score_predictions(np.where(np.isnan(logits).any(axis=-1), np.nan, pred), labels,
                             metric)


def score_predictions(pred: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Metric of predicted classes ``pred`` (..., example); NaN where any prediction is NaN."""
    missing = np.isnan(pred).any(axis=-1)
    value = METRICS[metric](np.where(np.isnan(pred), -1, pred).astype(np.int64), labels)
    return np.where(missing, np.nan, value)
