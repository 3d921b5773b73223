"""`seedgrid report` end to end on real cubes: report.json against independent computations,
report.md, the figures, several runs, degenerate grids and bad input."""

import json

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import accuracy_score

import seedgrid
from seedgrid.cli import main
from seedgrid.cube import collect

from test_cube import _run

PNG = b"\x89PNG\r\n\x1a\n"


def _report(tmp_path, cells, n=3, name="run", extra=()):
    run, _ = _run(tmp_path / name, cells, n=n)
    collect(run)
    main(["report", str(run), *extra])
    return run, json.loads((run / "report" / "report.json").read_text())


def test_report_numbers_against_independent_computations(tmp_path, capsys):
    cells = [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3) if (wi, do) != (3, 3)]
    run, report = _report(tmp_path, cells)
    printed = capsys.readouterr().out
    r = report["runs"]["run"]
    ds = seedgrid.open_cube(run)
    label, logits = ds.label.values, ds.logits.values  # (wi, do, example, step, class)
    grid = np.full((3, 3), np.nan)  # accuracy at the end, by scikit-learn
    for wi, do in cells:
        grid[wi - 1, do - 1] = accuracy_score(label, logits[wi - 1, do - 1, :, -1].argmax(-1))
    present = grid[~np.isnan(grid)]
    assert r["status"] == {"done": 8, "failed": 0, "diverged": 0, "stopped": 0, "missing": 1,
                           "unused": 0}
    assert r["macro"]["end"]["n"] == 8
    assert r["macro"]["end"]["mean"] == pytest.approx(present.mean())
    assert r["macro"]["end"]["var"] == pytest.approx(present.var())
    assert r["macro"]["decoupled_std"]["end"]["wi"] == pytest.approx(
        np.mean([np.nanstd(row) for row in grid]))
    rows = grid.copy()
    best_wi = int(np.argmax(np.nanmean(rows, axis=1)))
    worst_wi = int(np.argmin(np.nanmean(rows, axis=1)))
    a, b = rows[best_wi], rows[worst_wi]
    assert r["macro"]["anova"]["seed_wi"]["p"] == pytest.approx(
        scipy.stats.f_oneway(a[~np.isnan(a)], b[~np.isnan(b)]).pvalue)
    # the best found when evaluating at every training evaluation: steps 5 and 10 (not 0)
    every = np.nanmax([[accuracy_score(label, logits[wi - 1, do - 1, :, s].argmax(-1))
                        for s in (1, 2)] for wi, do in cells])
    assert r["regimes"]["every"]["best_found"] == pytest.approx(every)
    assert len(r["regimes"]["end"]["expected_max"]) == 8
    assert r["regimes"]["end"]["expected_max"][-1] <= r["macro"]["end"]["max"] + 1e-12
    pred = logits[..., -1, :].argmax(-1)
    runs = np.array([pred[wi - 1, do - 1] for wi, do in cells])
    assert r["micro"]["grid"]["con"] == pytest.approx(np.mean((runs == runs[0]).all(axis=0)))
    assert r["micro"]["grid"]["ccon"] == pytest.approx(np.mean((runs == label).all(axis=0)))
    assert [x["seed_wi"] for x in r["micro"]["per_wi"]] == [1, 2, 3]
    assert [x["runs"] for x in r["micro"]["per_wi"]] == [3, 3, 2]
    third = runs[[i for i, c in enumerate(cells) if c[0] == 3]]  # WI 3's two runs, by hand
    assert r["micro"]["per_wi"][2]["con"] == pytest.approx(np.mean((third == third[0]).all(0)))
    for kind, axis in (("seed_wi", 1), ("seed_do", 0)):  # ANOVA's assumptions, by scipy
        means = np.nanmean(grid, axis=axis)
        a, b = (np.take(grid, int(f(means)), axis=1 - axis) for f in (np.argmax, np.argmin))
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        assert r["macro"]["anova"][kind]["levene_p"] == pytest.approx(
            scipy.stats.levene(a, b).pvalue)
    every_end = grid[~np.isnan(grid)]
    band = np.array(r["regimes"]["end"]["expected_max_band"])  # Fig. 1: within min and max
    assert band.min() >= every_end.min() - 1e-12 and band.max() <= every_end.max() + 1e-12
    assert "Levene p" in (run / "report" / "report.md").read_text()
    es = r["early_stopping"]
    assert es["n_evals"] == 2 and [b["budget"] for b in es["best_per_budget"]] == list(range(1, 31))
    for b in es["best_per_budget"]:
        assert b["continued"] * 2 + b["stopped"] * b["evaluations"] == b["budget"] * 2
    md = (run / "report" / "report.md").read_text()
    assert "Table 3" in md and "CCON" in md and "relative error reduction" in md
    for png in ("fig1_expected_max", "fig2_grid", "fig3_best_worst", "fig4_curves",
                "fig5_spearman", "fig6_early_stopping", "fig7_early_stopping_gain",
                "fig8_std", "fig9_pearson", "consistency"):
        path = run / "report" / "run" / f"{png}.png"
        assert path.read_bytes().startswith(PNG), png
        assert f"(run/{png}.png)" in md
    assert "wrote" in printed and "CON" in printed
    assert not list((run / "report").glob(".*tmp"))


