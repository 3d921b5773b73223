"""A task of your own, described in the config's [task]: its columns, its labels (names, integer
values, a count, a regression target), its metric, its data (local files here; the hub's path is
the same code after load_dataset) — trained, collected, reported, compared and exported for any
number of labels, every number checked against scikit-learn on the cube's own predictions; and
every bad description one line, exit 2, nothing written."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.metrics import f1_score, matthews_corrcoef

from seedgrid.config import config_from_dict
from seedgrid.splits import load_splits

from conftest import run_cli, tiny_raw, write_toml

QUEUES = ["billing", "bug", "howto", "other"]
WORDS = {"billing": "invoice charge refund payment", "bug": "crash error broken fails",
         "howto": "how can I set up configure", "other": "hello thanks question misc"}


def _tickets(folder, n_train=48, n_dev=24, seed=0):
    """A ticket queue's export: subject, body and queue (4 labels), as a team has it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        queue = [QUEUES[i % 4] for i in range(n)]
        rows = [{"subject": f"{rng.choice(WORDS[q].split())} ticket {i}",
                 "body": " ".join(rng.choice(WORDS[q].split(), 6)) + " please help",
                 "queue": q} for i, q in enumerate(queue)]
        pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)
    return folder


def _task(folder, **extra):
    """The [task] of the issue's shape: a name seedgrid does not ship, two text columns, the
    label column, four label names, macro-F1."""
    return {"name": "tickets", "data_files": {"train": str(folder / "train.csv"),
                                              "validation": str(folder / "dev.csv")},
            "text_fields": ["subject", "body"], "label_field": "queue", "labels": QUEUES,
            "metric": "f1_macro", **extra}


