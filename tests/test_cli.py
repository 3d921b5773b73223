"""What scripts read from the CLI: its version, and status as JSON."""

import contextlib
import json
import tomllib

import pytest

from seedgrid.cube import collect

from conftest import REPO, run_cli
from test_cube import _run


def test_version_is_pyprojects():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"seedgrid {version}"


def test_the_lower_bounds_are_the_oldest_set_the_tests_run_against():
    """pyproject's lower bounds and constraints/oldest.txt (what `make test VENV=.venv-oldest
    CONSTRAINTS=constraints/oldest.txt` installs) name the same versions, for every dependency."""
    import re

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needs = project["dependencies"] + project["optional-dependencies"]["train"]
    bounds = dict(re.fullmatch(r"([\w-]+)>=([\w.]+)", need).groups() for need in needs)
    pins = dict(line.split("==") for line in (REPO / "constraints/oldest.txt").read_text()
                .splitlines() if line and not line.startswith("#"))
    assert bounds == pins


def test_status_json_counts_every_cell(tmp_path):
    run, cfg = _run(tmp_path, [(1, 1), (2, 3)], n=3, shard_args={(2, 3): {"status": "diverged"}})
    result = run_cli("status", str(run), "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["config_hash"] == cfg.hash and len(got["cells"]) == 9
    assert got["counts"]["done"] == 1 and got["counts"]["diverged"] == 1
    assert got["counts"]["missing"] == 7 and sum(got["counts"].values()) == 9
    states = {(c["seed_wi"], c["seed_do"]): c["state"] for c in got["cells"]}
    assert states[2, 3] == "diverged" and states[3, 3] == "missing"
    # --json FILE, as compare's: the same JSON, written atomically
    to_file = run_cli("status", str(run), "--json", str(tmp_path / "status.json"))
    assert to_file.returncode == 0 and to_file.stdout == ""  # a note, on stderr
    assert to_file.stderr.strip() == f"wrote {tmp_path}/status.json"
    assert json.loads((tmp_path / "status.json").read_text()) == got


def test_compare_json_dash_prints_only_json_to_stdout(tmp_path):
    from test_compare import _cube

    a, b = _cube(tmp_path / "a", 0.7), _cube(tmp_path / "b", 0.7, seed=1)
    result = run_cli("compare", str(a), str(b), "--boot", "50", "--json")  # as status --json
    assert result.returncode in (0, 1), result.stderr
    assert json.loads(result.stdout) == json.loads(
        run_cli("compare", str(a), str(b), "--json", "-", "--boot", "50").stdout)
    out = json.loads(result.stdout)  # nothing but the JSON
    assert out["pairing"] == "paired" and set(out["verdict"]) >= {"significant", "test", "p"}
    assert not list(tmp_path.glob("-*")) and not (REPO / "-").exists()  # no file named '-'


def test_the_usage_line_names_the_program_as_invoked(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "seedgrid"
    if not script.exists():
        script = Path(shutil.which("seedgrid") or "")
    assert script.is_file(), "the seedgrid script is installed with the package"
    as_script = subprocess.run([str(script), "compare", "--help"], capture_output=True, text=True)
    assert as_script.stdout.startswith("usage: seedgrid compare")
    bad = subprocess.run([str(script), "compare"], capture_output=True, text=True)
    assert bad.returncode == 2 and "(see: seedgrid compare --help)" in bad.stderr
    as_module = run_cli("compare", "--help")
    assert as_module.stdout.startswith("usage: python -m seedgrid compare")
    # and so do the hints: the resubmit command of a run with missing cells
    run, _ = _run(tmp_path, [(1, 1)], n=2)
    hinted = subprocess.run([str(script), "status", str(run)], capture_output=True, text=True)
    assert f"seedgrid submit --resume {run}" in hinted.stdout, hinted.stdout
    assert "python -m seedgrid" not in hinted.stdout + hinted.stderr
    assert f"python -m seedgrid submit --resume {run}" in run_cli("status", str(run)).stdout
    nightly = subprocess.run([str(script.with_name("seedgrid-nightly")), "--help"],
                             capture_output=True, text=True)
    assert nightly.returncode == 0 and "seedgrid-nightly --config" in nightly.stdout


def test_bad_input_is_a_value_error_to_library_users():
    import pytest

    from seedgrid.config import load_config
    from seedgrid.errors import UsageError

    assert issubclass(UsageError, ValueError)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        load_config("nope")


def test_seedgrid_cluster_sets_the_default_profile(tmp_path, monkeypatch):
    from seedgrid.grid.commands import profile_named

    site = tmp_path / "mysite.toml"
    site.write_text('executor = "local"\ncpus_per_task = 3\n')
    monkeypatch.setenv("SEEDGRID_CLUSTER", str(site))
    assert profile_named(None)[1] == str(site) and profile_named(None)[0].cpus_per_task == 3
    assert profile_named("local")[1] == "local"  # --cluster wins
    monkeypatch.delenv("SEEDGRID_CLUSTER")
    assert profile_named(None)[1] == "local"
    monkeypatch.setenv("SEEDGRID_CLUSTER", str(tmp_path / "none.toml"))
    result = run_cli("submit", "--config", "demo", "--out", str(tmp_path / "run"))
    assert result.returncode == 2  # the named profile is used, and it does not exist
    assert "none.toml" in result.stderr and not (tmp_path / "run").exists()


def test_the_local_executor_warns_where_slurm_is_installed(tmp_path, monkeypatch):
    import shutil

    from seedgrid.grid import cells, local
    from seedgrid.grid.profile import Profile

    if shutil.which("sbatch") is None:  # make a machine where SLURM is installed
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "sbatch").write_text("#!/bin/sh\nexit 1\n")
        (fake / "sbatch").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    import io
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        cells.check_backend(Profile())  # bad input stays one line: no warning here
        assert err.getvalue() == ""
        local.warn_if_login_node(Profile())
    assert "warning: training on this machine (--cluster local)" in err.getvalue()
    from seedgrid.grid.commands import _warn_by_default

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _warn_by_default("local", Profile())  # chosen with --cluster local: no warning
        monkeypatch.setenv("SEEDGRID_CLUSTER", "local")
        _warn_by_default(None, Profile())  # chosen by the user's default: no warning
        monkeypatch.delenv("SEEDGRID_CLUSTER")
        monkeypatch.setenv("SLURM_JOB_ID", "12")  # inside an allocation: local is right
        local.warn_if_login_node(Profile())
    assert err.getvalue() == ""
    monkeypatch.delenv("SLURM_JOB_ID")
    with contextlib.redirect_stderr(err):
        _warn_by_default(None, Profile())  # local only because nothing was chosen
    assert "warning: training on this machine" in err.getvalue()


def test_wait_progress_is_live_on_a_terminal_and_sparse_in_a_log(tmp_path):
    import io

    from seedgrid import log
    from seedgrid.progress import Progress

    log.configure(0)
    err = io.StringIO()
    progress = Progress(625, 40, tmp_path, every_s=3600, stream=err)
    assert progress.line(25, 1, 2, 100.0).startswith(
        "  [ 100 s] 25/625 cells have shards (1 diverged), 2/40 tasks ended, about 40 min left")
    assert "left" not in progress.line(0, 0, 0, 5.0) and "left" not in progress.line(
        625, 0, 40, 5.0)
    with contextlib.redirect_stderr(err):
        for done in range(10):  # counts change every poll: a log file gets the first line only
            progress.show(done, 0, 0)
        progress.show(625, 0, 40, final=True)
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and "0/625" in lines[0] and "625/625" in lines[1]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    live = Progress(4, 1, tmp_path, stream=term)
    for done in range(4):
        live.show(done, 0, 0)
    live.show(4, 0, 1, final=True)
    assert term.getvalue().count("\r") == 5 and term.getvalue().endswith("\n")
    assert term.getvalue().count("\n") == 1  # one line, rewritten in place

    log.configure(-1)  # -q: no progress, on a terminal or in a log
    quiet_term, quiet_log = Terminal(), io.StringIO()
    with contextlib.redirect_stderr(quiet_log):
        for p in (Progress(4, 1, tmp_path, stream=quiet_term), Progress(4, 1, tmp_path)):
            p.show(4, 0, 1, final=True)
    log.configure(0)
    assert quiet_term.getvalue() == quiet_log.getvalue() == ""


def test_long_collects_and_reports_say_how_far_they_are():
    import io

    from seedgrid import log
    from seedgrid.progress import Ticker

    log.configure(0)
    quiet, chatty = io.StringIO(), io.StringIO()
    slow, fast = Ticker("collect: shards read", 625, every_s=0), \
        Ticker("collect: shards read", 625, every_s=3600)
    for k in (0, 125, 500):
        with contextlib.redirect_stderr(chatty):
            slow.tick(k)
        with contextlib.redirect_stderr(quiet):
            fast.tick(k)
    assert quiet.getvalue() == ""  # work that ends sooner than every_s says nothing
    lines = chatty.getvalue().splitlines()
    assert lines[0].startswith("collect: shards read: 0/625 after ") and "left" not in lines[0]
    assert lines[1].startswith("collect: shards read: 125/625 after ") and "left" in lines[1]


def test_importing_seedgrid_changes_nothing_outside_it(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import logging, os, sys, transformers.utils.logging as t\n"
            "import matplotlib, matplotlib.pyplot as plt, pandas as pd\n"
            "before = t.get_verbosity()\n"
            "import seedgrid, seedgrid.model, seedgrid.trainer, seedgrid.report\n"
            "from seedgrid import figures\n"
            "from seedgrid.config import ModelConfig\n"
            "seedgrid.model.load_model(ModelConfig(name='embedded:minilm'), 2, 0.1, 1)\n"
            "figures.zeta_heatmap(pd.DataFrame([[0.0, 1.0]]), sys.argv[1])\n"
            "print(os.environ.get('HDF5_USE_FILE_LOCKING'), t.get_verbosity() == before,\n"
            "      [type(h).__name__ for h in logging.getLogger('seedgrid').handlers],\n"
            "      matplotlib.get_backend(), plt.get_fignums())\n")
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    env["MPLBACKEND"] = "svg"  # a user's backend (a notebook's inline one) stays theirs
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "z.png")],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "True", "['NullHandler']", "svg", "[]"]
    assert (tmp_path / "z.png").read_bytes().startswith(b"\x89PNG")
    assert "newly initialized" not in result.stderr  # quiet during the load all the same


