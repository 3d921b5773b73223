"""Bad input, across every command: one line ``seedgrid: error: ...`` naming the bad value,
exit status 2, and nothing written or submitted (the files under the test's folder, and the
default ``runs/``, are the same before and after)."""

import pytest

from seedgrid.cli import main
from seedgrid.cube import collect

from conftest import REPO, tiny_raw, write_toml
from test_cube import _run

BIG = 2**63  # one past the largest seed (int64)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with a good config, a collected run (cube), a file, and cluster profiles."""
    root = tmp_path_factory.mktemp("bad")
    run, _ = _run(root / "cubes", [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    write_toml(root / "good.toml", tiny_raw())
    (root / "a_file").write_text("")
    return root


def _config(place, name, **sections):
    raw = tiny_raw()
    for section, values in sections.items():
        if values is None:
            raw.pop(section)
        else:
            raw[section] = {**raw.get(section, {}), **values}
    return str(write_toml(place / f"{name}.toml", raw))


def _profile(place, name, text):
    path = place / f"{name}.toml"
    path.write_text(text)
    return str(path)


def _toml(place, name, text):
    path = place / f"{name}.toml"
    path.write_text(text)
    return str(path)


# (case, args builder given the place, words the one line must hold)
CASES = [
    # --- a type sweep over the config's keys: numbers that are not numbers, wrong types, ranges
    ("lr inf", lambda p: ["run", "--config", _toml(p, "c1", _raw_with(p, "train", "learning_rate = inf")),
                          "--wi", "1", "--do", "1"], "learning_rate = inf is not a finite number"),
    ("lr 1e400", lambda p: ["run", "--config", _toml(p, "c2", _raw_with(p, "train", "learning_rate = 1e400")),
                            "--wi", "1", "--do", "1"], "learning_rate = inf is not a finite number"),
    ("lr nan", lambda p: ["run", "--config", _toml(p, "c3", _raw_with(p, "train", "learning_rate = nan")),
                          "--wi", "1", "--do", "1"], "learning_rate = nan is not a finite number"),
    ("weight decay inf", lambda p: ["run", "--config", _toml(p, "c4", _raw_with(p, "train", "weight_decay = inf")),
                                    "--wi", "1", "--do", "1"], "weight_decay = inf is not a finite"),
    ("init range -inf", lambda p: ["run", "--config", _toml(p, "c5", _raw_with(p, "model", "initializer_range = -inf")),
                                   "--wi", "1", "--do", "1"], "initializer_range = -inf is not a finite"),
    ("warmup nan", lambda p: ["run", "--config", _toml(p, "c6", _raw_with(p, "train", "warmup_ratio = nan")),
                              "--wi", "1", "--do", "1"], "warmup_ratio = nan is not a finite"),
    ("dropout string", lambda p: ["run", "--config", _config(p, "c7", train={"dropout": "0.1"}),
                                  "--wi", "1", "--do", "1"], "dropout = '0.1' should be a number"),
    ("epochs float", lambda p: ["run", "--config", _config(p, "c8", train={"epochs": 1.5}),
                                "--wi", "1", "--do", "1"], "epochs = 1.5 should be an integer"),
    ("epochs huge", lambda p: ["run", "--config", _config(p, "c9", train={"epochs": 10**12}),
                               "--wi", "1", "--do", "1"], "epochs = 1000000000000 is out of range"),
    ("batch 0", lambda p: ["run", "--config", _config(p, "c10", train={"batch_size": 0}),
                           "--wi", "1", "--do", "1"], "batch_size = 0 must be from 1"),
    ("evals bool", lambda p: ["run", "--config", _config(p, "c11", train={"evals_per_epoch": True}),
                              "--wi", "1", "--do", "1"], "evals_per_epoch = True should be an integer"),
    ("max length 4", lambda p: ["run", "--config", _config(p, "c12", model={"max_length": 4}),
                                "--wi", "1", "--do", "1"], "max_length = 4 must be at least 8"),
    ("accumulation > batch", lambda p: ["run", "--config", _config(p, "c13", runtime={"gradient_accumulation": 100}),
                                        "--wi", "1", "--do", "1"], "gradient_accumulation = 100 must be from 1"),
    ("n_wi 10**9", lambda p: ["submit", "--config", _config(p, "c14", grid={"n_wi": 10**9, "n_do": 2}),
                              "--out", str(p / "o14")], "n_wi = 1000000000 must be an integer from 1"),
    ("seed above int64", lambda p: ["submit", "--config", _toml(p, "c15", _grid_text(p, f"seeds_wi = [{BIG}]\nseeds_do = [1]")),
                                    "--out", str(p / "o15")], f"seed_wi = {BIG} is not an integer"),
    ("seeds not a list", lambda p: ["submit", "--config", _toml(p, "c16", _grid_text(p, 'seeds_wi = "1,2"\nseeds_do = [1]')),
                                    "--out", str(p / "o16")], "seed_wi seeds '1,2' must be a non-empty list"),
    ("seeds empty", lambda p: ["submit", "--config", _toml(p, "c17", _grid_text(p, "seeds_wi = []\nseeds_do = [1]")),
                               "--out", str(p / "o17")], "must be a non-empty list"),
    ("unknown section", lambda p: ["run", "--config", _toml(p, "c18", _raw_with(p, "train", "") + "\n[trian]\nx = 1\n"),
                                   "--wi", "1", "--do", "1"], "unknown key 'trian' in config"),
    ("data file not a string", lambda p: ["run", "--config", _toml(p, "c19", _raw_with(p, "task", "data_files = {train = 3, validation = 4}")),
                                          "--wi", "1", "--do", "1"], "data_files = {'train': 3, 'validation': 4} should be a table of strings"),
    ("data file missing", lambda p: ["submit", "--config", _config(p, "c20", task={"data_files": {"train": "nope.csv", "validation": "nope.csv"}}),
                                     "--out", str(p / "o20")], "data file 'nope.csv' (train) not found"),
    ("data file damaged", lambda p: ["submit", "--config", _config(p, "c21", task={"data_files": {"train": _bytes(p, "x.parquet", b"PAR1garbage"), "validation": _bytes(p, "x.parquet", b"PAR1garbage")}}),
                                     "--out", str(p / "o21")], "cannot be read as .parquet"),
    ("no label column", lambda p: ["submit", "--config", _config(p, "c22", task={"data_files": {"train": _bytes(p, "t.csv", b"text\na\nb\n"), "validation": _bytes(p, "t.csv", b"text\na\nb\n")}}),
                                   "--out", str(p / "o22")], "has no column 'label'"),
    ("too many evaluations", lambda p: ["submit", "--config", _config(p, "c23", train={"evals_per_epoch": 99}),
                                        "--out", str(p / "o23")], "evals_per_epoch = 99 exceeds the 5 updates per epoch"),
    ("fp16 on the CPU", lambda p: ["submit", "--config", _config(p, "c24", train={"mixed_precision": "fp16"}),
                                   "--out", str(p / "o24")], "mixed_precision = 'fp16' with cluster profile 'local'"),
    ("missing model folder", lambda p: ["submit", "--config", _config(p, "c25", model={"name": "./no/model"}),
                                        "--out", str(p / "o25")], "model path './no/model' is not a model folder"),
    ("config not UTF-8", lambda p: ["run", "--config", _bytes(p, "c26.toml", b"\xff\xfe[model]"),
                                    "--wi", "1", "--do", "1"], "cannot be read"),
    # --- command-line numbers
    ("wi above int64", lambda p: ["run", "--config", str(p / "good.toml"), "--wi", str(BIG), "--do", "1"],
     f"--wi {BIG} is out of range"),
    ("do not a number", lambda p: ["run", "--config", str(p / "good.toml"), "--wi", "1", "--do", "x"],
     "--do 'x' is not an integer"),
    ("array 0", lambda p: ["submit", "--config", str(p / "good.toml"), "--array", "0", "--out", str(p / "o30")],
     "--array 0 is out of range"),
    ("array above the cells", lambda p: ["submit", "--config", str(p / "good.toml"), "--array", "5", "--out", str(p / "o31")],
     "--array 5 must be between 1 and the 4 cells"),
    ("parallel -1", lambda p: ["submit", "--config", str(p / "good.toml"), "--parallel", "-1", "--out", str(p / "o32")],
     "--parallel -1 is out of range"),
    ("budget nan", lambda p: ["submit", "--config", str(p / "good.toml"), "--budget", "nan", "--out", str(p / "o33")],
     "--budget nan is not a finite number"),
    ("budget inf", lambda p: ["submit", "--config", str(p / "good.toml"), "--budget", "inf", "--out", str(p / "o34")],
     "--budget inf is not a finite number"),
    ("early stop budget nan", lambda p: ["submit", "--config", str(p / "good.toml"), "--early-stop", "budget=nan", "--out", str(p / "o35")],
     "budget nan"),
    ("early stop started inf", lambda p: ["submit", "--config", str(p / "good.toml"), "--early-stop", "started=inf,fraction=0.3,continue=1", "--out", str(p / "o36")],
     "started='inf' is not a number"),
    ("early stop fraction nan", lambda p: ["submit", "--config", str(p / "good.toml"), "--early-stop", "started=4,fraction=nan,continue=1", "--out", str(p / "o37")],
     "fraction=nan"),
    ("early stop before the first evaluation", lambda p: ["submit", "--config", str(p / "good.toml"), "--early-stop", "started=4,fraction=1e-300,continue=1", "--out", str(p / "o37b")],
     "fraction=1e-300 stops before the first evaluation"),
    ("train_size above the split", lambda p: ["submit", "--config", _config(p, "c37c", task={"validation_size": 100000}), "--out", str(p / "o37c")],
     "validation_size = 100000 is more than the 2111 examples of the validation split"),
    ("from-cube without budget", lambda p: ["submit", "--config", str(p / "good.toml"), "--from-cube", str(p / "cubes/run"), "--out", str(p / "o38")],
     "--from-cube goes with --budget"),
    ("profile mem lots", lambda p: ["submit", "--config", str(p / "good.toml"), "--cluster", _profile(p, "p1", 'executor = "local"\nmem_gb = "lots"\n'), "--out", str(p / "o39")],
     "mem_gb = 'lots' should be a number"),
    ("profile time negative", lambda p: ["submit", "--config", str(p / "good.toml"), "--cluster", _profile(p, "p2", 'executor = "local"\ntime_min = -5\n'), "--out", str(p / "o40")],
     "time_min = -5 must be from 1"),
    ("profile unknown key", lambda p: ["submit", "--config", str(p / "good.toml"), "--cluster", _profile(p, "p3", 'executor = "local"\ngpus = 2\n'), "--out", str(p / "o41")],
     "unknown key 'gpus'"),
    ("profile setup not strings", lambda p: ["submit", "--config", str(p / "good.toml"), "--cluster", _profile(p, "p4", 'executor = "local"\nsetup = [1, 2]\n'), "--out", str(p / "o42")],
     "setup = [1, 2] should be a list of strings"),
    ("run folder with a newline", lambda p: ["submit", "--config", str(p / "good.toml"), "--out", str(p / "bad\nname")],
     "has a control character"),
    ("run folder name too long", lambda p: ["submit", "--config", str(p / "good.toml"), "--out", str(p / ("x" * 300))],
     "more than the 255 a file system allows"),
    # --- analysis commands: numbers and output places, checked before any work
    ("compare alpha nan", lambda p: ["compare", str(p / "cubes/run"), str(p / "cubes/run"), "--alpha", "nan"],
     "--alpha nan is not a finite number"),
    ("compare min-effect nan", lambda p: ["compare", str(p / "cubes/run"), str(p / "cubes/run"), "--min-effect", "nan"],
     "--min-effect nan is not a finite number"),
    ("compare boot 0", lambda p: ["compare", str(p / "cubes/run"), str(p / "cubes/run"), "--boot", "0"],
     "--boot 0 is out of range"),
    ("compare test unknown", lambda p: ["compare", str(p / "cubes/run"), str(p / "cubes/run"), "--test", "z"],
     "--test invalid choice: 'z'"),
    ("compare json unwritable", lambda p: ["compare", str(p / "cubes/run"), str(p / "cubes/run"), "--json", "/sys/out.json"],
     "--json '/sys/out.json' is not writable"),
    ("regress max-drop nan", lambda p: ["regress", "--baseline", str(p / "cubes/run"), "--candidate", str(p / "cubes/run"), "--max-drop", "nan"],
     "--max-drop nan is not a finite number"),
    ("regress max-drop inf", lambda p: ["regress", "--baseline", str(p / "cubes/run"), "--candidate", str(p / "cubes/run"), "--max-drop", "inf"],
     "--max-drop inf is not a finite number"),
    ("regress history under a file", lambda p: ["regress", "--baseline", str(p / "cubes/run"), "--candidate", str(p / "cubes/run"), "--history", str(p / "a_file/h.jsonl")],
     "is a file; choose another --history"),
    ("report samples 0", lambda p: ["report", str(p / "cubes/run"), "--samples", "0"],
     "--samples 0 is out of range"),
    ("report seed -1", lambda p: ["report", str(p / "cubes/run"), "--seed", "-1"],
     "--seed -1 is out of range"),
    ("report out unwritable", lambda p: ["report", str(p / "cubes/run"), "--out", "/sys/report"],
     "--out '/sys/report' is not writable"),
    ("export to txt", lambda p: ["export", str(p / "cubes/run"), "--to", str(p / "x.txt")],
     "give a file name ending in .csv, .csv.gz, .parquet, .json"),
    ("export to unwritable", lambda p: ["export", str(p / "cubes/run"), "--to", "/sys/x.csv"],
     "--to '/sys/x.csv' is not writable"),
    # --- metrics: unknown, or of the other kind of task (this cube is classification)
    ("compare regression metric", lambda p: ["compare", str(p / "cubes/run"), str(p / "cubes/run"), "--metric", "pearson"],
     "'pearson' is not a metric of a classification task: choose one of accuracy"),
    ("regress unknown metric", lambda p: ["regress", "--baseline", str(p / "cubes/run"), "--candidate", str(p / "cubes/run"), "--metric", "auc"],
     "unknown metric 'auc': choose one of accuracy"),
    ("export regression metric", lambda p: ["export", str(p / "cubes/run"), "--to", str(p / "m.csv"), "--metric", "spearman"],
     "'spearman' is not a metric of a classification task"),
    ("status of a non-run", lambda p: ["status", str(p / "a_file")], "is not a run folder"),
    ("continue without early stop", lambda p: ["continue", str(p / "cubes/run")],
     "was not submitted with --early-stop"),
    ("collect of a non-run", lambda p: ["collect", str(p)], "is not a run folder"),
]


def _raw_with(place, section, line):
    """The tiny config as TOML text with ``line`` (``key = value``) in ``[section]``, for values
    like inf or nan that only TOML text can hold."""
    import tomli_w

    raw = tiny_raw()
    if line:
        raw.get(section, {}).pop(line.split("=")[0].strip(), None)
    text = tomli_w.dumps(raw)
    if section not in raw:
        return text + f"\n[{section}]\n{line}\n"
    return text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1) if line else text


def _grid_text(place, lines):
    import tomli_w

    raw = tiny_raw()
    raw.pop("grid")
    return tomli_w.dumps(raw) + f"\n[grid]\n{lines}\n"


def _bytes(place, name, data):
    path = place / name
    path.write_bytes(data)
    return str(path)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if "__pycache__" not in p.parts)


def test_there_are_at_least_40_cases():
    assert len({case for case, _, _ in CASES}) >= 40


@pytest.mark.parametrize("case, args, words", CASES, ids=[c for c, _, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(place, capsys, case, args, words):
    argv = args(place)  # writes the case's own input files first
    before, runs_before = _files(place), _files(REPO / "runs") if (REPO / "runs").exists() else []
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("seedgrid: error: "), err
    assert words in err, err
    assert _files(place) == before
    assert (_files(REPO / "runs") if (REPO / "runs").exists() else []) == runs_before