def test_a_task_of_your_own_trains_collects_reports_compares_and_exports(tmp_path):
    data = _tickets(tmp_path / "tickets")
    raw = tiny_raw()
    raw["task"] = _task(data)
    config = write_toml(tmp_path / "tickets.toml", raw)
    for run in ("a", "b"):
        done = run_cli("submit", "--config", str(config), "--cluster", "local", "--out",
                       str(tmp_path / run), "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        assert run_cli("collect", str(tmp_path / run)).returncode == 0
    cube = xr.open_dataset(tmp_path / "a/cube.nc")
    assert cube.sizes["class"] == 4 and cube.attrs["metric"] == "macro_f1"
    assert cube.label.attrs["flag_meanings"] == "billing bug howto other"
    train, validation = load_splits(config_from_dict(raw).task)
    assert list(cube.label.values) == list(validation.labels)  # queue names as their places
    assert sorted(set(validation.labels)) == [0, 1, 2, 3]
    pred = cube.logits.isel(step=-1).argmax("class")  # (seed_wi, seed_do, example)
    reported = run_cli("report", str(tmp_path / "a"), "--samples", "50")
    assert reported.returncode == 0, reported.stderr
    report = json.loads((tmp_path / "a/report/report.json").read_text())["runs"]["a"]
    expected = np.mean([f1_score(validation.labels, pred.sel(seed_wi=w, seed_do=d).values,
                                 average="macro") for w in (1, 2) for d in (1, 2)])
    assert report["macro"]["end"]["mean"] == pytest.approx(expected, abs=1e-9)
    exported = run_cli("export", str(tmp_path / "a"), "--to", str(tmp_path / "a.csv"),
                       "--metric", "mcc")
    assert exported.returncode == 0, exported.stderr
    table = pd.read_csv(tmp_path / "a.csv")
    last = table[table["update"] == table["update"].max()].set_index(["seed_wi", "seed_do"])["mcc"]
    for (w, d), value in last.items():
        assert value == pytest.approx(matthews_corrcoef(
            validation.labels, pred.sel(seed_wi=w, seed_do=d).values), abs=1e-9)
    compared = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert compared.returncode in (0, 1), compared.stderr  # the same cells: no difference
    assert compared.stdout.startswith("macro_f1 (end) on tickets: paired over 4 shared cells")
    assert "changed on 0 of 24 examples" in compared.stdout


@pytest.mark.parametrize("labels", ["integer values", "a count", "a regression target",
                                    "groups for em"])
def test_labels_as_values_a_count_a_regression_target_or_grouped(tmp_path, labels):
    frame = pd.DataFrame({"text": [f"sentence {i}" for i in range(12)],
                          "y": [7, 9, 3, 7, 9, 3, 7, 9, 3, 7, 9, 3],
                          "n": [0, 1, 2] * 4, "score": np.linspace(0, 5, 12),
                          "doc": ["d1", "d1", "d2", "d2", "d3", "d3"] * 2,
                          "right": [0, 1] * 6})
    frame.to_csv(tmp_path / "t.csv", index=False)
    files = {"train": str(tmp_path / "t.csv"), "validation": str(tmp_path / "t.csv")}
    task = {"name": "mine", "data_files": files, "text_fields": ["text"]}
    task |= {"integer values": {"label_field": "y", "labels": [7, 9, 3]},
             "a count": {"label_field": "n", "num_labels": 3, "metric": "mcc"},
             "a regression target": {"label_field": "score", "num_labels": 1,
                                     "metric": "spearman"},
             "groups for em": {"label_field": "right", "labels": [0, 1], "metric": "em",
                               "group_field": "doc"}}[labels]
    cfg = config_from_dict({**tiny_raw(), "task": task})
    train, _ = load_splits(cfg.task)
    if labels == "integer values":  # 7, 9, 3 are labels 0, 1, 2 by their place in labels
        assert list(train.labels[:3]) == [0, 1, 2]
    elif labels == "a count":
        assert list(train.labels[:3]) == [0, 1, 2]
    elif labels == "a regression target":
        assert train.labels.dtype == np.float64 and train.labels[-1] == 5.0
    else:
        from seedgrid import metrics

        asked = metrics.questions(train.ids)  # the doc of each example
        assert list(asked[:6]) == [0, 0, 1, 1, 2, 2]
        pred = np.array([0, 1, 0, 0, 0, 1] * 2)  # d1 right, d2 wrong, d3 right (twice)
        em = metrics.score_predictions(pred.astype(float), train.labels, "em", asked)
        by_loop = np.mean([all(pred[i] == train.labels[i] for i in range(12) if
                               frame.doc[i] == doc) for doc in ("d1", "d2", "d3")])
        assert em == pytest.approx(by_loop)


BAD = {
    "a label outside the declared set": ({"labels": ["billing", "bug", "howto"]},
                                         "label 'other' in the train split"),
    "a missing column": ({"text_fields": ["subject", "content"]}, "no column 'content'"),
    "an empty split": ("empty", "the validation split of task 'tickets' is empty"),
    "labels and num_labels": ({"num_labels": 4}, "not both"),
    "three text columns": ({"text_fields": ["subject", "body", "queue"]}, "one or two columns"),
    "binary F1 of four labels": ({"metric": "f1"}, "use f1_macro"),
    "em without groups": ({"metric": "em"}, "needs group_field"),
    "an unknown metric": ({"metric": "f2"}, "unknown [task] metric 'f2'"),
    "a regression metric for classes": ({"metric": "pearson"}, "is not a metric of a "
                                                                "classification task"),
    "a shipped name": ({"name": "sst2"}, "is a task seedgrid ships"),
    "no data": ({"data_files": {}}, "needs its data"),
    "repeated labels": ({"labels": ["bug", "bug", "howto", "other"]}, "distinct"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_description_is_one_line_exit_2_and_nothing_written(tmp_path, case):
    data = _tickets(tmp_path / "tickets")
    change, message = BAD[case]
    task = _task(data)
    if change == "empty":
        pd.DataFrame(columns=["subject", "body", "queue"]).to_csv(data / "dev.csv", index=False)
    else:
        task |= change
    raw = tiny_raw()
    raw["task"] = task
    out = tmp_path / "run"
    result = run_cli("submit", "--config", str(write_toml(tmp_path / "c.toml", raw)),
                     "--cluster", "local", "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert not out.exists()


def _fenced(page: str, language: str, first: str) -> str:
    """The page's ```language block whose first line starts with ``first``."""
    for block in page.split(f"```{language}\n")[1:]:
        body = block.split("```", 1)[0]
        if body.startswith(first):
            return body
    raise AssertionError(f"no ```{language} block starting {first!r}")


def test_the_worked_example_runs_as_its_page_says(tmp_path):
    """docs/your-task.md: its script, its config and its commands (on the tiny model: the
    same lines, numbers aside), and the output it shows."""
    import subprocess
    import sys

    from conftest import REPO
    from test_readme import _seedgrid, assert_shapes, example

    page = (REPO / "docs/your-task.md").read_text()
    (tmp_path / "reviews.py").write_text(_fenced(page, "python", "# reviews.py"))
    (tmp_path / "reviews.toml").write_text(_fenced(page, "toml", "[model]"))
    made = subprocess.run([sys.executable, "reviews.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    moods = pd.read_csv(tmp_path / "reviews/dev.csv")["mood"]
    assert sorted(moods.unique()) == ["awful", "bad", "good", "great"]
    printed = _seedgrid(tmp_path, "submit", "--config", "reviews.toml", "--cluster", "local",
                        "--out", "runs/reviews", "--wait", "--set", "model.name=tiny-random-bert")
    printed += _seedgrid(tmp_path, "collect", "runs/reviews")
    printed += _seedgrid(tmp_path, "report", "runs/reviews", "--samples", "500")
    assert_shapes(example("wrote runs/reviews/cube.nc"), printed)


@pytest.mark.parametrize("keep", [1, "all"])
def test_kept_weights_load_with_from_pretrained_and_give_the_cubes_final_logits(tmp_path, keep):
    """[output] keep_weights: the best N cells (by the metric at the last evaluation), or all,
    as save_pretrained folders; a pack's cells as lone models."""
    import torch
    import transformers

    from seedgrid import data, metrics
    from seedgrid.model import load_tokenizer
    from seedgrid.store import read_shard

    raw = tiny_raw(grid={"n_wi": 1, "n_do": 3}, output={"keep_weights": keep})
    config = write_toml(tmp_path / "c.toml", raw)
    out = tmp_path / "run"
    done = run_cli("submit", "--config", str(config), "--cluster", "local", "--out", str(out),
                   "--pack", "3", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    shards = {d: read_shard(out / f"shards/wi1_do{d}.nc") for d in (1, 2, 3)}
    finals = {d: float(metrics.score(s.logits.values[0, 0][:, -1], s.label.values, "accuracy"))
              for d, s in shards.items()}
    kept = sorted(p.name for p in (out / "weights").iterdir() if not p.name.startswith("."))
    best = min(finals, key=lambda d: (-finals[d], d))
    assert kept == ([f"wi1_do{best}"] if keep == 1 else ["wi1_do1", "wi1_do2", "wi1_do3"])
    cfg = config_from_dict(raw)
    _, validation = load_splits(cfg.task)
    encoded = data.encode(load_tokenizer(cfg.model), validation, cfg.model.max_length)
    for name in kept:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "weights"
                                                                                / name).eval()
        batch = data.collate(transformers.AutoTokenizer.from_pretrained(out / "weights" / name),
                             encoded, np.arange(len(encoded)), "cpu")
        batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits.numpy()
        cube = shards[int(name[-1])].logits.values[0, 0][:, -1]
        np.testing.assert_allclose(logits, cube, atol=1e-5)
