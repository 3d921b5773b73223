"""``seedgrid report``: every analysis of the seed documents, as report.md and report.json.

For each run (a collected cube), :func:`analyse` gathers the numbers — macro (Dodge et al.
§3–4), the evaluation regimes and expected best of n (Table 1, Fig. 1), the micro view (Bui et
al.), training dynamics (Fig. 5, 9) and the early-stopping simulation (§5) — into one dict,
which is report.json's per-run entry as it is; :func:`write` adds the figures and report.md.
With several runs it also compares WI seeds across tasks (Dodge §4.3) and relates VAR, CON and
CCON to training-set size (Bui Fig. 2).

report.json's keys are documented in the README ("The report").
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from seedgrid import analysis, early_stopping, figures
from seedgrid.cube import open_cube
from seedgrid.errors import UsageError
from seedgrid.rundir import check_output
from seedgrid.store import STATUS, raise_if_disk_full

REPORT = "report"


def analyse(ds: xr.Dataset, samples: int = 5_000, seed: int = 0) -> dict:
    """All per-run numbers of the report for cube ``ds`` (JSON-ready, NaN as None)."""
    acc = ds.seedgrid
    metric = acc.metric()
    final, best = acc.final(), acc.final(best=True)
    diverged = acc.diverged()
    picks = acc.regimes()
    curves = acc.expected_max()
    micro = acc.consistency()
    spearman, pearson = acc.step_correlation(), acc.step_correlation(method="pearson")
    out = {
        "task": ds.attrs["task"], "metric": metric.name, "model": ds.attrs["model"],
        "config_hash": ds.attrs["config_hash"], "n_train": ds.attrs.get("n_train"),
        "n_validation": ds.sizes["example"], "majority_baseline": acc.majority_baseline(),
        "seeds_wi": ds["seed_wi"].values.tolist(), "seeds_do": ds["seed_do"].values.tolist(),
        "status": {s: int((ds.status == s).sum()) for s in STATUS},
        "macro": {
            "end": analysis.summary(final), "best": analysis.summary(best),
            "decoupled_std": {"end": analysis.decoupled_std(final),
                              "best": analysis.decoupled_std(best)},
            "anova": analysis.best_vs_worst_anova(final),
            "permutation": analysis.seed_permutation_test(final, seed=seed),
            "diverged": {"count": int(diverged.sum()), "runs": int(diverged.count()),
                         "rate": float(diverged.mean()),
                         "threshold": acc.majority_baseline()},
        },
        "regimes": {r: {"best_found": float(picks.sel(regime=r).max()),
                        "mean": float(picks.sel(regime=r).mean()),
                        "expected_max": curves["mean"].sel(regime=r).values.tolist(),
                        "expected_max_std": curves["std"].sel(regime=r).values.tolist(),
                        "expected_max_band": np.stack(
                            [curves["lower"].sel(regime=r), curves["upper"].sel(regime=r)],
                            axis=1).tolist()}
                    for r in analysis.REGIMES},
        "micro": {
            "grid": {"runs": int(micro["runs"]),
                     **{k: float(micro[k]) for k in ("con", "ccon", "agreement")}},
            "per_wi": _per_seed(acc.consistency(over="seed_do"), "seed_wi"),
            "per_do": _per_seed(acc.consistency(over="seed_wi"), "seed_do"),
            "equal_accuracy_pairs": acc.run_pairs(top=5).to_dict("records"),
        },
        "dynamics": {"epochs": ds.epoch.sel(step=spearman["step"]).values.tolist(),
                     "spearman": spearman.values.tolist(), "pearson": pearson.values.tolist()},
    }
    try:  # on whole runs only: an --early-stop run's stopped cells have no end
        table = early_stopping.simulate(metric.where(ds.status != "stopped"), samples=samples,
                                        seed=seed)
        out["early_stopping"] = {
            "samples": samples, "seed": seed, "n_evals": int((ds["step"] > 0).sum()),
            "best_per_budget": early_stopping.best_per_budget(table).to_dict("records")}
    except UsageError as e:
        out["early_stopping"] = {"skipped": str(e)}
    return json_ready(out)


def _per_seed(micro: xr.Dataset, kind: str) -> list[dict]:
    """One entry per seed of the grid (empty rows too): the runs it is over, and CON, CCON and
    agreement (None with fewer than 2 runs: undefined)."""
    return [{kind: int(s), "runs": int(micro["runs"].sel({kind: s})),
             **{k: float(micro[k].sel({kind: s})) for k in ("con", "ccon", "agreement")}}
            for s in micro[kind].values]


def json_ready(value):
    """JSON-ready: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def across(cubes: dict[str, xr.Dataset]) -> dict:
    """Cross-run numbers: WI seeds across tasks (Dodge §4.3), Bui Fig. 2 by training size."""
    shared = analysis.seeds_across_tasks({name: ds.seedgrid.final() for name, ds in
                                          cubes.items()})
    return json_ready({
        "seeds_across_tasks": {
            "seeds_wi": shared["seed_wi"].values.tolist(),
            "mean": {t: shared["mean"].sel(task=t).values.tolist() for t in cubes},
            "rank": {t: shared["rank"].sel(task=t).values.tolist() for t in cubes},
            "mean_rank": shared["mean_rank"].values.tolist(),
            "spearman": shared["correlation"].values.tolist()},
        "by_training_size": analysis.by_training_size(
            [ds for ds in cubes.values() if "n_train" in ds.attrs]).to_dict("records"),
    })


