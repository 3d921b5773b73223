"""Tasks: the offline movie-review split, fixed subsets, local files, and bad data."""

import numpy as np
import pandas as pd
import pytest

from seedgrid.config import TaskConfig
from seedgrid.errors import UsageError
from seedgrid import metrics
from seedgrid.tasks import TASKS, load_splits


def test_mr_split_is_fixed_disjoint_and_balanced():
    train, val = load_splits(TaskConfig(name="mr"))
    assert (len(train), len(val)) == (8455, 2111)
    assert not set(train.ids) & set(val.ids)
    assert np.all(val.ids % 5 == 0) and not np.any(train.ids % 5 == 0)
    majority = max(val.labels.mean(), 1 - val.labels.mean())
    assert majority == pytest.approx(TASKS["mr"].paper_majority_baseline, abs=5e-4)
    assert metrics.majority_baseline(val.labels, "accuracy") == pytest.approx(majority)


def test_subset_is_the_same_every_time_and_balanced_although_the_file_is_sorted():
    a_train, a_val = load_splits(TaskConfig(name="mr", train_size=300, validation_size=100))
    b_train, _ = load_splits(TaskConfig(name="mr", train_size=300, validation_size=100))
    assert len(a_train) == 300 and len(a_val) == 100
    np.testing.assert_array_equal(a_train.ids, b_train.ids)
    assert np.all(np.diff(a_train.ids) > 0)  # kept in the split's own order
    assert 0.4 < a_train.labels.mean() < 0.6  # the file lists positives first


def _pairs(n, rng):
    """Synthetic sentence pairs (clearly not real data): label 1 when the second repeats the first."""
    words = ["red", "blue", "cat", "dog", "runs", "sleeps", "big", "small"]
    rows = []
    for i in range(n):
        a = " ".join(rng.choice(words, 4))
        same = i % 2
        rows.append({"idx": 1000 + i, "sentence1": a,
                     "sentence2": a if same else " ".join(rng.choice(words, 4)), "label": same})
    return pd.DataFrame(rows)


def test_local_files_give_a_pair_task_with_its_own_ids(tmp_path):
    rng = np.random.default_rng(0)
    _pairs(30, rng).to_csv(tmp_path / "train.csv", index=False)
    _pairs(10, rng).to_json(tmp_path / "val.jsonl", orient="records", lines=True)
    cfg = TaskConfig(name="rte", data_files={"train": str(tmp_path / "train.csv"),
                                             "validation": str(tmp_path / "val.jsonl")})
    train, val = load_splits(cfg)
    assert len(train.texts) == 2 and len(train) == 30 and len(val) == 10
    assert list(val.ids) == list(range(1000, 1010))


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"sentence1": ["a"], "sentence2": ["b"], "label": [5]}),
     "label 5 in the train split of task 'rte' is outside 0..1"),
    (pd.DataFrame({"sentence1": [], "sentence2": [], "label": []}),
     "the train split of task 'rte' is empty"),
    (pd.DataFrame({"sentence1": ["a"], "label": [1]}),
     "the train split of task 'rte' has no column 'sentence2'"),
])
def test_bad_data_is_a_usage_error(tmp_path, frame, message):
    frame.to_csv(tmp_path / "train.csv", index=False)
    _pairs(4, np.random.default_rng(0)).to_csv(tmp_path / "val.csv", index=False)
    cfg = TaskConfig(name="rte", data_files={"train": str(tmp_path / "train.csv"),
                                             "validation": str(tmp_path / "val.csv")})
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_splits(cfg)


def test_hub_task_without_network_says_to_use_local_files():
    with pytest.raises(UsageError, match=r"cannot load nyu-mll/glue/rte from the hub .*data_files"):
        load_splits(TaskConfig(name="rte"))
