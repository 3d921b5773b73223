"""compare and regress: the tutorial's numbers through scipy, power by simulation, the
multibootstrap against a loop, ASO against deepsig, planted differences on real cubes."""

import json

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import f1_score

from seedgrid import compare as cmp
from seedgrid.cli import main
from seedgrid.cube import collect
from seedgrid.rundir import write_config
from seedgrid.rundir import shard_path
from seedgrid.store import cell_dataset, write_atomic

from conftest import tiny_config

LABELS = np.arange(200) % 2


def _cube(path, correct_rate, n=4, task="mr", seed=0, examples=200, better=0, n_wi=None):
    """A collected n x n cube whose runs are right on each example with ``correct_rate`` (plus a
    per-run wobble); ``better`` extra examples made right in every run (a planted gain)."""
    n_wi = n_wi or n
    cfg = tiny_config(grid={"n_wi": n_wi, "n_do": n})
    write_config(path, cfg)
    rng = np.random.default_rng(seed)
    labels = LABELS[:examples]
    for wi in range(1, n_wi + 1):
        for do in range(1, n + 1):
            cell_rng = np.random.default_rng([seed, wi, do])
            right = cell_rng.random(examples) < correct_rate + rng.normal(0, 0.02)
            right[:better] = True
            pred = np.where(right, labels, 1 - labels)
            logits = np.zeros((2, examples, 2))
            logits[:, np.arange(examples), pred] = 1.0
            ds = cell_dataset(seed_wi=wi, seed_do=do, logits=logits, labels=labels,
                              example_ids=np.arange(examples), steps=np.array([0, 10]),
                              epochs=np.array([0.0, 1.0]), train_loss=np.ones(10),
                              status="done", wall_time_s=1.0,
                              attrs={"task": task, "metric": "accuracy", "model": "tiny",
                                     "majority_baseline": 0.5, "config_hash": cfg.hash,
                                     "config": cfg.to_toml(), "n_train": 40})
            write_atomic(ds, shard_path(path, wi, do))
    collect(path)
    return path


def test_the_tutorials_question_through_scipy_and_by_hand():
    old, new = np.array([0.856, 0.851, 0.859]), np.array([0.867, 0.862, 0.865])
    got = cmp.scores_test(old, new, paired=True)
    ref = scipy.stats.ttest_rel(new, old)
    assert got["t"] == pytest.approx(ref.statistic) and got["p"] == pytest.approx(ref.pvalue)
    assert got["rank_p"] == pytest.approx(scipy.stats.wilcoxon(new - old).pvalue)
    d = new - old
    assert got["difference"] == pytest.approx(d.mean())
    assert got["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    sd_a, sd_b = old.std(ddof=1), new.std(ddof=1)  # the tutorial's Cohen's d
    assert got["d_av"] == pytest.approx((new.mean() - old.mean()) / np.sqrt((sd_a**2 + sd_b**2) / 2))
    half = scipy.stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert got["ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    unpaired = cmp.scores_test(old, new, paired=False)
    ref = scipy.stats.ttest_ind(new, old, equal_var=False)
    assert unpaired["p"] == pytest.approx(ref.pvalue) and unpaired["d_z"] is None
    assert unpaired["rank_p"] == pytest.approx(scipy.stats.mannwhitneyu(new, old).pvalue)


@pytest.mark.parametrize("paired, effect", [(True, 0.8), (False, 0.9)])
def test_seeds_for_power_reach_80_percent_by_simulation(paired, effect):
    n = cmp._seeds_for_power(effect, 0.05, 0.8, paired)
    rng = np.random.default_rng(0)

    def rejection(n):
        if paired:
            t = scipy.stats.ttest_1samp(rng.normal(effect, 1, (40_000, n)), 0, axis=1)
        else:
            t = scipy.stats.ttest_ind(rng.normal(effect, 1, (40_000, n)),
                                      rng.normal(0, 1, (40_000, n)), axis=1)
        return np.mean(t.pvalue < 0.05)

    assert rejection(n) >= 0.8 - 0.01 and rejection(n - 1) < 0.8 + 0.01
    assert cmp._seeds_for_power(0.0, 0.05, 0.8, paired) is None


def test_no_difference_is_significant_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.02, (1000, 5))  # paired: a seed moves both sides
    a = 0.8 + seed_effect + rng.normal(0, 0.01, (1000, 5))
    b = 0.8 + seed_effect + rng.normal(0, 0.01, (1000, 5))
    rate = np.mean([cmp.scores_test(x, y, paired=True)["p"] < 0.05 for x, y in zip(a, b)])
    assert 0.03 <= rate <= 0.07  # 0.05 ± 3 binomial standard errors


@pytest.mark.parametrize("paired", [True, False])
def test_multibootstrap_against_a_loop_over_the_same_draws(paired):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 25)
    pred_a = np.where(rng.random((4, 25)) < 0.7, labels, 1 - labels)
    pred_b = np.where(rng.random((4 if paired else 3, 25)) < 0.8, labels, 1 - labels)
    draws = (rng.multinomial(25, np.full(25, 1 / 25), 50).astype(float),
             rng.multinomial(4, np.full(4, 1 / 4), 50).astype(float))
    draws += (draws[1] if paired else rng.multinomial(3, np.full(3, 1 / 3), 50).astype(float),)
    got = cmp.bootstrap(pred_a, pred_b, labels, "f1", paired, draws=draws)
    diffs = []
    for w_ex, w_a, w_b in zip(*draws):
        idx = np.repeat(np.arange(25), w_ex.astype(int))  # the drawn examples, with repeats

        def side(pred, w_runs):
            runs = np.repeat(np.arange(len(pred)), w_runs.astype(int))
            return np.mean([f1_score(labels[idx], pred[r, idx], zero_division=0) for r in runs])
        diffs.append(side(pred_b, w_b) - side(pred_a, w_a))
    assert got["ci"] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])))
    diffs = np.array(diffs)
    # never 0: (1 + draws on the far side) / (1 + draws), doubled for two sides
    on_side = min(sum(d <= 0 for d in diffs), sum(d >= 0 for d in diffs))
    assert got["p"] == pytest.approx(min(1, 2 * (1 + on_side) / (1 + len(diffs))))
    observed = np.mean([f1_score(labels, p) for p in pred_b]) - \
        np.mean([f1_score(labels, p) for p in pred_a])
    assert got["difference"] == pytest.approx(observed)


