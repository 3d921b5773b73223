"""Bui et al. 2025's micro view from seed-grid cubes: VAR, CON and CCON by training-set size.

    python -m seedgrid.papers.bui2025 runs/small runs/medium runs/large ...

Prints, per cube (sorted by training-set size, as Bui's Fig. 2): the variance of the metric over
runs (VAR), consistency CON (examples on which every run predicts the same label), CCON
(examples every run gets right), the mean pairwise agreement, and CON within a WI row and within
a DO column (averaged over the rows / columns with at least two runs: over fewer, CON is
undefined); the correlation of VAR, CON and CCON with log10(training size) per model family
(Figs. 2 and 4, e.g. RoBERTa-large and Llama-3.2-3B cubes given together); accuracy and F1
(macro-F1 beyond two labels) per cube; normalised ζ of each seed on each cube (Fig. 3); then,
per cube, the pair of runs with equal accuracy that agrees least (Fig. 1). Definitions:
seedgrid.analysis (consistency, training_size_correlation, zeta).
"""

from __future__ import annotations

import argparse
import warnings

from seedgrid import analysis
from seedgrid.report import open_runs, reported_metrics
from seedgrid.store import SEEDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders or cube files")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="accuracy difference that still counts as equal (Fig. 1)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # one run: no pairs, printed as nan
    cubes = open_runs(args.runs)
    table = analysis.by_training_size(list(cubes.values()))
    table.insert(0, "run", [n for n, _ in sorted(cubes.items(),
                                                 key=lambda kv: int(kv[1].attrs["n_train"]))])
    table["agreement"] = [_micro(cubes[n], SEEDS, "agreement") for n in table.run]
    table["con_within_wi"] = [_micro(cubes[n], "seed_do", "con") for n in table.run]
    table["con_within_do"] = [_micro(cubes[n], "seed_wi", "con") for n in table.run]
    print("Fig. 2. Variance and consistency against training-set size (last evaluation)")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print("\nFigs. 2 and 4. Correlation with log10(training size), per model family")
    print(analysis.training_size_correlation(table).to_string(
        index=False, float_format=lambda x: f"{x:.4f}"))
    print("\nMacro: accuracy and F1 (regression: Pearson and Spearman) at the last evaluation "
          "(mean, VAR over runs)")
    for name, ds in cubes.items():
        parts = [f"{m} {s['mean']:.4f} (VAR {s['var']:.6f})" for m, s in
                 ((m, analysis.summary(ds.seedgrid.final(m))) for m in reported_metrics(ds))]
        print(f"  {name}: " + ", ".join(parts) + f" over {int(ds.seedgrid.final().count())} runs")
    zeta = analysis.zeta({n: ds.seedgrid.final(reported_metrics(ds)[0])
                          for n, ds in cubes.items()},
                         {n: bool(ds.attrs.get("coupled", 0)) for n, ds in cubes.items()})
    print("\nFig. 3. Normalised zeta (0 = the task's worst seed, 1 = its best), run x seed")
    print(zeta.to_pandas().to_string(float_format=lambda x: f"{x:.2f}"))
    print("\nFig. 1. Equal accuracy, different predictions: the least agreeing pair per run")
    for name, ds in cubes.items():
        if ds.seedgrid.regression:
            print(f"  {name}: n/a (a regression task: no predicted labels to agree on)")
            continue
        pairs = ds.seedgrid.run_pairs(tolerance=args.tolerance, top=1)
        if pairs.empty:
            print(f"  {name}: no two runs with accuracies within {args.tolerance}")
            continue
        p = pairs.iloc[0]
        print(f"  {name}: runs (wi {p.seed_wi_a:.0f}, do {p.seed_do_a:.0f}) and (wi {p.seed_wi_b:.0f}, do "
              f"{p.seed_do_b:.0f}), accuracy {p.accuracy_a:.4f} and {p.accuracy_b:.4f}: they agree "
              f"on {p.agreement:.4f} of the examples, both right on {p.both_correct:.4f}")


def _micro(ds, over, name: str) -> float:
    """A micro number (mean over rows or columns where ``over`` is one kind of seed); NaN for a
    regression task, where it is undefined."""
    if ds.seedgrid.regression:
        return float("nan")
    return float(ds.seedgrid.consistency(over=over)[name].mean())


if __name__ == "__main__":
    main()