def write(run_dirs: list[str | Path], out: str | Path | None = None, figures_too: bool = True,
          samples: int = 5_000, seed: int = 0) -> Path:
    """Analyse every run and write ``out`` (default: ``report/`` in the first run's folder, or
    beside its cube file) with
    report.md, report.json and the figures. Returns the folder."""
    if samples < 1:
        raise UsageError(f"--samples {samples}: give at least 1 (the paper uses 50,000)")
    first = Path(run_dirs[0])
    out = Path(out) if out else (first.parent if first.is_file() else first) / REPORT
    check_output(out, "--out", folder=True)
    cubes = {}
    for run in run_dirs:
        name = _run_name(Path(run))
        if name in cubes:
            raise UsageError(f"two runs named {name!r}: give runs with different folder names")
        cubes[name] = open_cube(run).load()
    # everything is made in a temporary folder beside ``out`` and moved in at the end: a
    # report that fails half-way leaves the previous one (or nothing) in place
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            # degenerate grids (one seed, constant scores) give NaN statistics, reported as such
            warnings.simplefilter("ignore")
            results = {name: analyse(ds, samples, seed) for name, ds in cubes.items()}
            cross = across(cubes) if len(cubes) > 1 else None
            drawn = _figures(cubes, results, cross, tmp) if figures_too else {}
        report = {"seedgrid_report": 1,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec="seconds"),
                  "runs": {name: {"path": str(run), **results[name], **_phases(run)}
                           for name, run in zip(cubes, run_dirs)}}
        if cross:
            report["across"] = cross
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False))
        (tmp / "report.md").write_text(markdown(report, drawn))
        _move_into(tmp, out)
    except OSError as e:
        raise_if_disk_full(e, out / "report.json")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into(tmp: Path, out: Path) -> None:
    """Move the report's files from ``tmp`` into ``out``, each by an atomic rename; other files
    in ``out`` are left alone (``--out`` may be a folder the user keeps more in)."""
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(tmp.iterdir(), key=lambda p: p.name.startswith("report.")):  # md last
        target = out / item.name
        if item.is_dir() and target.is_dir():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
            os.replace(item, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(item, target)


def _phases(run) -> dict:
    """An --early-stop run's phases and time (seedgrid.policy), under "early_stop_run"."""
    from seedgrid import policy

    record = policy.read(Path(run)) if Path(run).is_dir() else None
    if record is None:
        return {}
    keep = ("started", "fraction", "continued", "source", "continued_cells", "missing")
    return {"early_stop_run": json_ready({**{k: record.get(k) for k in keep},
                                          **policy.accounting(Path(run))})}


def open_runs(paths: list) -> dict[str, xr.Dataset]:
    """Cubes by run name (loaded); named by their paths as given when two names clash."""
    names = [_run_name(Path(p)) for p in paths]
    if len(set(names)) < len(names):  # runs/a/run, runs/b/run
        names = [str(p) for p in paths]
    return {n: open_cube(p).load() for n, p in zip(names, paths)}


def _run_name(path: Path) -> str:
    """runs/rte → rte; runs/rte/cube.nc → rte; other.nc → other."""
    path = path.resolve()
    if path.is_file():
        return path.parent.name if path.name == "cube.nc" else path.stem
    return path.name


def _figures(cubes, results, cross, out: Path) -> dict[str, dict[str, str]]:
    """Draw every figure; returns run name → figure key → file name (relative to ``out``)."""
    drawn = {}
    for name, ds in cubes.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        acc, r = ds.seedgrid, results[name]
        final, metric = acc.final(), acc.best_so_far()
        during = metric["step"] > 0
        epoch = ds.epoch.sel(step=during)
        files = {
            "fig1_expected_max": figures.expected_max_curves(acc.expected_max(), final.name,
                                                             folder / "fig1_expected_max.png"),
            "fig2_grid": figures.grid_heatmap(final, folder / "fig2_grid.png"),
            "fig3_best_worst": figures.best_worst_density(final, r["macro"]["anova"],
                                                          folder / "fig3_best_worst.png"),
            "fig4_curves": figures.training_curves(acc.metric().sel(step=during), epoch,
                                                   folder / "fig4_curves.png"),
            "fig5_spearman": figures.correlation_heatmap(acc.step_correlation(), epoch,
                                                         folder / "fig5_spearman.png",
                                                         "Spearman, best so far"),
            "fig8_std": figures.std_distribution(final, folder / "fig8_std.png"),
            "fig9_pearson": figures.correlation_heatmap(acc.step_correlation(method="pearson"),
                                                        epoch, folder / "fig9_pearson.png",
                                                        "Pearson, best so far"),
        }
        predictions = acc.predictions().isel(step=-1)
        agreement = analysis.agreement_matrix(predictions)
        if agreement.sizes["run"]:
            accuracy = acc.correct().isel(step=-1).mean("example").sel(
                seed_wi=agreement["seed_wi"], seed_do=agreement["seed_do"])  # along run
            files["consistency"] = figures.agreement_heatmap(agreement, accuracy.values,
                                                             folder / "consistency.png")
        es = r["early_stopping"]
        if "best_per_budget" in es:
            best = pd.DataFrame(es["best_per_budget"]).astype(float)
            files["fig6_early_stopping"] = figures.early_stopping_choices(
                best, folder / "fig6_early_stopping.png")
            files["fig7_early_stopping_gain"] = figures.early_stopping_gain(
                best, folder / "fig7_early_stopping_gain.png")
        drawn[name] = {k: str(v.relative_to(out)) for k, v in files.items()}
    if cross and cross["by_training_size"]:
        path = figures.by_training_size(pd.DataFrame(cross["by_training_size"]),
                                        out / "bui_fig2_training_size.png")
        drawn["across"] = {"bui_fig2": path.name}
    return drawn


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(report: dict, drawn: dict) -> str:
    """report.md from report.json's content and the drawn figures."""
    parts = ["# seedgrid report\n", f"Created {report['created']}. The same numbers are in "
             "`report.json`.\n"]
    for name, r in report["runs"].items():
        parts.append(_run_markdown(name, r, drawn.get(name, {})))
    if "across" in report:
        parts.append(_across_markdown(report["across"], drawn.get("across", {})))
    return "\n".join(parts)


def _image(files: dict, key: str, caption: str) -> str:
    return f"![{caption}]({files[key]})\n\n*{caption}*\n" if key in files else ""


def _run_markdown(name: str, r: dict, files: dict) -> str:
    m, macro = r["metric"], r["macro"]
    s = [f"## {name}: {r['task']}, {r['model']}\n",
         f"{len(r['seeds_wi'])} WI × {len(r['seeds_do'])} DO seeds; config {r['config_hash']}; "
         f"{r['n_train']} training and {r['n_validation']} validation examples; metric {m} "
         f"(majority baseline {_fmt(r['majority_baseline'])}). Runs: "
         + ", ".join(f"{k} {v}" for k, v in r["status"].items()) + ".\n",
         "### How much is the seed? (Dodge et al. §3–4)\n",
         _table([m, "runs", "mean", "std", "variance (VAR)", "min", "max"],
                [[label, x["n"], x["mean"], x["std"], x["var"], x["min"], x["max"]]
                 for label, x in (("at the end", macro["end"]),
                                  ("best in training", macro["best"]))]),
         "\nTable 3 — standard deviation with one seed fixed, averaged over that seed:\n\n",
         _table(["", "WI fixed (spread over DO)", "DO fixed (spread over WI)", "total"],
                [[label, d["wi"], d["do"], d["total"]]
                 for label, d in (("at the end", macro["decoupled_std"]["end"]),
                                  ("best in training", macro["decoupled_std"]["best"]))]),
         "\nTable 4 — best vs worst seed (one-way ANOVA), ANOVA's assumptions (App. B: "
         "Levene's test of equal variances, Shapiro-Wilk on the residuals), and the "
         "permutation test on the range of seed means (10,000 shuffles), which assumes "
         "neither:\n\n",
         _table(["seed", "best", "worst", "ANOVA F", "ANOVA p", "Levene p", "Shapiro-Wilk p",
                 "range of means", "permutation p"],
                [[k.removeprefix("seed_").upper(), macro["anova"][k]["best"],
                  macro["anova"][k]["worst"], macro["anova"][k]["f"], macro["anova"][k]["p"],
                  macro["anova"][k]["levene_p"], macro["anova"][k]["shapiro_p"],
                  macro["permutation"][k]["range"], macro["permutation"][k]["p"]]
                 for k in ("seed_wi", "seed_do")]),
         *[f"\nANOVA's assumptions fail for {k.removeprefix('seed_').upper()} seeds (p < 0.05 "
           "in Levene's or the Shapiro-Wilk test): read the permutation test instead.\n"
           for k in ("seed_wi", "seed_do") if macro["anova"][k]["assumptions_met"] is False],
         f"\nDiverged (training blew up, or {m} at or below the majority baseline at the end): "
         f"{macro['diverged']['count']} of {macro['diverged']['runs']} runs "
         f"({_fmt(macro['diverged']['rate'], 3)})."
         + (f" {r['status']['diverged']} run(s) diverged in training (a NaN or exploding loss):"
            " they count in every statistic as failed classifiers, predicting the majority "
            "label after they diverged." if r["status"]["diverged"] else "") + "\n",
         "\n### Best found and expected best of n (Table 1, Fig. 1)\n",
         _regimes_table(r["regimes"]),
         "\n", _image(files, "fig1_expected_max", "Fig. 1: expected best of n runs ± 1 std"),
         _image(files, "fig2_grid", "Fig. 2: every run, seeds sorted by mean"),
         _image(files, "fig3_best_worst", "Fig. 3: best and worst WI (solid) and DO (dashed)"),
         _image(files, "fig8_std", "Fig. 8: per-seed standard deviations"),
         "\n### Do runs agree on individual examples? (Bui et al.)\n",
         "CON: examples on which all runs predict the same label; CCON: examples all runs get "
         "right; agreement: mean over pairs of runs of the fraction of equal predictions. Each "
         "needs at least two runs; over fewer it is undefined (n/a).\n\n",
         _table(["over", "runs", "CON", "CCON", "agreement"],
                [[label, x["runs"], x["con"], x["ccon"], x["agreement"]] for label, x in
                 [("whole grid", r["micro"]["grid"])]
                 + [(f"WI {x['seed_wi']}", x) for x in r["micro"]["per_wi"]]
                 + [(f"DO {x['seed_do']}", x) for x in r["micro"]["per_do"]]]),
         "\nRuns with equal accuracy that agree least (Bui Fig. 1):\n\n",
         _table(["run A (wi, do)", "run B (wi, do)", "accuracy", "agreement", "both correct"],
                [[f"({p['seed_wi_a']}, {p['seed_do_a']})", f"({p['seed_wi_b']}, {p['seed_do_b']})",
                  p["accuracy_a"], p["agreement"], p["both_correct"]]
                 for p in r["micro"]["equal_accuracy_pairs"]]),
         "\n", _image(files, "consistency", "Agreement between every two runs"),
         "\n### Training dynamics (Fig. 4, 5, 9)\n",
         _dynamics_line(r["dynamics"]),
         _image(files, "fig4_curves", "Fig. 4: training curves"),
         _image(files, "fig5_spearman", "Fig. 5: Spearman correlation between evaluations"),
         _image(files, "fig9_pearson", "Fig. 9: Pearson correlation between evaluations"),
         "\n### Start many, stop early, continue some (§5, Fig. 6, 7)\n"]
    if "early_stop_run" in r:
        p = r["early_stop_run"]
        s.append(f"This run stopped early ({p['source']}): started {p['started']}, stopped at "
                 f"{p['fraction']:g} of training, continued {len(p['continued_cells'] or [])}: "
                 f"{_fmt(p['cell_seconds'], 0)} cell-seconds against about "
                 f"{_fmt(p['all_full_estimate'], 0)} for training all fully; best found by a "
                 f"continued cell {_fmt(p['realised_best'])}"
                 + (f" (the simulation expected {_fmt(p['predicted'])})" if p["predicted"]
                    else "") + ".\n")
    es = r["early_stopping"]
    if "skipped" in es:
        s.append(f"Skipped: {es['skipped']}\n")
    else:
        s.append(f"{es['samples']} simulated experiments per configuration (seed {es['seed']}); "
                 f"budgets in full runs of {es['n_evals']} evaluations.\n\n")
        s.append(_table(["budget", "no stopping", "best", "started", "stopped after",
                         "continued", "relative error reduction"],
                        [[b["budget"], b["baseline"], b["expected"], b["started"],
                          f"{b['evaluations']} evals", b["continued"],
                          b["relative_error_reduction"]] for b in es["best_per_budget"]]))
        s.append("\n" + _image(files, "fig6_early_stopping", "Fig. 6: best configuration per "
                               "budget"))
        s.append(_image(files, "fig7_early_stopping_gain", "Fig. 7: gain over no stopping"))
    return "\n".join(s)


def _regimes_table(regimes: dict) -> str:
    n = min(len(v["expected_max"]) for v in regimes.values())
    shown = sorted({min(5, n), n} - {0})  # expected best of 5 runs and of all
    return _table(["evaluating at", "best found", "mean run",
                   *[f"expected best of {k}" for k in shown]],
                  [[figures.REGIME_LABELS[k], v["best_found"], v["mean"],
                    *[v["expected_max"][i - 1] for i in shown]] for k, v in regimes.items()])


def _dynamics_line(d: dict) -> str:
    corr = np.array(d["spearman"], dtype=float)
    if corr.size < 4:
        return "Fewer than two evaluations during training: no correlation between them.\n\n"
    return (f"Spearman correlation (best so far, across runs) between the first evaluation "
            f"(epoch {d['epochs'][0]:.2f}) and the end: {_fmt(_none(corr[0, -1]))}; halfway "
            f"(epoch {d['epochs'][len(corr) // 2]:.2f}) and the end: "
            f"{_fmt(_none(corr[len(corr) // 2, -1]))}.\n\n")


def _none(x: float):
    return None if not np.isfinite(x) else float(x)


def _across_markdown(a: dict, files: dict) -> str:
    s = a["seeds_across_tasks"]
    tasks = list(s["rank"])
    rows = [[wi, *[s["rank"][t][i] for t in tasks], s["mean_rank"][i]]
            for i, wi in enumerate(s["seeds_wi"])]
    rows.sort(key=lambda row: row[-1])
    out = ["## Across runs\n", "WI seeds across tasks (Dodge §4.3): rank of each shared WI "
           "seed (1 = best mean over its DO seeds) per run.\n\n",
           _table(["seed_wi", *tasks, "mean rank"], rows)]
    if a["by_training_size"]:
        out += ["\nVAR, CON and CCON against training-set size (Bui Fig. 2):\n\n",
                _table(["run task", "training examples", "runs", "VAR", "CON", "CCON"],
                       [[b["task"], b["n_train"], b["runs"], b["var"], b["con"], b["ccon"]]
                        for b in a["by_training_size"]]),
                "\n", _image(files, "bui_fig2", "Bui Fig. 2: VAR, CON, CCON by training size")]
    return "\n".join(out)