@pytest.mark.parametrize("shift", [0.0, 1.5])
def test_aso_against_deepsig(shift):
    deepsig = pytest.importorskip("deepsig")
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 30), rng.normal(shift, 1, 25)
    ours = cmp.aso(a, b, n_boot=1000, seed=0)
    theirs = deepsig.aso(b, a, num_bootstrap_iterations=1000, seed=1, show_progress=False)
    assert ours == pytest.approx(theirs, abs=0.05)  # both bootstrap their sigma


def test_compare_detects_a_planted_gain_paired_and_reports_the_churn(tmp_path, capsys):
    a = _cube(tmp_path / "a", 0.7, seed=0)
    b = _cube(tmp_path / "b", 0.7, seed=0, better=30)  # same seeds: 30 examples fixed
    out = tmp_path / "cmp.json"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b), "--json", str(out)])
    assert exit_.value.code == 1
    r = json.loads(out.read_text())
    assert r["pairing"] == "paired" and r["paired_cells"] == 16 and r["significant"]
    assert r["difference"] > 0 and r["bootstrap"]["ci"][0] > 0 and r["aso_epsilon_min"] < 0.5
    import seedgrid
    pa = seedgrid.open_cube(a).seedgrid.predictions().isel(step=-1).values.reshape(16, -1)
    pb = seedgrid.open_cube(b).seedgrid.predictions().isel(step=-1).values.reshape(16, -1)
    assert r["churn"]["same_seeds"] == pytest.approx(np.mean(pa != pb))
    between = np.mean([np.mean(x != y) for x in pa for y in pb])
    within = np.mean([np.mean(pa[i] != pa[j]) for i in range(16) for j in range(16) if i != j])
    assert r["churn"]["between"] == pytest.approx(between)
    assert r["churn"]["within_a"] == pytest.approx(within)
    assert "paired over 16 shared cells" in capsys.readouterr().out


def test_compare_without_a_difference_exits_0_and_unpaired_grids_say_so(tmp_path, capsys):
    a = _cube(tmp_path / "a", 0.7, seed=0)
    b = _cube(tmp_path / "b", 0.7, seed=5)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b)])
    assert exit_.value.code == 0
    assert "not significant" in capsys.readouterr().out
    c = _cube(tmp_path / "c", 0.7, n=3, seed=7)
    r = cmp.compare(a, c)
    assert r["pairing"] == "paired"  # 3 x 3 of the 4 x 4 seeds are shared
    from seedgrid.cube import open_cube
    ds = open_cube(c).load()
    ds = ds.assign_coords(seed_wi=ds.seed_wi + 100)  # no shared seeds
    ds.to_netcdf(tmp_path / "other.nc")
    assert cmp.compare(a, tmp_path / "other.nc")["pairing"] == "unpaired"


