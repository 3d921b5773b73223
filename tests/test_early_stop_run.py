"""Start many, stop early, continue some (--early-stop): the plan, and the real thing on the dev
SLURM with the tiny model — phase one stops T cells at F, a decider job continues the best P,
each continued cell equals its uninterrupted twin bitwise, a cancelled task blocks nothing."""

import json
import subprocess

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from seedgrid import data, early_stopping
from seedgrid.grid import early_stop as early_stop_run
from seedgrid.cli import main
from seedgrid.cube import collect, open_cube
from seedgrid.rundir import checkpoint_path, shard_path
from seedgrid.store import read_shard

from conftest import REPO, run_cli, wait_until
from test_cube import _run

DEV = str(REPO / "slurm/dev.toml")


@pytest.mark.parametrize("spec, words", [
    ("started=8,fraction=1.2,continue=3", "fraction=1.2"),
    ("started=8,fraction=0,continue=3", "fraction=0"),
    ("started=3,fraction=0.3,continue=5", "continue=5 is more than started=3"),
    ("budget=0.5", "budget 0.5"),
    ("started=99,fraction=0.3,continue=3", "more than the 8 cells"),
    ("eight", "write started=T"),
])
def test_bad_plans_one_line_exit_2_nothing_written(tmp_path, tiny_toml, capsys, spec, words):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 4})
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--config", str(config), "--out", str(tmp_path / "run"),
              "--early-stop", spec])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_stop_update_and_the_rule_of_thumb():
    eval_at = np.array([0, 3, 5, 8, 10])
    assert data.stop_update(eval_at, 0.3) == 3
    assert data.stop_update(eval_at, 0.5) == 5
    assert data.stop_update(eval_at, 0.01) == 3  # at least one evaluation during training
    # Dodge §5 / Fig. 6 (MRPC, 30 evaluations): budget 20 -> start 41, continue 11, stop at 30%
    plan = early_stop_run.plan_from_budget(20, n_evals=30)
    assert (plan.started, plan.continued, plan.fraction) == (41, 11, 0.3)
    assert early_stop_run.plan_from_budget(1) == early_stop_run.Plan(
        1, 0.3, 1, "rule of thumb: the budget stops nothing")


