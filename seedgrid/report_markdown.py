"""report.md: the numbers of report.json as tables, sentences and figures, section by section."""

from __future__ import annotations

import urllib.parse

import numpy as np

from seedgrid import figures


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(_fmt(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(text) -> str:
    """Text safe in a table cell: a run named ``p|q`` is one cell, not two."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(report: dict, drawn: dict) -> str:
    """report.md from report.json's content and the drawn figures."""
    parts = ["# seedgrid report\n", f"Created {report['created']}. The same numbers are in "
             "`report.json`.\n"]
    for name, r in report["runs"].items():
        parts.append(_run_markdown(name, r, drawn.get(name, {})))
    if "across" in report:
        parts.append(_across_markdown(report["across"], drawn.get("across", {})))
    return "\n".join(parts)


def bui_figure(model: str) -> str:
    """Which of Bui et al.'s training-size figures a model's is: Fig. 2 for RoBERTa, Fig. 4 for
    Llama; another model's (a Dodge grid's BERT) is drawn apart, said to be neither."""
    family = {"roberta": "Fig. 2 (RoBERTa)", "llama": "Fig. 4 (Llama)"}
    found = next((f for name, f in family.items() if name in model.lower()), None)
    return (f"Bui et al.'s {found}: {model}" if found else
            f"{model} by training size (not a model of Bui et al.'s Figs. 2 and 4)")


def slug(text: str) -> str:
    """A file name's part from ``text`` (a model id: ``meta-llama/Llama-3.2-3B``)."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("._") or "model"


def _image(files: dict, key: str, caption: str) -> str:
    """A figure, its path percent-encoded (a run folder named with blanks, brackets or ``|``
    still links)."""
    if key not in files:
        return ""
    caption = caption.replace("[", "\\[").replace("]", "\\]")
    return f"![{caption}]({urllib.parse.quote(files[key])})\n\n*{caption}*\n"


def _run_markdown(name: str, r: dict, files: dict) -> str:
    return "\n".join([*_macro_section(name, r, files), *_micro_section(r, files),
                      *_early_stopping_section(r, files)])


def _macro_section(name: str, r: dict, files: dict) -> list[str]:
    """Dodge et al.: mean and variance, Tables 3-4, divergence, Table 1 and Figs. 1-3, 8."""
    m, macro = r["metric"], r["macro"]
    return [f"## {name}: {r['task']}, {r['model']}\n",
         f"{len(r['seeds_wi'])} WI × {len(r['seeds_do'])} DO seeds; config {r['config_hash']}; "
         f"{r['n_train']} training and {r['n_validation']} validation examples; metric {m} "
         f"(majority baseline {_fmt(r['majority_baseline'])}). Runs: "
         + ", ".join(f"{k} {v}" for k, v in r["status"].items()) + ".\n",
         "### How much is the seed? (Dodge et al. §3–4)\n",
         _table([m, "runs", "mean", "std", "variance (VAR)", "min", "max"],
                [[label, x["n"], x["mean"], x["std"], x["var"], x["min"], x["max"]]
                 for label, x in (("at the end", macro["end"]),
                                  ("best in training", macro["best"]),
                                  *((f"{k} at the end", v)
                                    for k, v in macro.get("by_metric", {}).items()
                                    if k != m))]),
         *(_coupled_note(r) if r.get("coupled") else _wi_do_tables(macro, r["metric"])),
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
         _image(files, "fig8_std", "Fig. 8: per-seed standard deviations")]


def _coupled_note(r: dict) -> list[str]:
    return [f"\nA coupled grid (Bui et al.): run k used seed k for everything, "
            f"{r['status']['done'] + r['status']['diverged']} runs. Weight initialisation and "
            "data order are not varied apart, so Tables 3-4 (the WI/DO split) do not apply.\n"]


def _wi_do_tables(macro: dict, metric: str) -> list[str]:
    """Dodge et al.'s Tables 3-4: the spread with one seed fixed, best vs worst seed."""
    return [
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
        conclusion(macro, metric),
    ]


def conclusion(macro: dict, metric: str) -> str:
    """Dodge et al.'s §4.1-4.2 read off this grid's numbers: what share of the variance of the
    final metric the WI seeds and the DO seeds explain, whether either dominates (twice the
    other's share), and whether the best and worst seed of each kind really differ."""
    shares = macro.get("variance_shares") or {}
    wi, do, rest = (float(shares.get(k) or np.nan) for k in ("wi", "do", "rest"))
    if not np.isfinite(wi) or not np.isfinite(do):
        return ("\nWhich seed matters more cannot be said from this grid (fewer than two seeds "
                "of a kind with all their runs, or no spread at all).\n")
    lead = "WI" if wi > do else "DO"
    verdict = (f"{lead} dominates: its share is more than twice the other's"
               if max(wi, do) > 2 * min(wi, do) else
               "neither dominates: they are comparable, as Dodge et al. found on all four of "
               "their tasks")
    differ = []
    for kind in ("seed_wi", "seed_do"):
        a, name = macro["anova"][kind], kind.removeprefix("seed_").upper()
        p = a.get("p")
        if p is not None and np.isfinite(p):
            differ.append(f"the best and worst {name} seeds ({a['best']}, {a['worst']}) "
                          + ("differ" if p < 0.05 else "do not differ significantly")
                          + f" in mean (ANOVA p = {p:.3g})")
    return (f"\n**What this grid says** (Dodge et al. §4.1-4.2): the WI seeds explain "
            f"{100 * wi:.0f}% of the variance of the final {metric} "
            f"across its {shares['runs']} runs, the DO seeds {100 * do:.0f}%, their interaction "
            f"(each run on its own) {100 * rest:.0f}%: {verdict}"
            + ("; " + "; ".join(differ) if differ else "") + ".\n")


def _micro_section(r: dict, files: dict) -> list[str]:
    """Bui et al.: CON, CCON, agreement, equal-accuracy pairs; training dynamics (Figs. 4-5, 9)."""
    return [*_agreement_lines(r, files),
            "\n### Training dynamics (Fig. 4, 5, 9)\n",
            _dynamics_line(r["dynamics"]),
            _image(files, "fig4_curves", "Fig. 4: training curves"),
            _image(files, "fig5_spearman", "Fig. 5: Spearman correlation between evaluations"),
            _image(files, "fig9_pearson", "Fig. 9: Pearson correlation between evaluations")]


def _agreement_lines(r: dict, files: dict) -> list[str]:
    head = "\n### Do runs agree on individual examples? (Bui et al.)\n"
    if r["micro"] is None:
        return [head, "CON, CCON and agreement: n/a. This is a regression task: each run outputs "
                "a real number per example, so there are no predicted labels to agree on.\n"]
    return [head,
            "CON: examples on which all runs predict the same label; CCON: examples all runs get "
            "right; agreement: mean over pairs of runs of the fraction of equal predictions. "
            "Each needs at least two runs; over fewer it is undefined (n/a).\n\n",
            _table(["over", "runs", "CON", "CCON", "agreement"],
                   [[label, x["runs"], x["con"], x["ccon"], x["agreement"]] for label, x in
                    [("whole grid", r["micro"]["grid"])]
                    + [(f"WI {x['seed_wi']}", x) for x in r["micro"]["per_wi"]]
                    + [(f"DO {x['seed_do']}", x) for x in r["micro"]["per_do"]]]),
            "\nRuns with equal accuracy that agree least (Bui Fig. 1):\n\n",
            _table(["run A (wi, do)", "run B (wi, do)", "accuracy", "agreement", "both correct"],
                   [[f"({p['seed_wi_a']}, {p['seed_do_a']})",
                     f"({p['seed_wi_b']}, {p['seed_do_b']})",
                     p["accuracy_a"], p["agreement"], p["both_correct"]]
                    for p in r["micro"]["equal_accuracy_pairs"]]),
            "\n", _image(files, "consistency", "Agreement between every two runs")]


def _early_stopping_section(r: dict, files: dict) -> list[str]:
    """Dodge §5: this run's own early stopping, and the simulation (Figs. 6, 7)."""
    s = ["\n### Start many, stop early, continue some (§5, Fig. 6, 7)\n"]
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
    return s


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
    def when(i: int) -> str:  # an imported grid may not know its epochs: its updates then
        epoch = d["epochs"][i]
        return f"epoch {epoch:.2f}" if epoch is not None else f"update {d['updates'][i]}"

    return (f"Spearman correlation (best so far, across runs) between the first evaluation "
            f"({when(0)}) and the end: {_fmt(_none(corr[0, -1]))}; halfway "
            f"({when(len(corr) // 2)}) and the end: "
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
        out += ["\nVAR, CON and CCON against training-set size (Bui Fig. 2). VAR is the variance "
                "over runs of the run's own metric (named), of accuracy and of F1 (macro-F1 "
                "beyond two labels; n/a for a regression task, as CON and CCON):\n\n",
                _table(["run task", "training examples", "runs", "metric", "VAR", "VAR accuracy",
                        "VAR F1", "CON", "CCON"],
                       [[b["task"], b["n_train"], b["runs"], b["metric"], b["var"],
                         b.get("var_accuracy"), b.get("var_f1"), b["con"], b["ccon"]]
                        for b in a["by_training_size"]]),
                "\n", *[_image(files, f"training_size_{slug(model)}",
                               f"{bui_figure(model)}: VAR, CON and CCON by training size, a "
                               "line per task")
                        for model in sorted({b["model"] for b in a["by_training_size"]})],
                "\nTheir correlation with log10(training size), per model family (Bui Figs. "
                "2 and 4; n/a with fewer than three runs of a family):\n\n",
                _table(["model", "with", "runs", "Pearson", "Spearman"],
                       [[c["model"], c["quantity"].upper(), c["cubes"], c["pearson"],
                         c["spearman"]] for c in a["training_size_correlation"]])]
    z = a["zeta"]
    if z["seeds"]:
        out += ["\nNormalised ζ (Bui Fig. 3): each seed's accuracy on a run's task, rescaled "
                "to 0 (the task's worst seed) .. 1 (its best); a coupled grid's seed k is its "
                "run k, a WI × DO grid's is the WI seed's mean over DO seeds.\n\n",
                _table(["run", *[str(s) for s in z["seeds"]]],
                       [[t, *v] for t, v in z["values"].items()]),
                "\n", _image(files, "bui_fig3", "Bui Fig. 3: normalised ζ, darker = better")]
        left = {t: seeds for t, seeds in z.get("left_out", {}).items() if seeds}
        if left:
            out.append("\nζ is over the seeds every run has; left out: " + "; ".join(
                f"{t}: seeds {', '.join(map(str, seeds))}" for t, seeds in left.items()) + ".\n")
    return "\n".join(out)
