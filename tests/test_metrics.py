"""Metrics against scikit-learn, vectorised over leading dimensions, and their edge cases."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from seedgrid import metrics

SKLEARN = {
    "accuracy": accuracy_score,
    "f1": lambda y, p: f1_score(y, p, zero_division=0),
    "mcc": matthews_corrcoef,
    "acc_f1": lambda y, p: (accuracy_score(y, p) + f1_score(y, p, zero_division=0)) / 2,
}


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_metric_matches_sklearn_over_leading_dims(name):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 50)
    pred = rng.integers(0, 2, (3, 4, 50))
    got = metrics.METRICS[name](pred, labels)
    assert got.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert got[i, j] == pytest.approx(SKLEARN[name](labels, pred[i, j]), abs=1e-12)


@pytest.mark.parametrize("name", sorted(SKLEARN))
@pytest.mark.parametrize("case", ["constant_pred_0", "constant_pred_1", "constant_labels",
                                  "perfect", "inverted", "single_example"])
def test_metric_edge_cases_match_sklearn(name, case):
    labels = np.array([0, 1, 1, 0, 1, 0, 0])
    pred = {"constant_pred_0": np.zeros(7, int), "constant_pred_1": np.ones(7, int),
            "constant_labels": np.array([1, 0, 1, 1, 0, 1, 0]), "perfect": labels,
            "inverted": 1 - labels, "single_example": labels[:1]}[case]
    if case == "constant_labels":
        labels = np.ones(7, int)
    if case == "single_example":
        labels = labels[:1]
    assert metrics.METRICS[name](pred, labels) == pytest.approx(SKLEARN[name](labels, pred),
                                                               abs=1e-12)


def test_score_from_logits_is_nan_for_missing_runs():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 30)
    logits = rng.normal(size=(2, 3, 30, 2))  # (run, step, example, class)
    logits[1, 2] = np.nan  # a diverged run's last evaluation
    got = metrics.score(logits, labels, "mcc")
    expected = np.array([[matthews_corrcoef(labels, logits[r, s].argmax(-1)) for s in range(3)]
                         for r in range(2)])
    expected[1, 2] = np.nan
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_score_ties_in_logits_pick_the_first_class():
    labels = np.array([0, 1])
    logits = np.array([[0.5, 0.5], [0.5, 0.5]])  # a tie predicts class 0, as numpy's argmax does
    assert metrics.score(logits, labels, "accuracy") == 0.5


@pytest.mark.parametrize("labels", [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1],
                                    [0] * 7 + [1] * 15])  # MRPC-like: 68% positive
@pytest.mark.parametrize("name", ["accuracy", "f1", "mcc", "acc_f1"])
def test_majority_baseline_is_the_metric_of_the_constant_majority_prediction(labels, name):
    labels = np.array(labels)
    counts = {k: int(np.sum(labels == k)) for k in sorted(set(labels.tolist()))}
    majority = min(k for k, c in counts.items() if c == max(counts.values()))  # ties: smallest
    constant = np.full(len(labels), majority)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = SKLEARN[name](labels, constant)
    assert metrics.majority_label(labels) == majority
    assert metrics.majority_baseline(labels, name) == pytest.approx(expected)


@pytest.mark.parametrize("classes", [3, 4, 7])
def test_multiclass_mcc_and_macro_f1_match_sklearn_also_from_bootstrap_counts(classes):
    """A task of your own may have any number of labels: MCC is R_K (matthews_corrcoef), and
    the bootstrap's weighted counts give the same as the metric of the resampled examples."""
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 60)
    pred = np.where(rng.random((3, 60)) < 0.6, labels, rng.integers(0, classes, (3, 60)))
    pred[2, :] = 1  # a constant run: 0, as scikit-learn
    for name, reference in [("mcc", matthews_corrcoef),
                            ("macro_f1", lambda y, p: f1_score(y, p, average="macro",
                                                               zero_division=0))]:
        got = metrics.METRICS[name](pred, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert got == pytest.approx([reference(labels, p) for p in pred], abs=1e-12)
        draws = rng.integers(0, 60, (4, 60))  # a bootstrap: examples drawn with replacement
        weights = np.stack([np.bincount(d, minlength=60) for d in draws]).astype(float)
        counted = metrics.from_class_counts(name, *metrics.weighted_class_counts(pred, labels,
                                                                                  weights))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = [[reference(labels[d], p[d]) for p in pred] for d in draws]
        assert counted == pytest.approx(np.array(expected), abs=1e-12)
