"""``seedgrid report``: every analysis of the seed documents, as report.md and report.json.

For each run (a collected cube), :func:`analyse` gathers the numbers — macro (Dodge et al.
§3–4), the evaluation regimes and expected best of n (Table 1, Fig. 1), the micro view (Bui et
al.), training dynamics (Fig. 5, 9) and the early-stopping simulation (§5) — into one dict,
which is report.json's per-run entry as it is; :func:`write` adds the figures and report.md.
With several runs it also compares WI seeds across tasks (Dodge §4.3) and relates VAR, CON and
CCON to training-set size (Bui Fig. 2).

report.json's keys are documented in docs/report.md.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from seedgrid import analysis, early_stopping, figures, metrics
from seedgrid.cube import open_cube
from seedgrid.report_markdown import bui_figure, markdown, slug
from seedgrid.errors import UsageError
from seedgrid.progress import Ticker
from seedgrid.rundir import REPORT, check_output
from seedgrid.files import json_ready, publish, raise_if_disk_full, temporary_folder
from seedgrid.store import STATUS
from seedgrid.tasks import f1_metric


def reported_metrics(ds: xr.Dataset) -> tuple[str, ...]:
    """Bui et al.'s two macro metrics of a cube: accuracy and F1 (macro-F1 beyond two labels,
    and for COPA's two alternatives: :func:`seedgrid.tasks.f1_metric`); Pearson and Spearman
    for a regression task. The first is the one ζ (Fig. 3) ranks on. MultiRC adds its
    question-level exact match (SuperGLUE's F1a/EM)."""
    if ds.seedgrid.regression:
        return ("pearson", "spearman")
    pair = ("accuracy", f1_metric(ds.attrs["task"], ds.sizes["class"]))
    return pair + (("em",) if metrics.questions(ds["example"].values) is not None else ())


def _micro(acc, coupled: bool) -> dict:
    """Bui et al.'s micro view (None for a regression task: no predicted labels to agree on)."""
    micro = acc.consistency()
    return {
        "grid": {"runs": int(micro["runs"]),
                 **{k: float(micro[k]) for k in ("con", "ccon", "agreement")}},
        "per_wi": [] if coupled else _per_seed(acc.consistency(over="seed_do"), "seed_wi"),
        "per_do": [] if coupled else _per_seed(acc.consistency(over="seed_wi"), "seed_do"),
        "equal_accuracy_pairs": acc.run_pairs(top=5).to_dict("records"),
    }


def analyse(ds: xr.Dataset, samples: int = 5_000, seed: int = 0) -> dict:
    """All per-run numbers of the report for cube ``ds`` (JSON-ready, NaN as None): its
    predictions, metric and best so far computed once, for every analysis."""
    with ds.seedgrid.frozen():
        return _analyse(ds, samples, seed)


def _analyse(ds: xr.Dataset, samples: int, seed: int) -> dict:
    acc = ds.seedgrid
    metric = acc.metric()
    final, best = acc.final(), acc.final(best=True)
    diverged = acc.diverged()
    picks = acc.regimes()
    curves = acc.expected_max()
    spearman, pearson = acc.step_correlation(), acc.step_correlation(method="pearson")
    coupled = bool(ds.attrs.get("coupled", 0))  # run k = seed k for everything: no WI/DO split
    out = {
        "task": ds.attrs["task"], "metric": metric.name, "model": ds.attrs["model"],
        "config_hash": ds.attrs["config_hash"], "n_train": ds.attrs.get("n_train"),
        "n_validation": ds.sizes["example"], "majority_baseline": acc.majority_baseline(),
        "seeds_wi": ds["seed_wi"].values.tolist(), "seeds_do": ds["seed_do"].values.tolist(),
        "coupled": coupled,
        "status": {s: int((ds.status == s).sum()) for s in STATUS},
        "macro": {
            "end": analysis.summary(final), "best": analysis.summary(best),
            # Bui et al.: accuracy and F1 (macro-F1 beyond two labels), mean and VAR at the end;
            # a regression task: Pearson and Spearman
            "by_metric": {m: analysis.summary(acc.final(m)) for m in reported_metrics(ds)},
            "decoupled_std": None if coupled else {
                "end": acc.decoupled_std().to_dict(),
                "best": acc.decoupled_std(best=True).to_dict()},
            "variance_shares": None if coupled else analysis.variance_shares(acc.final()),
            "anova": None if coupled else _plain(acc.anova()),
            "permutation": None if coupled else _plain(acc.permutation_test(seed=seed)),
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
        "micro": None if acc.regression else _micro(acc, coupled),
        "dynamics": {"epochs": ds.epoch.sel(step=spearman["step"]).values.tolist(),
                     "updates": [int(u) for u in spearman["step"].values],
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


def across(cubes: dict[str, xr.Dataset]) -> dict:
    """Cross-run numbers: WI seeds across tasks (Dodge §4.3), Bui Figs. 2/4 by training size
    (with the coefficients, per model family) and Fig. 3 (normalised ζ of each seed on each
    task, on accuracy; on Pearson for a regression task)."""
    shared = analysis.seeds_across_tasks({name: ds.seedgrid.final() for name, ds in
                                          cubes.items()})
    sizes = analysis.by_training_size([ds for ds in cubes.values() if "n_train" in ds.attrs])
    zeta = analysis.zeta({n: ds.seedgrid.final(reported_metrics(ds)[0])
                          for n, ds in cubes.items()},
                         {n: bool(ds.attrs.get("coupled", 0)) for n, ds in cubes.items()})
    used = shared["task"].values.tolist()  # (a run without any score is left out)
    return json_ready({
        "seeds_across_tasks": {
            "seeds_wi": shared["seed_wi"].values.tolist(), "runs": used,
            "mean": {t: shared["mean"].sel(task=t).values.tolist() for t in used},
            "rank": {t: shared["rank"].sel(task=t).values.tolist() for t in used},
            "mean_rank": shared["mean_rank"].values.tolist(),
            "spearman": shared["correlation"].values.tolist()},
        "by_training_size": sizes.to_dict("records"),
        "training_size_correlation": analysis.training_size_correlation(sizes).to_dict(
            "records"),
        "zeta": {"seeds": zeta["seed"].values.tolist(),
                 "values": {t: zeta.sel(task=t).values.tolist() for t in cubes},
                 # (ζ is over the seeds every run has: the others, by run, said)
                 "left_out": {t: sorted(set(_seeds(ds)) - set(zeta["seed"].values.tolist()))
                              for t, ds in cubes.items()}},
    })


def write(run_dirs: list[str | Path], out: str | Path | None = None, figures_too: bool = True,
          samples: int = 5_000, seed: int = 0, chunks: str | None = None) -> tuple[Path, dict]:
    """Analyse every run and write ``out`` (default: ``report/`` in the first run's folder, or
    beside its cube file) with report.md, report.json and the figures. Returns the folder and
    the report (report.json's content). Each cube is loaded into memory, or with ``chunks``
    (``"rows"``) opened as dask arrays: a cube larger than memory, read three times."""
    if samples < 1:
        raise UsageError(f"--samples {samples}: give at least 1 (the paper uses 50,000)")
    first = Path(run_dirs[0])
    default = out is None
    out = Path(out) if out else (first.parent if first.is_file() else first) / REPORT
    check_output(out, "--out", folder=True)
    if default and out.is_symlink():
        raise UsageError(f"{str(out)!r} is a symbolic link, not the report folder seedgrid "
                         "makes: remove it, or give --out")
    out = out.resolve() if out.is_symlink() else out  # --out LINK: the folder it names
    cubes = {}
    for run in run_dirs:
        name = _run_name(Path(run))
        if name in cubes:
            raise UsageError(f"two runs named {name!r}: give runs with different folder names")
        cubes[name] = open_cube(run, chunks) if chunks else open_cube(run).load()
    # everything is made in a temporary folder beside ``out`` and moved in at the end: a
    # report that fails half-way leaves the previous one (or nothing) in place
    tmp = temporary_folder(out)  # (a killed report's are removed)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as frozen:
            for ds in cubes.values():  # one pass over each cube's logits for the whole report
                frozen.enter_context(ds.seedgrid.frozen())
            # degenerate grids (one seed, constant scores) give NaN statistics, reported as such
            warnings.simplefilter("ignore")
            ticker, results = Ticker("report: runs analysed", len(cubes), every_s=10), {}
            for k, (name, ds) in enumerate(cubes.items()):
                ticker.tick(k, f"(next: {name})")
                results[name] = analyse(ds, samples, seed)
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
        publish(tmp, out, MANIFEST, ours_by_name=default)
    except OSError as e:
        raise_if_disk_full(e, out / "report.json")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, report


def summary(report: dict) -> str:
    """The lines ``report`` prints for each run: the macro and micro picture, the best found and
    expected, and early stopping at a budget of 5 runs."""
    lines = []
    f = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    for name, r in report["runs"].items():
        end, micro = r["macro"]["end"], (r["micro"] or {}).get("grid")
        d = (r["macro"]["decoupled_std"] or {}).get("end")
        lines.append(f"{name}: {r['metric']} at the end {f(end['mean'])} ± {f(end['std'])} "
                     f"(std, ddof 0) over {end['n']} runs (min {f(end['min'])}, max "
                     f"{f(end['max'])}); " + (f"std with WI fixed {f(d['wi'])}, with DO fixed "
                                              f"{f(d['do'])}" if d else
                                              "coupled runs (seed k for everything)"))
        lines.append(f"  all runs agree on {f(micro['con'])} of the examples (CON), all correct "
                     f"on {f(micro['ccon'])} (CCON); two runs agree on "
                     f"{f(micro['agreement'])} on average" if micro else
                     "  CON, CCON: n/a (a regression task: real outputs, no labels to agree on)")
        every = r["regimes"]["every"]
        lines.append(f"  best found {f(every['best_found'])}; expected best of "
                     f"{len(every['expected_max'])} runs "
                     f"{f((every['expected_max'] or [None])[-1])}")
        es = r["early_stopping"]
        if es.get("best_per_budget"):
            b = es["best_per_budget"][min(len(es["best_per_budget"]), 5) - 1]
            lines.append(f"  early stopping at a budget of {b['budget']} runs: start "
                         f"{b['started']}, stop {b['stopped']} after {b['evaluations']} of "
                         f"{es['n_evals']} evaluations -> {f(b['expected'])} vs "
                         f"{f(b['baseline'])} without stopping")
    return "\n".join(lines)


#: the report folder's record of the files seedgrid wrote in it, with their contents' digests
#: (the only files it replaces or removes there; :func:`seedgrid.files.publish`)
MANIFEST = ".seedgrid-report.json"


def _phases(run) -> dict:
    """An --early-stop run's phases and time (seedgrid.grid.early_stop), under "early_stop_run"."""
    from seedgrid.grid import early_stop

    record = early_stop.read(Path(run)) if Path(run).is_dir() else None
    if record is None:
        return {}
    keep = ("started", "fraction", "continued", "source", "continued_cells", "missing")
    return {"early_stop_run": json_ready({**{k: record.get(k) for k in keep},
                                          **early_stop.accounting(Path(run))})}


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


def _seeds(ds: xr.Dataset) -> list[int]:
    """A cube's seeds as ζ counts them: a coupled grid's runs k, a WI × DO grid's WI seeds."""
    wi = ds["seed_wi"].values.tolist()
    return [k for k in wi if k in ds["seed_do"].values] if ds.attrs.get("coupled") else wi


def _plain(table: pd.DataFrame) -> dict:
    """A table of the accessor as report.json holds it: column -> row -> value, NaN as None."""
    return {col: {row: None if isinstance(v, float) and np.isnan(v) else v
                  for row, v in values.items()} for col, values in table.to_dict().items()}


def _figures(cubes, results, cross, out: Path) -> dict[str, dict[str, str]]:
    """Draw every figure; returns run name → figure key → file name (relative to ``out``)."""
    drawn = {}
    for name, ds in cubes.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        acc, r = ds.seedgrid, results[name]
        final, metric = acc.final(), acc.best_so_far()
        epoch = ds.epoch.sel(step=metric["step"] > 0)
        draw = {
            "fig1_expected_max": lambda p: figures.expected_max_curves(acc.expected_max(),
                                                                       final.name, p),
            "fig2_grid": lambda p: figures.grid_heatmap(final, p),
            "fig3_best_worst": lambda p: figures.best_worst_density(final, r["macro"]["anova"],
                                                                    p),
            "fig4_curves": lambda p: figures.training_curves(acc.metric(), ds.epoch, p),
            "fig5_spearman": lambda p: figures.correlation_heatmap(
                acc.step_correlation(), epoch, p, "Spearman, best so far"),
            "fig8_std": lambda p: figures.std_distribution(final, p),
            "fig9_pearson": lambda p: figures.correlation_heatmap(
                acc.step_correlation(method="pearson"), epoch, p, "Pearson, best so far"),
        }
        if r["coupled"]:  # (no WI / DO split: no best and worst seeds, no spread within)
            del draw["fig3_best_worst"], draw["fig8_std"]
        agreement = None if acc.regression else \
            analysis.agreement_matrix(acc.predictions(step=-1))
        if agreement is not None and agreement.sizes["run"]:
            accuracy = acc.correct(step=-1).mean("example").sel(
                seed_wi=agreement["seed_wi"], seed_do=agreement["seed_do"])  # along run
            draw["consistency"] = lambda p: figures.agreement_heatmap(agreement,
                                                                      accuracy.values, p)
        es = r["early_stopping"]
        if "best_per_budget" in es:
            best = pd.DataFrame(es["best_per_budget"]).astype(float)
            draw["fig6_early_stopping"] = lambda p: figures.early_stopping_choices(best, p)
            draw["fig7_early_stopping_gain"] = lambda p: figures.early_stopping_gain(best, p)
        for key, make in draw.items():
            make(folder / f"{key}.png")
        drawn[name] = {key: f"{name}/{key}.png" for key in draw}
    if cross and cross["by_training_size"]:
        table = pd.DataFrame(cross["by_training_size"])
        for model, rows in table.groupby("model", sort=True):  # a figure per model (family)
            key = f"training_size_{slug(model)}"
            figures.by_training_size(rows, out / f"bui_{key}.png", bui_figure(model))
            drawn.setdefault("across", {})[key] = f"bui_{key}.png"
    if cross and cross["zeta"]["seeds"]:
        z = cross["zeta"]
        figures.zeta_heatmap(pd.DataFrame(z["values"], index=z["seeds"]).T.astype(float),
                             out / "bui_fig3_zeta.png")
        drawn.setdefault("across", {})["bui_fig3"] = "bui_fig3_zeta.png"
    return drawn