def test_report_of_a_single_cell(tmp_path):
    run, report = _report(tmp_path, [(1, 1)], n=1)  # one seed of each kind
    r = report["runs"]["run"]
    assert r["macro"]["end"]["n"] == 1 and r["macro"]["end"]["std"] == 0.0
    assert r["micro"]["grid"]["agreement"] is None  # no pair of runs: no agreement, not NaN
    assert r["macro"]["permutation"]["seed_wi"]["p"] == 1.0
    assert (run / "report" / "report.md").exists()


def test_report_over_several_runs_compares_wi_seeds(tmp_path, capsys):
    runs = []
    for name in ("a", "b"):
        run, _ = _run(tmp_path / name, [(wi, do) for wi in (1, 2, 3) for do in (1, 2)], n=3)
        collect(run)
        runs.append(str(run.rename(tmp_path / name / f"task_{name}")))
    out = tmp_path / "both"
    main(["report", *runs, "--out", str(out), "--no-figures", "--samples", "200"])
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"task_a", "task_b"}
    shared = report["across"]["seeds_across_tasks"]
    assert shared["seeds_wi"] == [1, 2, 3]
    for task in ("task_a", "task_b"):
        means = [np.mean([accuracy_score(
            ds.label.values, ds.logits.sel(seed_wi=wi, seed_do=do).isel(step=-1).values.argmax(-1))
            for do in (1, 2)]) for wi in (1, 2, 3)
            for ds in [seedgrid.open_cube(tmp_path / task[-1] / task)]]
        np.testing.assert_allclose(shared["mean"][task], means)
        np.testing.assert_allclose(shared["rank"][task], scipy.stats.rankdata(-np.array(means)))
    sizes = report["across"]["by_training_size"]  # Bui Fig. 2: one row per run
    assert [row["n_train"] for row in sizes] == [40, 40]
    ds = seedgrid.open_cube(runs[0])
    pred = ds.logits.sel(seed_do=[1, 2]).isel(step=-1).values.argmax(-1).reshape(6, -1)
    accuracy = [accuracy_score(ds.label.values, p) for p in pred]
    assert sizes[0]["var"] == pytest.approx(np.var(accuracy))
    assert sizes[0]["var_accuracy"] == pytest.approx(np.var(accuracy))
    from sklearn.metrics import f1_score

    assert sizes[0]["var_f1"] == pytest.approx(np.var([f1_score(ds.label.values, p)
                                                       for p in pred]))
    assert sizes[0]["con"] == pytest.approx(np.mean((pred == pred[0]).all(axis=0)))
    assert not list(out.glob("*.png"))


def test_report_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert "no cube at" in capsys.readouterr().err
    run, _ = _run(tmp_path, [(1, 1)], n=1)
    collect(run)
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(run), "--samples", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--samples 0" in err and len(err.strip().splitlines()) == 1
    assert not (run / "report").exists()


