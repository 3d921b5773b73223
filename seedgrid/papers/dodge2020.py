"""Dodge et al. 2020's tables from seed-grid cubes, in the paper's layout (one column per task).

    python -m seedgrid.papers.dodge2020 runs/dodge2020-mrpc runs/dodge2020-rte ... [--samples N]

Table 1 (best found, three evaluation regimes), Fig. 1's expected best of n, Table 3 (std with
one seed fixed), Table 4 (ANOVA best vs worst seed, and the permutation test), §4.3 (WI seeds
across tasks) and Fig. 7 (early stopping's relative error reduction per budget). Every number
comes from seedgrid.analysis / seedgrid.early_stopping; `seedgrid report` draws the figures.
"""

from __future__ import annotations

import argparse
import warnings

from seedgrid import analysis, early_stopping
from seedgrid.report import open_runs
from seedgrid.errors import UsageError


def row(name: str, values: list, fmt: str = "{:.4f}") -> str:
    cells = ["n/a" if v is None or v != v else fmt.format(v) for v in values]
    return f"{name:28s}" + "".join(f"{c:>12s}" for c in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders or cube files, one per task")
    parser.add_argument("--samples", type=int, default=50_000,
                        help="early-stopping experiments per configuration (paper: 50,000)")
    args = parser.parse_args()
    cubes = open_runs(args.runs)
    warnings.simplefilter("ignore")  # degenerate grids give NaN, printed as n/a
    header = row("", [], "") + "".join(f"{n[:12]:>12s}" for n in cubes)
    tasks = [ds.attrs["task"] for ds in cubes.values()]
    print(row("task", [], "") + "".join(f"{t:>12s}" for t in tasks))
    print(row("metric", [], "") + "".join(f"{ds.attrs['metric']:>12s}" for ds in cubes.values()))

    print("\nTable 1. Best found over the grid, by how often the validation set is evaluated")
    print(header)
    picks = {n: ds.seedgrid.regimes() for n, ds in cubes.items()}
    for regime, label in (("every", "every evaluation"), ("epoch_ends", "end of each epoch"),
                          ("end", "end of training")):
        print(row(label, [float(p.sel(regime=regime).max()) for p in picks.values()]))

    print("\nFig. 1. Expected best of n runs (evaluating at every evaluation)")
    print(header)
    curves = {n: ds.seedgrid.expected_max().sel(regime="every") for n, ds in cubes.items()}
    most = max(c.sizes["n"] for c in curves.values())
    for k in sorted({k for k in (1, 2, 5, 10, 25, 50, 100, most) if k <= most}):
        print(row(f"n = {k}", [float(c["mean"].sel(n=k)) if k <= c.sizes["n"] else None
                               for c in curves.values()]))

    print("\nTable 3. Expected std of the final metric with one seed fixed")
    print(header)
    spread = {n: ds.seedgrid.decoupled_std() for n, ds in cubes.items()}
    for key, label in (("wi", "WI (aggregated over WI)"), ("do", "DO (aggregated over DO)"),
                       ("total", "Total")):
        print(row(label, [s[key] for s in spread.values()]))

    print("\nTable 4. p-values: best vs worst seed (ANOVA) and its assumptions (equal variances,"
          " normal residuals: p < 0.05 means the assumption fails); range of seed means "
          "(permutation, assumption-free)")
    print(header)
    anova = {n: ds.seedgrid.anova() for n, ds in cubes.items()}
    perm = {n: ds.seedgrid.permutation_test() for n, ds in cubes.items()}
    for kind in ("seed_wi", "seed_do"):
        short = kind.removeprefix("seed_").upper()
        print(row(f"{short} (ANOVA)", [a[kind]["p"] for a in anova.values()], "{:.1e}"))
        print(row(f"{short} (Levene, App. B)", [a[kind]["levene_p"] for a in anova.values()],
                  "{:.1e}"))
        print(row(f"{short} (Shapiro-Wilk)", [a[kind]["shapiro_p"] for a in anova.values()],
                  "{:.1e}"))
        print(row(f"{short} (permutation)", [p[kind]["p"] for p in perm.values()], "{:.1e}"))

    if len(cubes) > 1:
        print("\n§4.3. WI seeds across tasks: rank within each task (1 = best), best 5 by mean rank")
        shared = analysis.seeds_across_tasks({n: ds.seedgrid.final() for n, ds in cubes.items()})
        order = shared["mean_rank"].sortby(shared["mean_rank"])["seed_wi"].values[:5]
        print(header + f"{'mean rank':>12s}")
        for wi in order:
            ranks = shared["rank"].sel(seed_wi=wi).values.tolist()
            print(row(f"WI seed {wi}", ranks + [float(shared["mean_rank"].sel(seed_wi=wi))],
                      "{:.1f}"))

    print(f"\nFig. 7. Relative error reduction of the best early-stopping configuration "
          f"({args.samples} experiments each)")
    print(header)
    best = {}
    for n, ds in cubes.items():
        try:
            table = early_stopping.simulate(ds.seedgrid.metric(), samples=args.samples)
            best[n] = early_stopping.best_per_budget(table).set_index("budget")
        except UsageError as e:
            print(f"  {n}: {e}")
    for budget in (1, 2, 3, 5, 10, 20, 30):
        print(row(f"budget {budget}", [
            float(best[n].relative_error_reduction.get(budget, float("nan")))
            if n in best else None for n in cubes]))


if __name__ == "__main__":
    main()
