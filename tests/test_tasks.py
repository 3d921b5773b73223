"""Tasks: the offline movie-review split, fixed subsets, local files, and bad data."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from seedgrid.config import TaskConfig
from seedgrid.errors import UsageError
from seedgrid import metrics
from seedgrid.splits import load_splits
from seedgrid.tasks import TASKS


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


GLUE_AND_SUPERGLUE = ["mnli", "mnli-mm", "qnli", "qqp", "wnli", "boolq", "cb", "wic",
                      "superglue-rte"]
COMPOSED = ["copa", "wsc", "multirc"]  # (wic too: text fields that are not the texts)


def _hub_like(task, n, rng):
    """Rows in the hub's column names of ``task``: its text fields, label, idx (synthetic)."""
    words = np.array(["red", "blue", "cat", "dog", "runs", "sleeps", "big", "small"])
    return pd.DataFrame({**{f: [" ".join(rng.choice(words, 3)) for _ in range(n)]
                            for f in task.text_fields},
                         "label": np.arange(n) % task.num_labels, "idx": 500 + np.arange(n)})


@pytest.mark.parametrize("name", GLUE_AND_SUPERGLUE)
def test_every_glue_and_superglue_task_loads_local_files_in_the_hubs_columns(tmp_path, name):
    task = TASKS[name]
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 12), ("validation", 9)):
        frame = _hub_like(task, n, rng)
        files[split] = str(tmp_path / f"{split}.jsonl")
        frame.to_json(files[split], orient="records", lines=True)
    train, val = load_splits(TaskConfig(name=name, data_files=files))
    expected = pd.read_json(files["validation"], lines=True)
    np.testing.assert_array_equal(val.labels, expected["label"])
    np.testing.assert_array_equal(val.ids, expected["idx"])
    assert len(train) == 12 and set(val.labels) == set(range(task.num_labels))
    assert len(task.label_names) == task.num_labels
    if name == "wic":  # the word leads the first sentence
        assert val.texts[0][0] == f"{expected['word'][0]}: {expected['sentence1'][0]}"
        assert val.texts[1] == expected["sentence2"].tolist()
    else:
        assert val.texts == tuple(expected[f].tolist() for f in task.text_fields)
    assert task.metric in metrics.METRICS and task.paper_majority_baseline is None


def test_macro_f1_and_three_class_accuracy_against_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 40)
    pred = rng.integers(0, 3, (6, 40))
    pred[1] = 2  # constant predictions
    pred[2] = labels  # perfect
    pred[3] = np.where(labels == 0, 1, labels)  # never predicts a class that occurs
    for row, p in enumerate(pred):
        assert metrics.macro_f1(p, labels) == pytest.approx(f1_score(labels, p, average="macro"))
        assert metrics.accuracy(p, labels) == pytest.approx(accuracy_score(labels, p))
    np.testing.assert_allclose(metrics.macro_f1(pred, labels),
                               [f1_score(labels, p, average="macro") for p in pred])
    two = np.array([0, 1, 1, 0])  # only two of the three classes occur: sklearn averages two
    assert metrics.macro_f1(np.array([0, 1, 0, 0]), two) == pytest.approx(
        f1_score(two, [0, 1, 0, 0], average="macro"))
    assert metrics.majority_baseline(labels, "macro_f1") == pytest.approx(
        f1_score(labels, np.full(40, np.bincount(labels).argmax()), average="macro"))