@pytest.mark.parametrize("n_evals", [10, 30])
def test_the_rule_of_thumb_follows_the_papers_words_at_every_budget(n_evals):
    """Dodge §5: "the number of trials to train fully should be around x/2", "stopping least
    promising trials after 20–30% of training", "the number of trials started should be
    significantly higher" — within the budget, at every budget 2..100 (and a fractional one)."""
    for budget in [*range(2, 101), 7.5]:
        plan = early_stop_run.plan_from_budget(budget, n_evals=n_evals)
        before = round(plan.fraction * n_evals)  # evaluations before the stop
        stopped = plan.started - plan.continued
        spent = plan.continued + stopped * before / n_evals
        assert abs(plan.continued - budget / 2) <= 1, (budget, plan)  # around x/2
        assert 0.2 <= plan.fraction <= 0.3 + 1e-9, (budget, plan)  # after 20-30%
        assert stopped >= 1 and plan.started >= 2 * plan.continued - 1, (budget, plan)
        assert spent <= budget + 1e-9, (budget, plan)  # never over the budget
        # and no plan of those words spends more of it (a plain loop over all of them)
        best = max(c + s * e / n_evals
                   for c in range(1, int(budget) + 1) if abs(c - budget / 2) <= 1
                   for e in range(1, n_evals) if 0.2 <= e / n_evals <= 0.3 + 1e-9
                   for s in [int((budget - c) * n_evals // e + 1e-9)]
                   if s >= 1 and c + s * e / n_evals <= budget + 1e-9)
        assert spent == pytest.approx(best), (budget, plan)


def test_a_plan_from_an_earlier_cube_is_the_simulations_best(tmp_path):
    run, _ = _run(tmp_path, [(wi, do) for wi in (1, 2, 3) for do in (1, 2, 3)])
    collect(run)
    plan = early_stop_run.plan_from_budget(2, cube=str(run))
    table = early_stopping.simulate(open_cube(run).seedgrid.metric(), budgets=[2], samples=5000)
    best = early_stopping.best_per_budget(table).iloc[0]
    if 0 < best.stopped < best.started:
        assert (plan.started, plan.continued, plan.fraction) == \
            (best.started, best.continued, best.fraction)
    else:  # stopping does not pay here: train `budget` runs fully
        assert plan.started == plan.continued == best.started
    assert "simulation on" in plan.source


def _stop_score(shard, stop):
    """Best accuracy over the evaluations during training up to the stop, by scikit-learn."""
    steps = shard.step.values
    logits = shard.logits.values[0, 0]  # (example, step, class)
    return max(accuracy_score(shard.label.values, logits[:, s].argmax(-1))
               for s in range(len(steps)) if 0 < steps[s] <= stop)


def test_early_stop_on_slurm_continues_the_best_bitwise(slurm, tmp_path, tiny_toml):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 4})
    twins = run_cli("submit", "--config", str(config), "--cluster", DEV, "--out",
                    str(tmp_path / "full"), "--wait")
    assert twins.returncode == 0, twins.stdout + twins.stderr
    run = tmp_path / "es"
    result = run_cli("submit", "--config", str(config), "--cluster", DEV, "--out", str(run),
                     "--early-stop", "started=8,fraction=0.3,continue=3", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done 3  diverged 0  stopped 5" in result.stdout
    record = json.loads((run / "early_stop.json").read_text())
    cells = [tuple(c) for c in record["phase_one"]]
    shards = {c: read_shard(shard_path(run, *c)).load() for c in cells}
    stop = data.stop_update(shards[cells[0]].step.values, 0.3)
    scores = {c: _stop_score(s, stop) for c, s in shards.items()}
    expected = sorted(cells, key=lambda c: (-scores[c], cells.index(c)))[:3]
    assert [tuple(c) for c in record["continued_cells"]] == expected
    for c, shard in shards.items():
        twin = read_shard(shard_path(tmp_path / "full", *c)).load()
        before = shard.step.values <= stop
        if c in expected:  # continued: the same cell as one never stopped
            assert shard.status.item() == "done"
            np.testing.assert_array_equal(shard.logits.values, twin.logits.values)
            np.testing.assert_array_equal(shard.train_loss.values, twin.train_loss.values)
            assert not checkpoint_path(run, *c).exists()
        else:  # stopped: the twin's curve up to the stop, nothing after; checkpoint kept
            assert shard.status.item() == "stopped"
            np.testing.assert_array_equal(shard.logits.values[..., before, :],
                                          twin.logits.values[..., before, :])
            assert np.isnan(shard.logits.values[..., ~before, :]).all()
            assert checkpoint_path(run, *c).exists()
    spent = sum(float(s.wall_time_s.item()) for s in shards.values())
    accounting = early_stop_run.accounting(run)
    assert accounting["cell_seconds"] == pytest.approx(spent)
    full = np.mean([float(shards[c].wall_time_s.item()) for c in expected])
    assert accounting["all_full_estimate"] == pytest.approx(8 * full)
    status = run_cli("status", str(run)).stdout
    assert f"{spent:.0f} cell-seconds spent" in status
    from test_readme import assert_shapes, example

    assert_shapes(example("  early stop (given)"), status)  # docs/early-stopping.md shows it
    collect(run)
    assert int((open_cube(run).status == "stopped").sum()) == 5


def test_a_cancelled_phase_one_task_does_not_block_phase_two(slurm, tmp_path, tiny_toml):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 2})
    run = tmp_path / "es"
    result = run_cli("submit", "--config", str(config), "--cluster", DEV, "--out", str(run),
                     "--parallel", "1", "--early-stop", "started=4,fraction=0.3,continue=2")
    assert result.returncode == 0, result.stdout + result.stderr
    array = json.loads((run / "jobs.json").read_text())["submissions"][0]["arrays"][0]
    subprocess.run(["scancel", array["task_ids"][3]], check=True)  # still pending (%1)
    def decided():
        record = json.loads((run / "early_stop.json").read_text())
        return record if record.get("phase_two_jobs") or (
            record["continued_cells"] is not None and "nothing left" in _log(run)) else None

    record = wait_until(decided, "the decider to decide on phase one")
    assert record["continued_cells"] is not None, _log(run)
    assert record["missing"] == [[2, 2]] and record["decided_on"] == 3
    assert "3 of 4 phase-one cells (1 without a shard: (2,2))" in _log(run)
    assert len(record["continued_cells"]) == 2