def test_quiet_and_verbose_choose_what_reaches_stderr_and_stdout_keeps_the_result(tmp_path):
    from conftest import tiny_raw, write_toml

    config = write_toml(tmp_path / "tiny.toml", tiny_raw())
    said = {flags: run_cli("run", "--config", str(config), "--wi", "1", "--do", str(k),
                           "--out", str(tmp_path / "run"), *flags)
            for k, flags in enumerate([(), ("-q",), ("-v",)])}
    assert all(r.returncode == 0 and r.stdout.startswith("wrote ") for r in said.values())
    default, quiet, verbose = said[()].stderr, said[("-q",)].stderr, said[("-v",)].stderr
    assert " update " in default and "loading " not in default and "on cpu" not in default
    assert quiet == ""
    assert " update " in verbose and "loading " in verbose  # transformers' INFO
    assert "config " in verbose and " on cpu, mixed precision no" in verbose  # seedgrid's DEBUG


def test_set_changes_one_setting_as_the_file_would_and_the_run_freezes_it(tmp_path):
    from seedgrid.config import config_from_dict, load_config
    from seedgrid.rundir import load_run_config
    from seedgrid.store import read_shard

    from conftest import tiny_raw, write_toml

    config = write_toml(tmp_path / "tiny.toml", tiny_raw())
    sets = ["train.learning_rate=2e-3", "model.name=tiny-random-roberta", "train.epochs=1",
            'lora.target_modules=["query", "value"]', "runtime.deterministic=false",
            'task.data_files={}']
    cfg = load_config(str(config), overrides=sets)
    # each value typed as TOML reads it, against the same config written out by hand
    raw = tiny_raw(train={"learning_rate": 2e-3, "epochs": 1},
                   model={"name": "tiny-random-roberta"}, runtime={"deterministic": False},
                   lora={"target_modules": ["query", "value"]}, task={"data_files": {}})
    assert cfg.hash == config_from_dict(raw).hash and cfg.train.learning_rate == 2e-3
    assert cfg.lora.target_modules == ["query", "value"] and cfg.runtime.deterministic is False
    out = tmp_path / "one"
    result = run_cli("run", "--config", str(config), "--wi", "1", "--do", "1", "--out", str(out),
                     "--set", "train.learning_rate=2e-3", "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    frozen = load_run_config(out)
    assert frozen.train.learning_rate == 2e-3 and frozen.train.epochs == 1
    assert read_shard(out / "shards/wi1_do1.nc").attrs["config_hash"] == frozen.hash
    assert frozen.hash == load_config(str(config), overrides=["train.learning_rate=2e-3",
                                                                "train.epochs=1"]).hash


def test_set_refuses_in_one_line_and_points_to_seedgrids_names(tmp_path):
    from conftest import tiny_raw, write_toml

    config = str(write_toml(tmp_path / "tiny.toml", tiny_raw()))
    cases = {
        "train.learnin_rate=1": "unknown key 'learnin_rate' in [train]: did you mean "
                                "'learning_rate'?",
        "trian.epochs=1": "unknown key 'trian' in config: did you mean 'train'?",
        "train.per_device_train_batch_size=8": "seedgrid's is [train] batch_size, the global "
                                               "batch",
        "lora.lora_alpha=16": "seedgrid's is [lora] alpha",
        "r=8": "--set 'r=8': give section.key=value, e.g. train.learning_rate=3e-5 (seedgrid's "
               "'r' is [lora] rank)",
        "train.epochs": "give section.key=value",
        "warmup_ratio=0.06": "(seedgrid's 'warmup_ratio' is [train] warmup_ratio)",
        "train.epochs=two": "[train] epochs = 'two' should be an integer",
        "train.learning_rate=inf": "is not a finite number",
        "train.data_seed=3": "seedgrid's is [grid] seeds_do (seed_do: the order of the training",
        "seed=42": "(seedgrid's 'seed' is [grid] seeds_wi (seed_wi: the new weights",
        "train.max_steps=100": "seedgrid's is [train] epochs (whole epochs",
        "train.eval_steps=50": "seedgrid's is [train] evals_per_epoch",
        "train.lr_scheduler_type=cosine": "seedgrid's is the schedule, linear with warmup",
        "train.optim=adafactor": "seedgrid's is [train] weight_decay: seedgrid's optimizer is "
                                 "AdamW",
        "train.learning_rate=1e-5,x": "run trains one cell of one config: a sweep",
    }
    for item, message in cases.items():
        result = run_cli("run", "--config", config, "--wi", "1", "--do", "1", "--out",
                         str(tmp_path / "never"), "--set", item)
        assert result.returncode == 2 and message in result.stderr, (item, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    resumed = run_cli("submit", "--resume", str(tmp_path / "never"), "--set", "train.epochs=2")
    assert resumed.returncode == 2 and "give --config too" in resumed.stderr
    assert not (tmp_path / "never").exists()


def test_submit_dry_run_says_cells_layout_and_asks_and_writes_nothing(tmp_path):
    from conftest import tiny_raw, write_toml

    config = write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 3, "n_do": 4}))
    profile = write_toml(tmp_path / "site.toml", {
        "executor": "slurm", "partition": "gpu", "time_min": 90, "mem_gb": 12,
        "cpus_per_task": 6, "gpus_per_cell": 1, "account": "ml", "qos": "low"})
    out = tmp_path / "run"
    result = run_cli("submit", "--config", str(config), "--cluster", str(profile), "--out",
                     str(out), "--array", "5", "--dry-run", "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"dry run: would submit 12 of 12 cells of {out} (a new run "
                               "folder; config ")
    assert "5 task(s) of up to 3 cell(s)" in lines[0] and lines[0].endswith("nothing written")
    tasks = [line for line in lines if line.startswith("  task ")]
    cells = [c for line in tasks for c in line.split(": ", 1)[1].split(", ")]
    assert len(tasks) == 5 and sorted(cells) == sorted(f"wi={w} do={d}" for w in (1, 2, 3)
                                                       for d in (1, 2, 3, 4))
    assert "  each task asks: 90 min, 12.0 GB of memory, 6 CPU(s), 1 GPU(s)" in lines
    (params,) = [line for line in lines if line.startswith("  submitit parameters: ")]
    for shown in ("timeout_min=90", "slurm_partition='gpu'", "gpus_per_node=1",
                  "slurm_additional_parameters={'account': 'ml', 'qos': 'low'}"):
        assert shown in params
    assert not out.exists()


def test_the_live_progress_line_fits_the_terminal(tmp_path, monkeypatch):
    import io

    from seedgrid import log
    from seedgrid.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log.configure(0)
    for columns in (40, 200):
        monkeypatch.setenv("COLUMNS", str(columns))
        term = Terminal()
        live = Progress(625, 40, tmp_path / ("x" * 60), stream=term)
        live.show(25, 1, 2)
        shown = term.getvalue().removeprefix("\r\033[K")
        full = live.line(25, 1, 2, 0.0)
        assert len(shown) <= columns - 1
        assert shown == full if len(full) < columns else shown.endswith("…")
        live.show(625, 1, 40, final=True)  # the last line stays whole: it is kept
        assert term.getvalue().endswith(live.line(625, 1, 40, 0.0)[10:] + "\n")


def test_streams_results_on_stdout_notes_and_warnings_on_stderr(tmp_path):
    from test_compare import _cube

    _cube(tmp_path / "a", 0.7, seed=0, n=2)
    _cube(tmp_path / "b", 0.7, seed=1, n=2)
    compared = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json",
                       str(tmp_path / "c.json"))
    assert "warning" not in compared.stdout and "wrote" not in compared.stdout
    assert f"wrote {tmp_path / 'c.json'}" in compared.stderr
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["seedgrid_compare"] == 1 and result["warnings"]  # (4 runs a side: some)
    for warning in result["warnings"]:
        assert f"seedgrid: warning: {warning}" in compared.stderr
    silent = run_cli("-qq", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json",
                     str(tmp_path / "c.json"))
    assert silent.stderr == "" and silent.stdout == compared.stdout
    exported = run_cli("export", str(tmp_path / "a"), "--to", "-")
    assert exported.returncode == 0 and exported.stderr == ""
    rows = exported.stdout.splitlines()
    assert rows[0].startswith("seed_wi,seed_do,") and len(rows) > 1
    status = run_cli("status", "--json", str(tmp_path / "a"))  # the folder, not a file name
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["seedgrid_status"] == 1