def test_a_three_class_cell_trains_collects_reports_and_compares(tmp_path):
    """CB (3 labels, macro-F1) end to end with the tiny model: shard, cube, report, compare."""
    from sklearn.metrics import f1_score

    import seedgrid
    from conftest import run_cli, tiny_raw, train_twice, write_toml

    rng = np.random.default_rng(2)
    files = {}
    for split, n in (("train", 30), ("validation", 18)):
        files[split] = str(tmp_path / f"cb-{split}.csv")
        _hub_like(TASKS["cb"], n, rng).to_csv(files[split], index=False)
    config = write_toml(tmp_path / "cb.toml", tiny_raw(
        task={"name": "cb", "data_files": files, "train_size": 0, "validation_size": 0},
        grid={"n_wi": 2, "n_do": 2}))
    train_twice(tmp_path, config)
    ds = seedgrid.open_cube(tmp_path / "a")
    assert ds.sizes["class"] == 3 and ds.attrs["metric"] == "macro_f1"
    pred = ds.seedgrid.predictions().isel(step=-1)
    final = ds.seedgrid.final()
    for wi in (1, 2):
        for do in (1, 2):
            p = pred.sel(seed_wi=wi, seed_do=do).values.astype(int)
            assert final.sel(seed_wi=wi, seed_do=do) == pytest.approx(
                f1_score(ds.label.values, p, average="macro"))
    report = run_cli("report", str(tmp_path / "a"), "--no-figures", "--samples", "50")
    assert report.returncode == 0, report.stderr
    compared = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", "-",
                       "--boot", "200")
    assert compared.returncode in (0, 1), compared.stderr
    import json

    result = json.loads(compared.stdout)
    assert result["difference"] == pytest.approx(0.0, abs=1e-12)  # the same cells, twice
    assert result["bootstrap"]["ci"][0] <= 0 <= result["bootstrap"]["ci"][1]