def test_reproduction_programs_print_the_papers_tables(tmp_path):
    import subprocess
    import sys

    runs = []
    for name in ("a", "b"):
        run, _ = _run(tmp_path / name, [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)], n=3)
        collect(run)
        runs.append(str(run))
    dodge = subprocess.run([sys.executable, "-m", "seedgrid.papers.dodge2020", *runs,
                            "--samples", "300"], capture_output=True, text=True, timeout=300)
    assert dodge.returncode == 0, dodge.stderr
    lines = dodge.stdout.splitlines()
    spread = seedgrid.open_cube(runs[0]).seedgrid.decoupled_std()
    total = next(line for line in lines if line.startswith("Total"))
    assert total.split()[1] == f"{spread['total']:.4f}"
    for heading in ("Table 1.", "Fig. 1.", "Table 3.", "Table 4.", "§4.3.", "Fig. 7."):
        assert any(line.startswith(heading) for line in lines), heading
    bui = subprocess.run([sys.executable, "-m", "seedgrid.papers.bui2025", *runs],
                         capture_output=True, text=True, timeout=300)
    assert bui.returncode == 0, bui.stderr
    con = seedgrid.open_cube(runs[0]).seedgrid.consistency().con.item()
    assert f"{con:.4f}" in bui.stdout and "Fig. 2." in bui.stdout
    for heading in ("Figs. 2 and 4.", "Macro: accuracy and F1", "Fig. 3. Normalised zeta"):
        assert heading in bui.stdout, heading


def test_report_of_a_1x3_grid_of_constant_predictions(tmp_path):
    # every run predicts class 0 for every example: no spread, MCC-like degenerate statistics
    from seedgrid.rundir import write_config
    from seedgrid.rundir import shard_path
    from seedgrid.store import cell_dataset, write_atomic

    from conftest import tiny_config

    cfg = tiny_config(grid={"n_wi": 1, "n_do": 3})
    run = tmp_path / "constant"
    write_config(run, cfg)
    labels = np.arange(20) % 2
    logits = np.zeros((3, 20, 2))
    logits[..., 0] = 1.0
    for do in (1, 2, 3):
        write_atomic(cell_dataset(seed_wi=1, seed_do=do, logits=logits, labels=labels,
                                  example_ids=np.arange(20), steps=np.array([0, 5, 10]),
                                  epochs=np.array([0, 0.5, 1.0]), train_loss=np.ones(10),
                                  status="done", wall_time_s=1.0,
                                  attrs={"task": "mr", "metric": "accuracy", "model": "tiny",
                                         "majority_baseline": 0.5, "config_hash": cfg.hash,
                                         "config": cfg.to_toml(), "n_train": 40}),
                     shard_path(run, 1, do))
    collect(run)
    main(["report", str(run), "--samples", "300"])
    r = json.loads((run / "report" / "report.json").read_text())["runs"]["constant"]
    assert r["macro"]["end"] == {"n": 3, "mean": 0.5, "std": 0.0, "var": 0.0, "min": 0.5,
                                 "max": 0.5}
    assert r["micro"]["grid"] == {"runs": 3, "con": 1.0, "ccon": 0.5, "agreement": 1.0}
    # one WI row of 3 runs; each DO column holds one run: undefined, not 1.0
    assert r["micro"]["per_wi"] == [{"seed_wi": 1, "runs": 3, "con": 1.0, "ccon": 0.5,
                                     "agreement": 1.0}]
    assert all(x["runs"] == 1 and x["con"] is x["ccon"] is x["agreement"] is None
               for x in r["micro"]["per_do"])
    assert r["macro"]["diverged"]["count"] == 3  # at the majority baseline: collapsed
    assert r["macro"]["permutation"]["seed_do"]["p"] == 1.0
    assert r["macro"]["anova"]["seed_do"]["f"] is None  # no variance: undefined, not a number
    assert r["dynamics"]["spearman"][0][1] is None  # constant scores: no correlation
    assert all(b["expected"] == 0.5 for b in r["early_stopping"]["best_per_budget"])
    assert (run / "report" / "constant" / "fig3_best_worst.png").exists()


def test_a_report_of_a_cube_file_goes_beside_it(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2)], n=2)
    collect(run)
    main(["report", str(run / "cube.nc"), "--samples", "100", "--no-figures"])
    assert json.loads((run / "report" / "report.json").read_text())["runs"]["run"]["task"] == "mr"