def test_profiles_lists_what_cluster_finds_and_sites_pass_any_sbatch_option(tmp_path,
                                                                          monkeypatch):
    from seedgrid.grid.profile import PACKAGED, load_profile

    from conftest import tiny_raw, write_toml

    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "site.toml").write_text(
        'executor = "slurm"\nreservation = "ml-week"\nexclude = "gpu[07-08]"\n'
        'sbatch = {gres = "gpu:a100:1", mail_type = "FAIL"}\n')
    (tmp_path / "cluster" / "example-gpu.toml").write_text('executor = "local"\n')
    (tmp_path / "cluster" / "clash.toml").write_text(
        'executor = "slurm"\nslurm_additional_parameters = {cpus-per-task = "4"}\n')
    listed = run_cli("profiles", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[:3] for line in listed.stdout.splitlines()]
    assert rows == [
        ["clash", "?", str(tmp_path / "cluster/clash.toml")],
        ["example-gpu", "local", str(tmp_path / "cluster/example-gpu.toml")],
        ["site", "slurm", str(tmp_path / "cluster/site.toml")],
        ["example-gpu", "slurm", str(PACKAGED / "example-gpu.toml")],
        ["local", "local", str(PACKAGED / "local.toml")]]
    assert "(hidden by the one above)" in listed.stdout.splitlines()[3]
    assert "dev" not in listed.stdout  # the tests' profile is not the users'
    assert "sbatch option 'cpus-per-task' is seedgrid's to set: use the profile's " \
           "cpus_per_task instead" in listed.stdout
    site = load_profile(str(tmp_path / "cluster/site.toml"))
    assert site.name == str(tmp_path / "cluster/site.toml")  # a file is named by its path,
    monkeypatch.chdir(tmp_path / "cluster")  # resolved: the hints repeat it from any folder
    assert load_profile("site.toml").name == str(tmp_path / "cluster/site.toml")
    monkeypatch.chdir(tmp_path)
    assert load_profile("site").name == "site"  # one found by its name, by that name
    from seedgrid.grid import jobs

    assert jobs.parameters(site, tmp_path / "run", 4)["slurm_additional_parameters"] == {
        "reservation": "ml-week", "exclude": "gpu[07-08]", "gres": "gpu:a100:1",
        "mail_type": "FAIL"}
    config = write_toml(tmp_path / "tiny.toml", tiny_raw())
    clash = run_cli("submit", "--config", str(config), "--cluster", "clash", "--dry-run",
                    cwd=tmp_path)
    assert clash.returncode == 2 and "is seedgrid's to set" in clash.stderr