# rows as on the hub (aps/super_glue), written out by hand
SUPERGLUE_ROWS = {
    "copa": [{"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
              "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 0},
             {"premise": "The woman tolerated her friend's difficult behavior.",
              "choice1": "The woman knew her friend was going through a hard time.",
              "choice2": "The woman felt that her friend took advantage of her kindness.",
              "question": "cause", "label": 0, "idx": 1},
             {"premise": "The girl found a bug in her cereal.", "choice1": "She poured milk.",
              "choice2": "She lost her appetite.", "question": "effect", "label": 1, "idx": 2}],
    "wsc": [{"text": "Mark told Pete many lies about himself, which Pete included in his book. "
                     "He should have been more skeptical.", "span1_index": 0,
             "span1_text": "Mark", "span2_index": 13, "span2_text": "He", "label": 0, "idx": 0},
            {"text": "The mothers of Arthur and Celeste have come to the town to fetch them.",
             "span1_index": 1, "span1_text": "mothers", "span2_index": 13,
             "span2_text": "them.", "label": 0, "idx": 1},
            {"text": "Joan made sure to thank Susan for all the help she had given.",
             "span1_index": 5, "span1_text": "Susan", "span2_index": 10,
             "span2_text": "she", "label": 1, "idx": 2},
            {"text": "The trophy doesn't fit into the brown suitcase because it is too large.",
             "span1_index": 0, "span1_text": "The trophy", "span2_index": 9,
             "span2_text": "it", "label": 1, "idx": 3}],
    "multirc": [{"paragraph": "Sara went to the market. She bought apples and pears.",
                 "question": "What did Sara buy?", "answer": "Apples", "label": 1,
                 "idx": {"paragraph": 0, "question": 0, "answer": 0}},
                {"paragraph": "Sara went to the market. She bought apples and pears.",
                 "question": "What did Sara buy?", "answer": "A car", "label": 0,
                 "idx": {"paragraph": 0, "question": 0, "answer": 1}},
                {"paragraph": "Sara went to the market. She bought apples and pears.",
                 "question": "Where did Sara go?", "answer": "To the market", "label": 1,
                 "idx": {"paragraph": 0, "question": 1, "answer": 2}}],
}
COMPOSED_TEXTS = {  # what the model reads: two texts per example, written out by hand
    "copa": [("My body cast a shadow over the grass. What was the cause?",
              "1: The sun was rising. 2: The grass was cut."),
             ("The girl found a bug in her cereal. What was the effect?",
              "1: She poured milk. 2: She lost her appetite.")],
    "wsc": [("*Mark* told Pete many lies about himself, which Pete included in his book. #He# "
             "should have been more skeptical.", "Does #He# refer to *Mark*?"),
            ("The *mothers* of Arthur and Celeste have come to the town to fetch #them.#",
             "Does #them.# refer to *mothers*?"),
            ("*The trophy* doesn't fit into the brown suitcase because #it# is too large.",
             "Does #it# refer to *The trophy*?")],
    "multirc": [("Sara went to the market. She bought apples and pears.",
                 "What did Sara buy? A car"),
                ("Sara went to the market. She bought apples and pears.",
                 "Where did Sara go? To the market")],
}


@pytest.mark.parametrize("name", COMPOSED)
def test_copa_wsc_and_multirc_become_the_texts_superglue_means(tmp_path, name):
    task = TASKS[name]
    rows = pd.DataFrame(SUPERGLUE_ROWS[name])
    files = {}
    for split in ("train", "validation"):
        files[split] = str(tmp_path / f"{split}.jsonl")
        rows.to_json(files[split], orient="records", lines=True)
    train, val = load_splits(TaskConfig(name=name, data_files=files))
    pairs = list(zip(*val.texts))
    for texts in COMPOSED_TEXTS[name]:
        assert texts in pairs
    np.testing.assert_array_equal(val.labels, rows["label"])
    assert len(set(val.ids.tolist())) == len(rows)  # MultiRC's idx triples: one id each
    assert len(task.label_names) == task.num_labels and task.metric in metrics.METRICS
    from conftest import tiny_config
    from seedgrid.trainer import train_cell

    shard = train_cell(tiny_config(task={"name": name, "data_files": files, "train_size": 0,
                                         "validation_size": 0}, train={"batch_size": 2}),
                       1, 1, log=lambda _: None)  # a real (tiny) cell trains on it
    assert shard.status.item() == "done" and shard.attrs["metric"] == task.metric
    assert shard.logits.sizes["example"] == len(rows) and np.isfinite(shard.logits.values).all()
    if name == "wsc":  # a span index that is not a number: one line, naming the task
        bad = rows.assign(span1_index="first")
        bad.to_json(files["train"], orient="records", lines=True)
        with pytest.raises(UsageError, match="cannot be read as wsc"):
            load_splits(TaskConfig(name=name, data_files=files))


def test_multirc_scores_f1a_over_every_answer_as_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    labels, pred = rng.integers(0, 2, 40), rng.integers(0, 2, (5, 40))
    np.testing.assert_allclose(metrics.score_predictions(pred, labels, TASKS["multirc"].metric),
                               [f1_score(labels, p) for p in pred])


def _multirc_rows(n_questions: int, rng) -> pd.DataFrame:
    """Synthetic MultiRC rows (clearly not real data): 1-4 candidate answers per question, two
    questions per paragraph, the hub's idx triple; answer numbers run over the whole split."""
    rows = []
    for q in range(n_questions):
        for _ in range(rng.integers(1, 5)):
            rows.append({"paragraph": f"Paragraph {q // 2}: the cat sat on mat {q // 2}.",
                         "question": f"Question {q}?", "answer": f"answer {len(rows)}",
                         "label": int(rng.integers(0, 2)),
                         "idx": {"paragraph": q // 2, "question": q, "answer": len(rows)}})
    return pd.DataFrame(rows)


def test_multirc_exact_match_is_the_share_of_questions_answered_all_right():
    rng = np.random.default_rng(5)
    asked = rng.integers(0, 7, 30)  # questions in any order, of 1 to many answers
    labels, pred = rng.integers(0, 2, 30), rng.integers(0, 2, (4, 30))
    pred[0] = labels  # every question right
    expected = [np.mean([all(p[asked == q] == labels[asked == q]) for q in np.unique(asked)])
                for p in pred]  # a plain loop over questions
    np.testing.assert_allclose(metrics.score_predictions(pred.astype(float), labels, "em",
                                                         asked), expected)
    assert expected[0] == 1.0
    missing = pred.astype(float)
    missing[2, 3] = np.nan  # a run without logits: undefined, as every metric
    assert np.isnan(metrics.score_predictions(missing, labels, "em", asked)[2])
    ids = np.array(["3/7/0", "3/7/1", "3/8/2", "4/9/3"])
    np.testing.assert_array_equal(metrics.questions(ids), [0, 0, 1, 2])
    assert metrics.questions(np.array(["7", "8"])) is None
    assert metrics.questions(np.arange(4)) is None


def test_a_multirc_grid_reports_f1a_and_em_from_its_example_ids(tmp_path, tiny_toml):
    from conftest import run_cli
    from seedgrid.cube import open_cube

    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 8), ("validation", 9)):
        files[split] = str(tmp_path / f"{split}.jsonl")
        _multirc_rows(n, rng).to_json(files[split], orient="records", lines=True)
    config = tiny_toml(task={"name": "multirc", "data_files": files, "train_size": 0,
                             "validation_size": 0}, grid={"n_wi": 1, "n_do": 2})
    out = tmp_path / "grid"
    result = run_cli("submit", "--config", str(config), "--cluster", "local", "--out", str(out),
                     "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_cli("collect", str(out)).returncode == 0
    ds = open_cube(out / "cube.nc")
    val = pd.read_json(files["validation"], lines=True)
    assert ds["example"].values.tolist() == [
        f"{i['paragraph']}/{i['question']}/{i['answer']}" for i in val["idx"]]
    pred = ds.seedgrid.predictions().isel(step=-1).values.reshape(2, -1)
    right = pred == val["label"].to_numpy()
    questions = [i["question"] for i in val["idx"]]
    expected = [np.mean([right[r][[q == k for q in questions]].all() for k in set(questions)])
                for r in range(2)]  # a plain loop over the questions
    np.testing.assert_allclose(ds.seedgrid.final("em").values.reshape(-1), expected)
    assert ds.seedgrid.majority_baseline("em") == np.mean(
        [(val["label"][[q == k for q in questions]] == metrics.majority_label(val["label"])).all()
         for k in set(questions)])
    assert run_cli("report", str(out), "--no-figures").returncode == 0
    report = json.loads((out / "report/report.json").read_text())
    by_metric = report["runs"]["grid"]["macro"]["by_metric"]
    assert list(by_metric) == ["accuracy", "f1", "em"]
    assert by_metric["em"]["mean"] == pytest.approx(np.mean(expected))
    refused = run_cli("compare", str(out), str(out), "--metric", "em")
    assert refused.returncode == 2 and "compare on f1 (MultiRC's F1a)" in refused.stderr
    gate = run_cli("regress", "--baseline", str(out), "--candidate", str(out), "--metric", "em",
                   "--history", str(tmp_path / "history.jsonl"))
    assert gate.returncode == 0, gate.stdout + gate.stderr
    exported = run_cli("export", str(out), "--to", "-", "--metric", "em")
    assert exported.returncode == 0, exported.stderr
    table = pd.read_csv(io.StringIO(exported.stdout))
    np.testing.assert_allclose(table[table["update"] == table["update"].max()]["em"], expected)


def test_em_on_examples_that_are_not_multirc_is_refused(tmp_path, tiny_toml):
    from seedgrid.trainer import train_cell
    from conftest import tiny_config

    shard = train_cell(tiny_config(), 1, 1, log=lambda _: None)
    with pytest.raises(UsageError, match="these examples' ids say none"):
        shard.seedgrid.metric("em")


def test_a_validation_subset_of_multirc_keeps_whole_questions(tmp_path):
    """validation_size counts answers and stops at a question's boundary: every question kept
    has all its answers, so its exact match is scored on the whole question."""
    from seedgrid.tasks import TaskConfig

    rng = np.random.default_rng(3)
    files = {}
    for split in ("train", "validation"):
        files[split] = str(tmp_path / f"{split}.jsonl")
        _multirc_rows(12, rng).to_json(files[split], orient="records", lines=True)
    whole = pd.read_json(files["validation"], lines=True)
    answers = pd.Series([i["question"] for i in whole["idx"]]).value_counts()
    for n in (1, 5, 20, len(whole) - 1):
        _, val = load_splits(TaskConfig("multirc", validation_size=n, data_files=files))
        kept = pd.Series([i.split("/")[1] for i in val.ids]).astype(int).value_counts()
        assert all(kept[q] == answers[q] for q in kept.index)  # each question whole
        assert len(val) <= max(n, answers[kept.index].min())  # within n (one question at least)
        asked = metrics.questions(val.ids)
        pred = val.labels.copy()
        pred[0] = 1 - pred[0]  # one answer wrong: its question is wrong, the others right
        expected = 1 - 1 / len(kept)
        assert metrics.score_predictions(pred.astype(float), val.labels, "em",
                                         asked) == pytest.approx(expected)
