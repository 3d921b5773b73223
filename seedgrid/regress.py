"""The nightly regression gate: is tonight's grid significantly worse than the baseline's?

``regress`` pairs the runs as :func:`seedgrid.compare.compare` does, and keeps a JSON-lines
history with its markdown report (the last nights and the trend of the candidate's mean).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.stats

from seedgrid.compare import MIN_SEEDS, check_options, sides, check_comparable, load
from seedgrid.errors import UsageError
from seedgrid.log import logger
from seedgrid.files import json_ready, read_regular, write_text_atomic
from seedgrid.folders import keep_aside


def regress(baseline, candidate, max_drop: float = 0.005, alpha: float = 0.05,
            max_con_drop: float = 0.02, metric: str | None = None,
            allow_incomplete: bool = False) -> dict:
    """The nightly gate: is the candidate significantly worse than the baseline?

    ``worse``: a one-sided test that the candidate's mean metric is below the baseline's by
    more than ``max_drop`` (paired t-test on B − A + max_drop when the grids share cells,
    Welch's otherwise). ``less_consistent``: a one-sided paired t-test over examples that the
    candidate's CON (all runs agree on the example) is below the baseline's by more than
    ``max_con_drop``. ``regression`` if either is significant at ``alpha``, or (unless
    ``allow_incomplete``) if a cell of the candidate's grid failed or is missing: a night whose
    grid did not finish is not a pass.
    """
    check_options(alpha=alpha, max_drop=max_drop, max_con_drop=max_con_drop)
    ds_a, score_a, pred_a = load(baseline, metric, "end")
    ds_b, score_b, pred_b = load(candidate, metric, "end")
    check_comparable(ds_a, ds_b, metric)
    cells, a, b, runs_a, runs_b = sides(score_a, score_b, pred_a, pred_b)
    paired = bool(cells)
    if min(len(a), len(b)) < 2:
        raise UsageError(f"{min(len(a), len(b))} run(s) on one side: the gate needs at least 2 "
                         f"per side ({MIN_SEEDS}+ advised); give grids with more seeds")
    gap = b - a + max_drop  # paired only
    if paired and np.ptp(gap) == 0:  # every run moved alike: no spread, the sign decides
        p_worse = 0.0 if gap[0] < 0 else 1.0
    elif paired:
        p_worse = scipy.stats.ttest_1samp(gap, 0, alternative="less").pvalue
    else:
        p_worse = scipy.stats.ttest_ind(b + max_drop, a, equal_var=False,
                                        alternative="less").pvalue
    con_a, con_b, less = _consistency_test(runs_a, runs_b, max_con_drop,
                                           ds_a.seedgrid.regression)
    result = {
        "seedgrid_regress": 1,
        "baseline": str(baseline), "candidate": str(candidate), "task": ds_a.attrs["task"],
        "metric": score_a.name, "pairing": "paired" if paired else "unpaired",
        "runs": [len(a), len(b)], "mean_baseline": float(np.mean(a)),
        "mean_candidate": float(np.mean(b)), "difference": float(np.mean(b) - np.mean(a)),
        "max_drop": max_drop, "p_worse": float(p_worse), "con_baseline": con_a,
        "con_candidate": con_b, "max_con_drop": max_con_drop, "p_less_consistent": less,
        "alpha": alpha,
    }
    result["worse"] = result["p_worse"] < alpha
    result["less_consistent"] = less is not None and less < alpha
    result["incomplete"] = int(ds_b.status.isin(["failed", "missing"]).sum())
    result["regression"] = result["worse"] or result["less_consistent"] or \
        (result["incomplete"] > 0 and not allow_incomplete)
    return result


def _consistency_test(runs_a: np.ndarray, runs_b: np.ndarray, max_con_drop: float,
                      regression: bool) -> tuple:
    """(CON of A, CON of B, p that B is less consistent by more than ``max_con_drop``): a
    one-sided paired t-test over examples of "every run agrees". (None, None, None) for a
    regression task: its outputs are real numbers, CON is undefined."""
    if regression:
        return None, None, None
    con_a, con_b = ((r == r[0]).all(axis=0).astype(np.float64) for r in (runs_a, runs_b))
    con_gap = con_b - con_a + max_con_drop
    less = scipy.stats.ttest_1samp(con_gap, 0, alternative="less").pvalue \
        if np.ptp(con_gap) > 0 else (0.0 if con_gap[0] < 0 else 1.0)
    return float(con_a.mean()), float(con_b.mean()), float(less)


#: what each night's row must hold as numbers for the report and its trend; and what it holds
#: as a number or null (CON: null for a regression task)
_NUMBERS = ("mean_candidate", "difference", "p_worse")
_NUMBERS_OR_NULL = ("con_candidate", "p_less_consistent")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def append_history(path, result: dict, when: str) -> list[dict]:
    """Add one row (one night) to the JSON-lines history at ``path``, atomically; all rows.

    A line that is not a night of this gate (cut short, edited by hand) never stops the gate:
    the file as it was is kept as ``<name>.damaged`` and the line left out, with a warning."""
    path = Path(path)
    rows, bad = [], 0
    try:  # (a FIFO or device in its place was refused before the gate ran)
        raw = read_regular(path)
    except FileNotFoundError:
        raw = b""
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            if not (all(_number(row.get(k)) for k in _NUMBERS) and all(
                    k in row and (row[k] is None or _number(row[k])) for k in _NUMBERS_OR_NULL)):
                raise ValueError("a number is missing or not finite")
            rows.append(row)
        except (ValueError, AttributeError):
            bad += line.strip() != ""
    if bad:
        aside = keep_aside(path, raw)
        logger.warning(f"{bad} line(s) of {path} are not nights of this gate: left out (the "
                       f"file as it was: {aside.name})")
    rows.append(json_ready({"date": when, **result}))
    write_text_atomic(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows),
                      through_link=True)  # a shared history linked here keeps growing
    return rows


def history_markdown(rows: list[dict], last: int = 30) -> str:
    """The gate's report: the last nights, and the trend of the candidate's mean."""
    shown = rows[-last:]
    lines = ["# seedgrid regression gate\n",
             "| date | candidate | mean | vs baseline | p (worse) | CON | p (less consistent) "
             "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in shown:
        lines.append(f"| {r['date']} | {r['candidate']} | {r['mean_candidate']:.4f} | "
                     f"{r['difference']:+.4f} | {r['p_worse']:.3g} | "
                     f"{_or_na(r['con_candidate'], '.3f')} | "
                     f"{_or_na(r['p_less_consistent'], '.3g')} | "
                     f"{'REGRESSION' if r['regression'] else 'pass'} |")
    means = np.array([r["mean_candidate"] for r in shown])
    if len(means) >= 3 and np.ptp(means) > 0:
        fit = scipy.stats.linregress(np.arange(len(means)), means)
        lines.append(f"\nTrend over the last {len(means)} nights: {fit.slope:+.5f} "
                     f"{shown[-1]['metric']} per night (p = {fit.pvalue:.3g}).")
    else:
        lines.append("\nTrend: needs at least 3 nights with different means.")
    return "\n".join(lines) + "\n"


def _or_na(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def gate(baseline, candidate, history: Path, quiet: bool = False, **options) -> dict:
    """``regress`` as the command runs it: judge, print the verdict (unless ``quiet``), append
    the night to ``history`` and rewrite its report (the .md beside it). Returns the night's
    result (``regression``: True on a regression)."""
    import datetime

    from seedgrid.rundir import check_output

    check_output(history, "--history")
    check_output(history.with_suffix(".md"), "--history (its .md report)")
    r = regress(baseline, candidate, **options)
    say = (lambda *_: None) if quiet else print
    say(f"{r['metric']}: candidate {r['mean_candidate']:.4f} vs baseline "
          f"{r['mean_baseline']:.4f} ({r['difference']:+.4f}; {r['pairing']}, runs "
          f"{r['runs'][1]} vs {r['runs'][0]}): p(worse by more than {r['max_drop']}) = "
          f"{r['p_worse']:.4g}")
    if r["con_candidate"] is None:
        say("CON: n/a (a regression task: outputs are real numbers, no labels to agree on)")
    else:
        say(f"CON: candidate {r['con_candidate']:.4f} vs baseline {r['con_baseline']:.4f}: "
              f"p(less consistent by more than {r['max_con_drop']}) = "
              f"{r['p_less_consistent']:.4g}")
    if r["incomplete"]:
        say(f"{r['incomplete']} cell(s) of the candidate failed or are missing"
              + ("" if options.get("allow_incomplete") else ": the gate fails "
                 "(--allow-incomplete to judge the cells that finished)"))
    history.parent.mkdir(parents=True, exist_ok=True)  # checked above: it can be made
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = append_history(history, r, when)
    report = write_text_atomic(history.with_suffix(".md"), history_markdown(rows),
                               through_link=True)
    verdict = "REGRESSION" if r["regression"] else "pass"
    say(f"{verdict} at alpha = {r['alpha']}; history {history} ({len(rows)} nights), "
        f"report {report}")
    return {**r, "regression": bool(r["regression"]), "history": str(history)}