def test_a_sweep_submits_one_grid_per_value_and_cluster_settings_hold_for_one_submission(
        tmp_path):
    """--set KEY=a,b: one grid per value, each in <out>/KEY=a with its own frozen config (as
    hydra's launcher); --set cluster.KEY=VALUE: the profile's KEY for this submission only,
    recorded in jobs.json; both said before anything is written when wrong."""
    from conftest import tiny_raw, write_toml
    from seedgrid.rundir import load_run_config

    config = str(write_toml(tmp_path / "tiny.toml", tiny_raw(grid={"n_wi": 1, "n_do": 1})))
    out = tmp_path / "sweep"
    result = run_cli("submit", "--config", config, "--cluster", "local", "--out", str(out),
                     "--set", "train.learning_rate=1e-3,2e-3", "--set", "cluster.time_min=7",
                     "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["train.learning_rate=1e-3", "train.learning_rate=2e-3"]
    rates = [load_run_config(out / f).train.learning_rate for f in folders]
    assert rates == [1e-3, 2e-3]
    for folder in folders:
        last = json.loads((out / folder / "jobs.json").read_text())["submissions"][-1]
        assert last["cluster_set"] == ["time_min=7"]
        assert (out / folder / "shards/wi1_do1.nc").exists()
    assert "compare two of them: python -m seedgrid compare" in result.stdout
    bad = run_cli("submit", "--config", config, "--cluster", "local", "--out",
                  str(tmp_path / "never"), "--set", "cluster.time_mn=7")
    assert bad.returncode == 2 and "did you mean 'time_min'?" in bad.stderr, bad.stderr
    assert not (tmp_path / "never").exists()


def test_json_where_a_command_prints_a_result_and_compare_json_keeps_its_runs(tmp_path):
    """--json on collect, regress, presets, profiles (as status and compare): alone, the JSON
    alone on stdout; `compare --json A B` reads A and B as the runs."""
    from seedgrid.config import preset_names

    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collected = run_cli("collect", str(run), "--json")
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout)["counts"]["done"] == 4
    compared = run_cli("compare", "--json", str(run), str(run))
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout)["a"] == str(run)
    gated = run_cli("regress", "--baseline", str(run), "--candidate", str(run), "--history",
                    str(tmp_path / "h.jsonl"), "--json", str(tmp_path / "night.json"))
    assert gated.returncode == 0 and gated.stdout.startswith("accuracy: candidate")
    assert json.loads((tmp_path / "night.json").read_text())["regression"] is False
    listed = json.loads(run_cli("presets", "--json").stdout)
    assert [p["name"] for p in listed] == preset_names()
    assert {p["name"] for p in json.loads(run_cli("profiles", "--json").stdout)} >= {"local"}