def _log(run):
    path = run / "logs" / "continue.log"
    return path.read_text() if path.exists() else ""


def test_early_stop_on_the_local_executor_then_the_report(tmp_path, tiny_toml):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 2})
    run = tmp_path / "es"
    result = run_cli("submit", "--config", str(config), "--cluster", "local", "--parallel", "2",
                     "--out", str(run), "--early-stop", "started=4,fraction=0.3,continue=1",
                     "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done 1  diverged 0  stopped 3" in result.stdout
    assert "decided on 4 of 4 phase-one cells; continuing 1" in result.stdout
    again = run_cli("continue", str(run))  # the decision stands; nothing is trained twice
    assert "nothing left to continue" in again.stdout
    collect(run)
    main(["report", str(run), "--no-figures", "--samples", "200"])
    r = json.loads((run / "report" / "report.json").read_text())["runs"]["es"]
    phases = r["early_stop_run"]
    assert phases["started"] == 4 and len(phases["continued_cells"]) == 1
    spent = sum(float(read_shard(p).wall_time_s.item()) for p in (run / "shards").glob("*.nc"))
    assert phases["cell_seconds"] == pytest.approx(spent)
    (wi, do), = phases["continued_cells"]
    continued = read_shard(shard_path(run, wi, do)).load()
    assert phases["realised_best"] == pytest.approx(_stop_score(continued, np.inf))
    assert "This run stopped early" in (run / "report" / "report.md").read_text()


def test_budget_flags_pick_the_plan_and_refuse_a_cube_of_another_task(tmp_path, tiny_toml,
                                                                      capsys):
    config = tiny_toml(grid={"n_wi": 2, "n_do": 4})
    run, _ = _run(tmp_path / "earlier", [(wi, do) for wi in (1, 2) for do in (1, 2)])
    collect(run)
    cube = open_cube(run).load()
    cube.attrs["task"] = "sst2"
    cube.to_netcdf(tmp_path / "sst2.nc")
    for args, words in ((["--budget", "0.5"], "budget 0.5"),
                        (["--budget", "2", "--from-cube", str(tmp_path / "sst2.nc")],
                         "is of task 'sst2', not 'mr'"),
                        (["--from-cube", str(run)], "--from-cube goes with --budget"),
                        (["--budget", "2", "--early-stop", "budget=2"], "not both")):
        with pytest.raises(SystemExit) as exit_:
            main(["submit", "--config", str(config), "--out", str(tmp_path / "new"), *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and words in err, err
        assert not (tmp_path / "new").exists()
    assert early_stop_run.parse_plan("budget=5", "mr") == early_stop_run.plan_from_budget(5)


def test_the_docs_rule_of_thumb_table_is_what_the_rule_gives():
    import re

    from conftest import REPO

    text = (REPO / "docs/early-stopping.md").read_text()
    rows = {m[0]: m[1].split(" | ") for m in re.findall(
        r"^\| (budget B \(full runs\)|started|continued|stopped at \(fraction of training\)|"
        r"runs' worth spent) \| (.*) \|$", text, re.MULTILINE)}
    assert len(rows) == 5
    for i, budget in enumerate(int(b) for b in rows["budget B (full runs)"]):
        plan = early_stop_run.plan_from_budget(budget, n_evals=30)
        spent = plan.continued + (plan.started - plan.continued) * plan.fraction
        assert [int(rows["started"][i]), int(rows["continued"][i]),
                float(rows["stopped at (fraction of training)"][i]),
                float(rows["runs' worth spent"][i])] == [
            plan.started, plan.continued, plan.fraction, round(spent, 1)], budget