def test_one_report_makes_one_pass_over_each_cubes_logits(tmp_path, monkeypatch):
    """The report computes each cube's predictions (the pass over its logits) once and hands
    them, the metric and the best so far to every analysis and figure; outside a report the
    accessor computes afresh, never from a stale cache."""
    from seedgrid import accessor, report

    passes = []
    real = accessor._predictions
    monkeypatch.setattr(accessor, "_predictions",
                        lambda ds, status: passes.append(ds.attrs["task"]) or real(ds, status))
    runs = []
    for name in ("a", "b"):
        run, _ = _run(tmp_path / name, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
        collect(run)
        runs.append(run.rename(tmp_path / name / f"run_{name}"))
    report.write(runs, tmp_path / "out", samples=50)
    assert len(passes) == 2  # one per cube, figures and cross-run numbers included
    ds = seedgrid.open_cube(runs[0]).load()
    ds.seedgrid.metric(), ds.seedgrid.metric()
    assert len(passes) == 4  # outside a report: fresh each time


def test_a_report_of_a_cube_opened_lazily_gives_the_same_numbers_in_a_few_passes(
        tmp_path, monkeypatch):
    """On a dask cube (larger than memory) the report keeps what is small (each metric, the
    predictions at the last evaluation), computed, so it reads the logits a few times, not once
    per analysis; its numbers are the eager report's."""
    from seedgrid import accessor, report

    run, _ = _run(tmp_path, [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)])
    collect(run)
    eager = report.analyse(seedgrid.open_cube(run), samples=200)
    chunks_read = []
    real = accessor._predict
    monkeypatch.setattr(accessor, "_predict", lambda logits, *a, **k: chunks_read.append(
        logits.shape) or real(logits, *a, **k))
    lazy = report.analyse(seedgrid.open_cube(run, chunks="rows"), samples=200)
    assert json.dumps(lazy, sort_keys=True) == json.dumps(eager, sort_keys=True)
    passes = sum(1 for shape in chunks_read if shape[0] == 1 and np.prod(shape)) / 3
    assert passes == 3  # the task's metric (= accuracy), F1, the last evaluation's predictions
    main(["report", str(run), "--chunks", "rows", "--samples", "200", "--out",
          str(tmp_path / "lazy")])  # the command too, figures included
    written = json.loads((tmp_path / "lazy/report.json").read_text())["runs"]["run"]
    assert written["macro"] == json.loads(json.dumps(eager))["macro"]
    assert (tmp_path / "lazy/run/consistency.png").exists()


@pytest.mark.parametrize("wi, do, said", [(0.6, 0.1, "WI dominates"), (0.05, 0.3, "DO dominates"),
                                          (0.3, 0.25, "neither dominates")])
def test_the_report_says_which_seed_matters_more_from_its_numbers(wi, do, said):
    from seedgrid.report_markdown import conclusion

    anova = {k: {"best": 3, "worst": 7, "p": p} for k, p in (("seed_wi", 0.001),
                                                               ("seed_do", 0.4))}
    text = conclusion({"variance_shares": {"wi": wi, "do": do, "rest": 1 - wi - do,
                                           "runs": 625}, "anova": anova}, "accuracy")
    assert f"WI seeds explain {100 * wi:.0f}% of the variance of the final accuracy" in text
    assert f"the DO seeds {100 * do:.0f}%" in text and said in text
    assert "the best and worst WI seeds (3, 7) differ in mean (ANOVA p = 0.001)" in text
    assert "the best and worst DO seeds (3, 7) do not differ significantly" in text


def test_a_run_folder_named_with_a_bar_blanks_and_brackets_keeps_report_md_whole(tmp_path):
    """report.md's tables keep a run named `p|q (x)` in one cell, and its figure links lead to
    the files (percent-encoded)."""
    import re
    import urllib.parse

    from test_compare import _cube

    runs = [_cube(tmp_path / "p|q (x)", 0.7, seed=1), _cube(tmp_path / "plain", 0.7, seed=2)]
    from seedgrid.report import write

    out, _ = write(runs, tmp_path / "report", samples=20)
    text = (out / "report.md").read_text()
    lines, checked = text.splitlines(), 0
    cells = lambda line: len(re.split(r"(?<!\\)\|", line))  # noqa: E731 (unescaped bars)
    for i, line in enumerate(lines):
        if line.startswith("|---"):  # a table: every row as many cells as its header
            header, j = cells(lines[i - 1]), i + 1
            while j < len(lines) and lines[j].startswith("| "):
                assert cells(lines[j]) == header, lines[j]
                checked += "p\\|q (x)" in lines[j]
                j += 1
    assert checked
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and any("p%7Cq%20%28x%29/" in link for link in links)
    for link in links:
        assert (out / urllib.parse.unquote(link)).is_file(), link