def test_presets_name_prints_the_presets_toml_to_start_from(tmp_path):
    from seedgrid.config import load_config

    shown = run_cli("presets", "dodge2020-rte")
    assert shown.returncode == 0
    assert shown.stdout == (REPO / "seedgrid/presets/dodge2020-rte.toml").read_text()
    (tmp_path / "mine.toml").write_text(shown.stdout)
    assert load_config(str(tmp_path / "mine.toml")).hash == load_config("dodge2020-rte").hash
    wrong = run_cli("presets", "dodge2020-rt")
    assert wrong.returncode == 2 and "did you mean 'dodge2020-rte'?" in wrong.stderr


@pytest.mark.parametrize("suffix", [".json", ".csv.gz"])
def test_export_writes_json_and_compressed_csv_with_the_csvs_rows(tmp_path, suffix):
    import pandas as pd

    run, _ = _run(tmp_path, [(1, 1), (1, 2)], n=2)
    collect(run)
    assert run_cli("export", str(run), "--to", str(tmp_path / "t.csv")).returncode == 0
    result = run_cli("export", str(run), "--to", str(tmp_path / f"t{suffix}"))
    assert result.returncode == 0, result.stderr
    csv = pd.read_csv(tmp_path / "t.csv")
    other = pd.read_json(tmp_path / "t.json") if suffix == ".json" else \
        pd.read_csv(tmp_path / "t.csv.gz")
    pd.testing.assert_frame_equal(other[csv.columns], csv, check_dtype=False)