def test_compare_bad_input_one_line_exit_2(tmp_path, capsys):
    a = _cube(tmp_path / "a", 0.7)
    other_task = _cube(tmp_path / "t", 0.7, task="sst2")
    fewer = _cube(tmp_path / "e", 0.7, examples=100)
    one = _cube(tmp_path / "one", 0.7, n=1)
    for args, words in (([str(a), str(other_task)], "different tasks"),
                        ([str(a), str(fewer)], "different validation examples"),
                        ([str(a), str(a), "--metric", "bleu"], "unknown metric 'bleu'"),
                        ([str(a), str(one)], "run(s) on one side"),
                        ([str(a), str(a), "--alpha", "5"], "--alpha 5"),
                        ([str(a), str(a), "--step", "last"], "--step 'last'")):
        with pytest.raises(SystemExit) as exit_:
            main(["compare", *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_regress_fails_on_a_planted_regression_and_keeps_a_history(tmp_path, capsys):
    base = _cube(tmp_path / "base", 0.75, seed=0, better=20)
    same = _cube(tmp_path / "same", 0.75, seed=0, better=20)
    worse = _cube(tmp_path / "worse", 0.75, seed=0)  # 20 examples fewer right
    history = tmp_path / "gate" / "history.jsonl"
    for candidate, code in ((same, 0), (worse, 1)):
        with pytest.raises(SystemExit) as exit_:
            main(["regress", "--baseline", str(base), "--candidate", str(candidate),
                  "--history", str(history)])
        assert exit_.value.code == code
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["regression"] for r in rows] == [False, True]
    assert rows[1]["worse"] and rows[1]["difference"] < -0.005
    report = (tmp_path / "gate" / "history.md").read_text()
    assert "REGRESSION" in report and "pass" in report
    # a drop inside the tolerance passes
    with pytest.raises(SystemExit) as exit_:
        main(["regress", "--baseline", str(base), "--candidate", str(worse), "--max-drop",
              "0.5", "--max-con-drop", "1", "--history", str(history)])
    assert exit_.value.code == 0
    assert "Trend over the last 3 nights" in (tmp_path / "gate" / "history.md").read_text()


def test_a_verdict_from_three_seeds_names_its_test_and_says_the_tests_disagree(tmp_path, capsys):
    a = _cube(tmp_path / "a", 0.7, n=3, n_wi=1, seed=0)
    b = _cube(tmp_path / "b", 0.7, n=3, n_wi=1, seed=0, better=60)  # 3 paired seeds
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b), "--json", str(tmp_path / "t.json")])
    out, err = capsys.readouterr()
    r = json.loads((tmp_path / "t.json").read_text())
    assert r["paired_cells"] == 3 and r["p"] < 0.05 and exit_.value.code == 1
    assert r["rank_p"] >= 0.25 and r["rank_p_floor"] == 0.25  # 2 / 2**3: it cannot go lower
    assert r["verdict"] == {"significant": True, "test": "t", "tests_agree": False,
                            "p": {"t": r["p"], "wilcoxon": r["rank_p"],
                                  "bootstrap": r["bootstrap"]["p"]}}
    assert "SIGNIFICANT at alpha = 0.05 by paired t-test" in out and "they disagree" in out
    assert "cannot reach p < 0.05 (its smallest possible p is 0.25)" in err  # a warning
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b), "--test", "wilcoxon"])
    assert exit_.value.code == 0  # the verdict, and the exit status, follow the named test
    assert "not significant at alpha = 0.05 by Wilcoxon signed-rank" in capsys.readouterr().out


def test_the_bootstrap_p_is_never_zero():
    labels = LABELS[:50]
    pred_a = np.tile(1 - labels, (4, 1))  # A all wrong, B all right: every draw says B > A
    pred_b = np.tile(labels, (4, 1))
    got = cmp.bootstrap(pred_a, pred_b, labels, "accuracy", True, n_boot=200)
    assert got["p"] == pytest.approx(2 / 201)  # (1 + 0) / (1 + draws), two-sided


def test_the_tutorials_worked_example_runs_as_its_page_shows():
    """docs/significance.md: the tutorial's numbers, by the page's own code, and each checked
    against a computation of its own (the t statistic by hand, the exact signed-rank p, power
    by the noncentral t in a plain loop)."""
    import contextlib
    import io

    from conftest import REPO
    from test_readme import example

    page = (REPO / "docs/significance.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    assert printed.getvalue().strip() == example("t = 5.60, p = 0.0304")[0]
    old, new = np.array([0.856, 0.851, 0.859]), np.array([0.867, 0.862, 0.865])
    d = new - old
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    assert f"{t:.2f}" == "5.60" and f"{2 * scipy.stats.t.sf(t, 2):.4f}" == "0.0304"
    assert 2 / 2**3 == 0.25  # three positive differences: the signed-rank test's smallest p
    d_z = d.mean() / d.std(ddof=1)

    def power(n):  # two-sided paired t-test at alpha 0.05, effect d_z, n pairs
        crit = scipy.stats.t.ppf(0.975, n - 1)
        nc = d_z * np.sqrt(n)
        return scipy.stats.nct.sf(crit, n - 1, nc) + scipy.stats.nct.cdf(-crit, n - 1, nc)

    assert next(n for n in range(2, 50) if power(n) >= 0.8) == 4