def test_shell_completion_completes_commands_and_options():
    import subprocess

    script = run_cli("completion", "bash").stdout
    completed = subprocess.run(
        ["bash", "-c", script + '\nCOMP_WORDS=(seedgrid rep); COMP_CWORD=1; _shtab_seedgrid; '
         'echo "${COMPREPLY[@]}"; COMP_WORDS=(seedgrid compare --te); COMP_CWORD=2; '
         '_shtab_seedgrid; echo "${COMPREPLY[@]}"'], capture_output=True, text=True, timeout=60)
    assert completed.stdout.split("\n")[:2] == ["report", "--test"], completed.stderr
    assert run_cli("completion", "zsh").stdout.startswith("#compdef seedgrid")


@pytest.mark.parametrize(("sbatch", "said"), [
    ('{"--time" = "10"}', "sbatch option '--time' is seedgrid's to set: use the profile's time_min"),
    ('{Job_Name = "x"}', "sbatch option 'Job_Name' is seedgrid's to set"),
    ('{" array" = "1-9"}', "sbatch option ' array' is seedgrid's to set: use the profile's "
                           "(--array, --parallel)"),
    ('{gpus-per-node = "8"}', "is seedgrid's to set: use the profile's gpus_per_cell"),
    ('{t = "10"}', "sbatch option 't' is not an option name"),
    ('{"gres gpu" = "1"}', "sbatch option 'gres gpu' is not an option name"),
    ('{comment = "a\\nrm -rf ~"}', "sbatch option comment = 'a\\nrm -rf ~' must be one line"),
    ('{comment = 3}', "sbatch"),
])
def test_a_profiles_sbatch_options_are_names_and_one_line_values_not_seedgrids_own(
        tmp_path, sbatch, said):
    """Each sbatch entry is one #SBATCH line: no spelling of seedgrid's own options, no short
    or made-up names, no value that would start a second line of the job script."""
    from seedgrid.errors import UsageError
    from seedgrid.grid.profile import load_profile

    path = tmp_path / "site.toml"
    path.write_text(f'executor = "slurm"\nsbatch = {sbatch}\n')
    with pytest.raises(UsageError) as e:
        load_profile(str(path))
    assert said in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError):  # the same rule for --set cluster.sbatch=...
        load_profile("local", [f"sbatch={sbatch}"])
